"""A Lightning fit of LeNet-300-100 on real MNIST with ``BingoPruning`` (gradual, 90%),
run as a script so that ``strategy="ddp"`` can start its second rank the way Lightning
does (by running this file again); each rank saves its masks (the zeros of the pruned
weights) to ``OUT/rank{r}.pt``. ``plain_loop`` is the same run without Lightning.

    python tests/lightning_run.py DATA_DIR OUT {single,ddp,ddp_spawn}
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from bingo.harness.data import load_mnist
from bingo.harness.models import lenet300

EXAMPLES, BATCH, SEED = 1024, 64, 7
PRUNING = dict(start=0.2, end=0.8, every=2, calibration=128, seed=3)


def examples(data_dir):
    train = load_mnist(data_dir).train
    return train.images[:EXAMPLES], train.labels[:EXAMPLES]


def optimizer(params):
    return torch.optim.SGD(params, lr=0.05, momentum=0.9)


def plain_loop(data_dir):
    """The plain-loop API on the same batches: the masks Lightning must reproduce."""
    import bingo
    x, y = examples(data_dir)
    torch.manual_seed(SEED)
    model = lenet300()
    opt = optimizer(model.parameters())
    pruner = bingo.GradualTicketPruning(model, sparsity=0.9, total_steps=EXAMPLES // BATCH,
                                        **PRUNING)
    for i in range(0, EXAMPLES, BATCH):
        opt.zero_grad()
        F.cross_entropy(model(x[i:i + BATCH]), y[i:i + BATCH]).backward()
        opt.step()
        pruner.step(x[i:i + BATCH], y[i:i + BATCH])
    pruner.finish()
    return {n: (w == 0) for n, w in pruner.weights().items()}


import lightning.pytorch as pl  # noqa: E402  (this file runs only with the extra)

from bingo.integrations.lightning import BingoPruning  # noqa: E402


class Net(pl.LightningModule):
    """LeNet-300-100; its training batches in order, split across ranks by a
    DistributedSampler without shuffling (Lightning's own shuffles), so that every step's
    global batch is the plain loop's."""

    def __init__(self, x, y, world):
        super().__init__()
        self.net = lenet300()
        self.data, self.world = torch.utils.data.TensorDataset(x, y), world

    def train_dataloader(self):
        sampler = None
        if self.world > 1:
            sampler = torch.utils.data.DistributedSampler(self.data, shuffle=False)
        return torch.utils.data.DataLoader(self.data, batch_size=BATCH // self.world,
                                           sampler=sampler)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self(batch[0]), batch[1])

    def configure_optimizers(self):
        return optimizer(self.parameters())


class Saver(pl.Callback):
    """Saves this rank's masks once BingoPruning (listed before it) has finished."""

    def __init__(self, out: str):
        self.out = out

    def on_train_end(self, trainer, module):
        pruning = next(c for c in trainer.callbacks if isinstance(c, BingoPruning))
        masks = {f"{n}.weight": (m.weight == 0).clone()
                 for n, m in module.net.named_children() if hasattr(m, "weight")}
        torch.save({"masks": masks, "sparsity": pruning.report.sparsity,
                    "tracked": pruning.session.pruner.optimizer is trainer.optimizers[0]},
                   Path(self.out) / f"rank{trainer.global_rank}.pt")


def main(data_dir: str, out: str, mode: str) -> None:
    x, y = examples(data_dir)
    world = 1 if mode == "single" else 2
    torch.manual_seed(SEED)
    module = Net(x, y, world)
    trainer = pl.Trainer(accelerator="cpu", devices=world, max_epochs=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False,
                         callbacks=[BingoPruning(0.9, **PRUNING), Saver(out)],
                         **({} if mode == "single" else {"strategy": mode}))
    trainer.fit(module)


if __name__ == "__main__":
    main(*sys.argv[1:4])
