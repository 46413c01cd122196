"""Shared by the gradual-pruning tests: a short real-MNIST training run with a pruner as
its after-step hook, its step count, and a loss measured apart from the pruner."""
import copy

import torch
import torch.nn.functional as F

from bingo.harness.training import make_optimizer, steps_per_epoch, train


def train_with(model, mnist, hook, limit=3000, seed=0):
    """One Adam epoch over the first ``limit`` training images, ``hook`` after each step."""
    split = mnist.train.subset(limit)
    opt = make_optimizer("adam", model.parameters(), 1e-3)
    train(model, split, epochs=1, batch_size=64, optimizer=opt, after_step=hook, seed=seed,
          progress=False)
    return steps_per_epoch(split, 64)


def total_steps(mnist, limit=3000):
    """The steps of :func:`train_with`'s run, to plan a pruner's schedule before it."""
    return steps_per_epoch(mnist.train.subset(limit), 64)


def independent_loss(model, keep, inputs, labels, reduction="mean"):
    """The loss with ``keep`` as the masks, on a copy whose mask buffers are overwritten."""
    other = copy.deepcopy(model)
    with torch.no_grad():
        for name, k in keep.items():
            module = other.get_submodule(name.rsplit(".", 1)[0])
            module.weight_mask.copy_(k.float())
    other.eval()
    with torch.no_grad():
        out = F.cross_entropy(other(inputs), labels, reduction=reduction)
    return float(out) if reduction == "mean" else out.double().numpy()
