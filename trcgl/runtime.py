"""Device selection and seeding."""
from __future__ import annotations

import os
import platform
import random

import numpy as np
import torch


class DeviceError(RuntimeError):
    """The requested device cannot be used on this machine."""


def select_device(preference: str = "auto") -> torch.device:
    """``auto``: CUDA when a GPU is visible, else CPU. ``cuda`` without a GPU is an error."""
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if preference == "cpu":
        return torch.device("cpu")
    if preference == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                "device 'cuda' was asked for but torch sees no GPU; use DEVICE=auto or DEVICE=cpu"
            )
        return torch.device("cuda")
    raise DeviceError(f"unknown device '{preference}': choose auto, cpu or cuda")


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed ``random``, ``numpy`` and ``torch`` (CPU and CUDA).

    With ``deterministic`` torch picks deterministic kernels, so a CPU run repeats bit for bit.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def describe(device: torch.device) -> dict:
    """What a chapter prints about the machine it ran on."""
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(device),
        "cpu_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
