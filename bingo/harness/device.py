"""Where a job runs (``--device``): the CPU by default, or one CUDA GPU for longer
schedules. The data splits and the models are moved there once; batch order and
augmentation still come from the CPU generator, so a run draws the same batches on
either device."""
from __future__ import annotations

import os
from typing import Any, Dict

import torch

DEVICES = ("cpu", "cuda", "cuda:N")


def resolve_device(name: str) -> torch.device:
    """``name`` as a torch device, refused with the fix when this machine cannot run it."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {name!r}; give one of {', '.join(DEVICES)}") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {name!r}: the harness runs on the CPU or a CUDA GPU; give "
                         f"one of {', '.join(DEVICES)}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: this torch sees no CUDA GPU "
                             f"(torch.cuda.is_available() is False; torch {torch.__version__}); "
                             f"drop --device (the CPU) or install a CUDA build of torch")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ValueError("--device cuda under torchrun is not supported yet (the ranks "
                             "share one gloo group): run one process on the GPU, or torchrun "
                             "on the CPU")
        index = device.index if device.index is not None else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} "
                             f"CUDA device(s), numbered from 0")
        device = torch.device("cuda", index)
    return device


def device_environment(device: torch.device) -> Dict[str, Any]:
    """What a result records of the device it ran on."""
    out: Dict[str, Any] = {"device": str(device)}
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)
    return out
