"""The subset stream: Philox correctness, determinism, fraction, independence."""
import numpy as np
import pytest
import torch

from bingo.engine.subsets import (
    M32,
    _word_bytes,
    fraction_to_threshold,
    philox4x32,
    subset_bytes,
    subset_mask,
)

# Known-answer vectors of Philox-4x32-10 from Random123's kat_vectors.
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((M32,) * 4, (M32, M32), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("ctr,key,expected", KAT)
def test_philox_known_answers(ctr, key, expected):
    out = philox4x32(*[torch.tensor([c], dtype=torch.int64) for c in ctr], *key)
    assert tuple(int(o) for o in out) == expected


def numpy_philox(c, k0, k1, rounds=10):
    """Independent uint64 numpy Philox-4x32 (no wraparound tricks)."""
    c0, c1, c2, c3 = (x.astype(np.uint64) for x in c)
    k0, k1 = np.uint64(k0), np.uint64(k1)
    m = np.uint64(M32)
    for _ in range(rounds):
        p0 = c0 * np.uint64(0xD2511F53)
        p2 = c2 * np.uint64(0xCD9E8D57)
        c0, c1, c2, c3 = ((p2 >> np.uint64(32)) ^ c1 ^ k0, p2 & m,
                          (p0 >> np.uint64(32)) ^ c3 ^ k1, p0 & m)
        k0 = (k0 + np.uint64(0x9E3779B9)) & m
        k1 = (k1 + np.uint64(0xBB67AE85)) & m
    return c0, c1, c2, c3


def test_philox_matches_numpy_on_random_counters(fresh_seed):
    rng = np.random.default_rng(fresh_seed)
    c = [rng.integers(0, 2 ** 32, size=1003, dtype=np.uint64) for _ in range(4)]
    k0, k1 = (int(x) for x in rng.integers(0, 2 ** 32, size=2))
    got = philox4x32(*[torch.from_numpy(x.astype(np.int64)) for x in c], k0, k1)
    for g, e in zip(got, numpy_philox(c, k0, k1)):
        assert np.array_equal(g.numpy().astype(np.uint64), e)


def test_byte_order_of_words(fresh_seed):
    gen = torch.Generator().manual_seed(fresh_seed)
    w = torch.randint(0, 2 ** 32, (3, 7, 4), dtype=torch.int64, generator=gen)
    shifts = torch.tensor([0, 8, 16, 24])
    assert torch.equal(_word_bytes(w), ((w.unsqueeze(-1) >> shifts) & 0xFF).to(torch.uint8))


def test_stream_is_positional(fresh_seed):
    """Any window and any variant list regenerates exactly the same decisions."""
    seed, step = fresh_seed, 41
    full = subset_bytes(seed, step, range(5), 0, 1000)
    for start, n in [(0, 1), (3, 17), (15, 2), (16, 16), (999, 1), (123, 877)]:
        assert torch.equal(subset_bytes(seed, step, [3], start, n)[0], full[3, start:start + n])
    assert torch.equal(subset_bytes(seed, step, [4, 1], 10, 100), full[[4, 1], 10:110])


def test_element_byte_mapping():
    """Element e reads byte e%4 of word (e//4)%4 of Philox call e//16."""
    seed, step, variant = 0x1234_5678_9ABC, 7, 3
    draws = subset_bytes(seed, step, [variant], 0, 48)[0]
    for group in range(3):
        words = philox4x32(*[torch.tensor([v], dtype=torch.int64) for v in
                             (group, variant, step, 0)], seed & M32, seed >> 32)
        for j, word in enumerate(words):
            for b in range(4):
                assert int(draws[16 * group + 4 * j + b]) == (int(word) >> (8 * b)) & 0xFF


@pytest.mark.parametrize("fraction", [0.05, 0.3, 0.71])
def test_fraction_is_respected(fraction, fresh_seed):
    threshold = fraction_to_threshold(fraction)
    p = threshold / 256
    assert abs(p - fraction) <= 1 / 512
    n, k = 200_003, 6
    masks = subset_mask(fresh_seed, 5, range(k), 11, n, threshold)
    sigma = (p * (1 - p) / n) ** 0.5
    for row in masks:  # every variant on its own
        assert abs(row.float().mean().item() - p) < 6 * sigma


def test_subsets_differ_across_steps_variants_and_seeds(fresh_seed):
    t = fraction_to_threshold(0.1)
    n = 50_000
    a = subset_mask(fresh_seed, 0, [0, 1], 0, n, t)
    b = subset_mask(fresh_seed, 1, [0], 0, n, t)[0]
    c = subset_mask(fresh_seed ^ 1, 0, [0], 0, n, t)[0]
    d = subset_mask(fresh_seed + (1 << 32), 0, [0], 0, n, t)[0]  # the seed's high word matters
    e = subset_mask(fresh_seed, 1 << 32, [0], 0, n, t)[0]         # so does the step's
    base, p = a[0], t / 256
    for other in (a[1], b, c, d, e):
        overlap = (base & other).float().mean().item()
        assert not torch.equal(base, other)
        assert abs(overlap - p * p) < 0.004  # independent subsets overlap by about p^2


@pytest.mark.parametrize("bad", [0, 1, -0.1, 1.5, 0.001, float("nan"), "0.1"])
def test_fraction_outside_range_is_refused(bad):
    with pytest.raises(ValueError, match="fraction"):
        fraction_to_threshold(bad)
