"""Model zoo: the networks the experiments name."""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Dict, Sequence

from torch import nn


def mlp(widths: Sequence[int]) -> nn.Sequential:
    """Flatten, then fc1, relu1, fc2, ... between the given widths (no ReLU after the last)."""
    layers: "OrderedDict[str, nn.Module]" = OrderedDict(flatten=nn.Flatten())
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:]), start=1):
        layers[f"fc{i}"] = nn.Linear(a, b)
        if i < len(widths) - 1:
            layers[f"relu{i}"] = nn.ReLU()
    return nn.Sequential(layers)


def lenet300() -> nn.Sequential:
    """LeNet-300-100 (Frankle & Carbin): 784-300-100-10, 266,200 weights."""
    return mlp([784, 300, 100, 10])


def paper_mlp() -> nn.Sequential:
    """The BINGO author's MLP: 784-128-64-10."""
    return mlp([784, 128, 64, 10])


def convnet() -> nn.Sequential:
    """A small LeNet-5-style CNN for [B, 1, 28, 28] images: two 5x5 convs (8 and 16
    channels, each followed by ReLU and 2x2 max-pooling), then 256-64-10; 20,424 weights.
    The conv-net rows of the benchmarks use it."""
    return nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(1, 8, 5), relu1=nn.ReLU(), pool1=nn.MaxPool2d(2),
        conv2=nn.Conv2d(8, 16, 5), relu2=nn.ReLU(), pool2=nn.MaxPool2d(2),
        flatten=nn.Flatten(), fc1=nn.Linear(256, 64), relu3=nn.ReLU(), fc2=nn.Linear(64, 10)))


MODELS: Dict[str, Callable[[], nn.Module]] = {"lenet300": lenet300, "paper-mlp": paper_mlp,
                                              "convnet": convnet}


def build_model(name: str) -> nn.Module:
    try:
        return MODELS[name]()
    except KeyError:
        raise ValueError(f"unknown model {name!r}; available: {sorted(MODELS)}") from None
