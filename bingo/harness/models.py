"""Model zoo: the networks the experiments name."""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Dict, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .gpt import CharGPT


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


class BasicBlock(nn.Module):
    """Two 3x3 conv + BatchNorm layers and the identity shortcut; where the block halves the
    resolution and widens, the shortcut subsamples and zero-pads the new channels (He et
    al. 2016's option A for CIFAR: no parameters)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.stride, self.extra = stride, cout - cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        short = x[:, :, ::self.stride, ::self.stride] if self.stride > 1 else x
        if self.extra:
            short = F.pad(short, (0, 0, 0, 0, 0, self.extra))
        return torch.relu(out + short)


def resnet(depth: int = 20, classes: int = 10) -> nn.Sequential:
    """He et al.'s (2016) CIFAR ResNet of ``depth`` = 6n + 2 layers: a 3x3 conv to 16
    channels, three stages of n basic blocks (16, 32, 64 channels; the second and third
    start at stride 2), global average pooling and a linear classifier."""
    if (depth - 2) % 6:
        raise ValueError(f"a CIFAR ResNet has 6n + 2 layers (20, 32, 44, 56, ...), not {depth}")
    n = (depth - 2) // 6
    layers: "OrderedDict[str, nn.Module]" = OrderedDict(
        conv=nn.Conv2d(3, 16, 3, 1, 1, bias=False), bn=nn.BatchNorm2d(16), relu=nn.ReLU())
    cin = 16
    for stage, width in enumerate((16, 32, 64), start=1):
        for b in range(n):
            layers[f"stage{stage}_{b}"] = BasicBlock(cin, width, 2 if b == 0 and stage > 1 else 1)
            cin = width
    layers["pool"] = nn.AdaptiveAvgPool2d(1)
    layers["flatten"] = nn.Flatten()
    layers["fc"] = nn.Linear(64, classes)
    return nn.Sequential(layers)


def resnet20() -> nn.Sequential:
    """ResNet-20 for [B, 3, 32, 32] CIFAR images: 0.27M parameters, 19 conv + 1 linear."""
    return resnet(20)


# VGG configurations (Simonyan & Zisserman 2015): output channels of each 3x3 conv, in
# units of the first stage's width, "M" a 2x2 max-pool.
VGG_CONFIGS: Dict[int, Tuple] = {
    11: (1, "M", 2, "M", 4, 4, "M", 8, 8, "M", 8, 8),
    16: (1, 1, "M", 2, 2, "M", 4, 4, 4, "M", 8, 8, 8, "M", 8, 8, 8),
}


def vgg(depth: int = 11, width: int = 64, classes: int = 10) -> nn.Sequential:
    """A CIFAR VGG (the form of OpenLTH's ``cifar_vgg``, less the conv bias that BatchNorm
    cancels): VGG's 3x3 convs, each followed by BatchNorm and ReLU, four 2x2 max-pools
    (32 -> 2 pixels), global average pooling and one linear classifier. ``width`` is the first stage's channels (64
    in the paper; the later stages 2x, 4x and 8x it): one flat ``nn.Sequential``, so the
    search's batched path and the meter's prefixes run it layer by layer."""
    if depth not in VGG_CONFIGS:
        raise ValueError(f"a VGG has depth {' or '.join(map(str, sorted(VGG_CONFIGS)))}, "
                         f"not {depth}")
    if width < 1:
        raise ValueError(f"width must be a positive channel count, not {width}")
    layers: "OrderedDict[str, nn.Module]" = OrderedDict()
    cin, conv, pool = 3, 0, 0
    for entry in VGG_CONFIGS[depth]:
        if entry == "M":
            pool += 1
            layers[f"pool{pool}"] = nn.MaxPool2d(2)
            continue
        conv += 1
        cout = entry * width
        layers[f"conv{conv}"] = nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
        layers[f"bn{conv}"] = nn.BatchNorm2d(cout)
        layers[f"relu{conv}"] = nn.ReLU()
        cin = cout
    layers["avgpool"] = nn.AdaptiveAvgPool2d(1)
    layers["flatten"] = nn.Flatten()
    layers["fc"] = nn.Linear(cin, classes)
    return nn.Sequential(layers)


def vgg11() -> nn.Sequential:
    """VGG-11 for [B, 3, 32, 32] CIFAR images, the paper's widths (64-512): 9.2M
    parameters, 8 convs + 1 linear, about 3.7x ResNet-20's multiply-adds (a GPU model)."""
    return vgg(11, 64)


def vgg11_w16() -> nn.Sequential:
    """VGG-11 at a quarter of the widths (16-128 channels): 0.58M parameters, the CIFAR
    VGG that fits the 2-core CPU's runs."""
    return vgg(11, 16)


MODELS: Dict[str, Callable[[], nn.Module]] = {"lenet300": lenet300, "paper-mlp": paper_mlp,
                                              "convnet": convnet, "resnet20": resnet20,
                                              "vgg11": vgg11, "vgg11-w16": vgg11_w16,
                                              "char-gpt": CharGPT}
# the datasets whose inputs each model reads (char-gpt: character ids, no image dataset)
MODEL_DATASETS: Dict[str, Tuple[str, ...]] = {
    "lenet300": ("mnist",), "paper-mlp": ("mnist",), "convnet": ("mnist",),
    "resnet20": ("cifar10",), "vgg11": ("cifar10",), "vgg11-w16": ("cifar10",),
    "char-gpt": ("tinyshakespeare",)}


def build_model(name: str) -> nn.Module:
    try:
        return MODELS[name]()
    except KeyError:
        raise ValueError(f"unknown model {name!r}; available: {sorted(MODELS)}") from None
