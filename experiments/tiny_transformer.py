"""The calibrated estimator beyond MNIST chains: a 2-layer character transformer on
tinyshakespeare, 7 prunable Linear weights (a measurement behind docs/results.md, *A tiny
transformer*; the model and the corpus reader live here, not in the library).

One training run (600 Adam steps, batches of 32 sequences of 32 characters) with the
default search; then, at 50% and 70% sparsity, one-shot pruning by magnitude,
mag+movement and calibrated, the last with layer budgets balanced by single-layer probes
(the default beyond 4 targets) and by every pair of layers. Prints the held-out loss
(1,024 sequences from the corpus's last tenth), scoring seconds and masked forwards.

    python experiments/tiny_transformer.py --data-dir ../shared/data [--calibration 256]
"""
from __future__ import annotations

import argparse
import copy
import time

import torch
import torch.nn.functional as F
from torch import nn

import bingo
from bingo.evidence import calibrated
from bingo.harness.data import load_text

CONTEXT = 32


class TinyLM(nn.Module):
    """Embedding + learned positions, a causal 2-layer encoder (d 64, 4 heads), a head."""

    def __init__(self, vocab: int, d: int = 64):
        super().__init__()
        self.emb, self.pos = nn.Embedding(vocab, d), nn.Parameter(torch.zeros(CONTEXT, d))
        layer = nn.TransformerEncoderLayer(d, 4, 2 * d, dropout=0.0, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(d, vocab)
        self.register_buffer("causal", nn.Transformer.generate_square_subsequent_mask(CONTEXT))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.enc(self.emb(x) + self.pos, mask=self.causal, is_causal=True))


def sequence_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out.flatten(0, 1), y.flatten())


def corpus(data_dir):
    """tinyshakespeare's character ids (the first 90% for training, the last 10% held
    out) and the vocabulary's size, by ``bingo.harness.data.load_text``."""
    text = load_text(data_dir)
    return text.train, text.val, text.vocab_size


def windows(ids: torch.Tensor, n: int, gen: torch.Generator):
    start = torch.randint(0, len(ids) - CONTEXT - 1, (n,), generator=gen)
    return (torch.stack([ids[i:i + CONTEXT] for i in start]),
            torch.stack([ids[i + 1:i + CONTEXT + 1] for i in start]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--calibration", type=int, default=256, help="kept sequences")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    train_ids, held_ids, vocab = corpus(args.data_dir)
    torch.manual_seed(args.seed)
    model = TinyLM(vocab)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    search = bingo.TicketSearch(model, loss_fn=sequence_loss, calibration=args.calibration,
                                seed=args.seed)
    gen, start = torch.Generator().manual_seed(args.seed), time.perf_counter()
    for _ in range(args.steps):
        x, y = windows(train_ids, 32, gen)
        opt.zero_grad()
        sequence_loss(model(x), y).backward()
        opt.step()
        search.step(x, y)
    xh, yh = windows(held_ids, 1024, torch.Generator().manual_seed(args.seed + 1))

    def held_out(m: nn.Module) -> float:
        m.eval()
        with torch.no_grad():
            return float(sequence_loss(m(xh), yh))
    print(f"trained in {time.perf_counter() - start:.1f} s; {len(search.targets)} targets; "
          f"dense held-out loss {held_out(model):.4f}")
    print("| sparsity | estimator | budgets | held-out loss | seconds | masked forwards |")
    print("|---:|---|---|---:|---:|---:|")
    rows = [("magnitude", None), ("mag+movement", None), ("calibrated", "probes"),
            ("calibrated", "every pair")]
    default_limit = calibrated.PAIR_LAYERS
    for sparsity in (0.5, 0.7):
        for name, budgets in rows:
            calibrated.PAIR_LAYERS = 10 ** 6 if budgets == "every pair" else default_limit
            t = time.perf_counter()
            scores = search.significance(name, sparsity=sparsity)
            seconds = time.perf_counter() - t
            pruned = copy.deepcopy(model)
            bingo.prune(pruned, scores, sparsity=sparsity)
            forwards = search.last_calibration.evaluations if budgets else ""
            print(f"| {sparsity:.0%} | {name} | {budgets or ''} | {held_out(pruned):.4f} | "
                  f"{seconds:.1f} | {forwards} |", flush=True)
    calibrated.PAIR_LAYERS = default_limit


if __name__ == "__main__":
    main()
