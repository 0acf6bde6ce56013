"""Device selection and seeding."""
from __future__ import annotations

import os
import platform
import random

import numpy as np
import torch
from .errors import TrcglError


class DeviceError(TrcglError, RuntimeError):
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


def images_per_second(step, n_images: int, repeats: int = 3) -> float:
    """Best-of-``repeats`` throughput of ``step()``, which processes ``n_images`` images."""
    import time

    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - start)
    return n_images / best


def training_throughput(model: torch.nn.Module, image_size: int, batch_size: int = 32,
                        device: torch.device | None = None, in_chans: int = 1, num_classes: int = 30) -> float:
    """Images per second of one forward + backward + AdamW step on random inputs."""
    device = device or torch.device("cpu")
    model = model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch_size, in_chans, image_size, image_size, device=device)
    y = torch.randint(0, 2, (batch_size, num_classes), device=device).float()

    def step():
        opt.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(model(x), y).backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    step()  # warm-up
    return images_per_second(step, batch_size)
