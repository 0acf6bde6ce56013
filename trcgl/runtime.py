"""Device selection, seeding, and the processes that train together.

**Several processes** (``accelerate launch --multi_gpu --num_processes N -m trcgl run STAGE``):
HF Accelerate starts the processes, sets up the process group (NCCL on GPUs, gloo on CPUs) and
gives each its device; :func:`processes` describes them. Where torch sees no GPU (or with
``ACCELERATE_USE_CPU=1``) the processes train on CPUs over gloo, which is how it is tested here
(Accelerate's ``--cpu`` flag starts several processes only through MPI). We chose Accelerate over
a bare torchrun + DDP because it is the field's launcher for 1..N GPUs and N nodes with one
command, it picks the backend and device per process, and its ``prepare_model`` is the same
DistributedDataParallel a hand-written torchrun script would build; ``torchrun --nproc_per_node N
-m trcgl run ...`` works too, since Accelerate reads torchrun's environment. Mixed precision does
not come from Accelerate's ``--mixed_precision`` but from the configuration (``train.amp``,
``diffusion.amp``): bf16 autocast on CUDA, none on CPU, so a CPU run repeats bit for bit.

Each trainer takes a *global* batch of ``batch_size`` rows from one seeded permutation and every
process trains on its contiguous share of it (:mod:`trcgl.data.batches`); its loss is scaled by
its share so that DistributedDataParallel's gradient average is the gradient of the global
batch's mean loss, as in one process.
"""
from __future__ import annotations

import contextlib
import os
import platform
import random
from datetime import timedelta

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


def set_threads(count: int | None) -> None:
    """Set torch's intra-op threads to the config's ``threads`` (None: leave torch's count)."""
    if count is not None:
        torch.set_num_threads(int(count))


@contextlib.contextmanager
def torch_threads(count: int | None):
    """Run a block with ``count`` torch intra-op threads (the config's ``threads``; None: leave
    torch's). CPU results depend on the thread count in their last bits, so a profile that fixes
    it repeats bit for bit whether one process or several share the cores; on two cores, two
    worker processes of one thread each train about 15 % more images per second together than
    two of two threads (``python -m trcgl run --workers 2``, the cpu profile). The count is
    restored afterwards (the CLI's ``run`` inside a test process)."""
    before = torch.get_num_threads()
    set_threads(count)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


# ----------------------------------------------------------------------------- processes

#: How long a process may wait for the others in a collective call: a rank waits while the main
#: process takes a stage's lock (another run may hold it while it builds that stage).
PROCESS_TIMEOUT = timedelta(hours=6)


def launched() -> bool:
    """Whether this process is one of several started by a launcher (accelerate launch, torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


class Processes:
    """The processes that train together: one (rank 0 of 1) unless started by a launcher, then
    HF Accelerate's view of the group (rank, count, device) and the few collective calls the
    trainers and the stage cache need."""

    def __init__(self, accelerator=None):
        self.accelerator = accelerator
        self.rank = accelerator.process_index if accelerator is not None else 0
        self.size = accelerator.num_processes if accelerator is not None else 1
        self.device = accelerator.device if accelerator is not None else None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def __repr__(self) -> str:
        return f"Processes(rank {self.rank} of {self.size})"

    def check_device(self, device: torch.device) -> None:
        """The configured device must be the kind the launcher set up (gloo for CPU, NCCL for GPUs)."""
        if self.size > 1 and torch.device(device).type != self.device.type:
            raise DeviceError(f"the run was launched on {self.device.type} processes but the configuration's device is "
                              f"'{torch.device(device).type}': launch with `accelerate launch --cpu` for CPU processes, "
                              "or set --device cuda")

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module to train: ``model`` itself in one process, else DistributedDataParallel over
        its parameters that require gradients now (Accelerate's ``prepare_model``; call again after
        freezing or unfreezing parameters). BatchNorm layers become SyncBatchNorm on GPUs."""
        if self.size == 1:
            return model
        if self.device.type == "cuda":
            torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)   # in place for nested BatchNorms
        self.accelerator.free_memory()          # forget the wrapper of a previous stage
        return self.accelerator.prepare_model(model, device_placement=False)

    def barrier(self) -> None:
        if self.size > 1:
            self.accelerator.wait_for_everyone()

    def broadcast_flag(self, flag: bool) -> bool:
        """The main process's ``flag``, on every process."""
        if self.size == 1:
            return flag
        from accelerate.utils import broadcast

        return bool(broadcast(torch.tensor([int(flag)], device=self.device), from_process=0).item())

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Element-wise sum over the processes (the tensor itself in one process)."""
        if self.size == 1:
            return tensor
        return self.accelerator.reduce(tensor.to(self.device), reduction="sum")

    def mean_of_steps(self, losses: list[torch.Tensor]) -> float:
        """An epoch's loss: the mean over its steps of each global batch's mean loss, from every
        process's scaled step losses (summed over the processes, over their number)."""
        if not losses:
            return float("nan")
        per_step = self.sum(torch.stack(losses)) / self.size
        return float(np.mean(per_step.double().cpu().numpy()))

    def gather_rows(self, local: torch.Tensor, n: int) -> torch.Tensor:
        """Every process's rows, in rank order, when process r holds the r-th of ``size`` contiguous
        parts of ``n`` rows (:func:`trcgl.data.batches.split_range`)."""
        if self.size == 1:
            return local
        longest = -(-n // self.size)
        padded = local.new_zeros((longest, *local.shape[1:]))
        padded[:len(local)] = local
        every = self.accelerator.gather(padded.to(self.device)).reshape(self.size, longest, *local.shape[1:])
        counts = [len(part) for part in torch.arange(n).tensor_split(self.size)]
        return torch.cat([every[r, :c] for r, c in enumerate(counts)]).to(local.device)


_PROCESSES: Processes | None = None


def processes() -> Processes:
    """This process's group: set up once per process (HF Accelerate) when a launcher started
    several; one process otherwise. On GPUs each process gets its own (``torch.device("cuda")``
    then means that one)."""
    global _PROCESSES
    if _PROCESSES is None:
        if launched():
            from accelerate import Accelerator
            from accelerate.utils import DistributedDataParallelKwargs, InitProcessGroupKwargs

            cpu = not torch.cuda.is_available() or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
            # unused parameters: heads trained on cached features skip modules of the feature side
            # (the released preset's final norm and BatchNorm), which DDP would otherwise wait for
            _PROCESSES = Processes(Accelerator(cpu=cpu, mixed_precision="no", kwargs_handlers=[
                InitProcessGroupKwargs(timeout=PROCESS_TIMEOUT), DistributedDataParallelKwargs(find_unused_parameters=True)]))
        else:
            _PROCESSES = Processes()
    return _PROCESSES


def autocast(device: torch.device, enabled: bool = True, cpu: bool = False):
    """bf16 autocast on CUDA when ``enabled``; on the CPU only when ``cpu`` too (``train.amp_cpu``:
    by default CPU runs stay in fp32); nothing on other devices."""
    device = torch.device(device)
    on = enabled and (device.type == "cuda" or (device.type == "cpu" and cpu))
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=on)


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
                        device: torch.device | None = None, in_chans: int = 1, num_classes: int = 30,
                        steps: int = 1, repeats: int = 3, bf16: bool = False) -> float:
    """Images per second of forward + backward + AdamW steps on one random batch (the bare loop:
    no data pipeline); best of ``repeats`` runs of ``steps`` steps after one warm-up step; the
    forward pass under bf16 autocast when ``bf16``. A model that returns a dict is read at ``"logits"``."""
    device = device or torch.device("cpu")
    model = model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch_size, in_chans, image_size, image_size, device=device)
    y = torch.randint(0, 2, (batch_size, num_classes), device=device).float()

    def one():
        opt.zero_grad()
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            out = model(x)
        out = out["logits"] if isinstance(out, dict) else out
        torch.nn.functional.binary_cross_entropy_with_logits(out.float(), y).backward()
        opt.step()

    def step():
        for _ in range(steps):
            one()
        if device.type == "cuda":
            torch.cuda.synchronize()

    one()  # warm-up
    return images_per_second(step, batch_size * steps, repeats)
