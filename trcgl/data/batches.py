"""Mini-batches from tensors held whole, indexed on the device: the trainers' input pipeline.

A training set is one tensor (uint8 images N×H×W, float latents, later float16 feature maps) kept
where indexing it is cheapest: on the GPU when it fits (:data:`DEVICE_SHARE` of the free memory),
else in pinned host memory (rows gathered there, then copied asynchronously), on the CPU as it is.
Per-row targets (labels, loss weights, flip flags) are small tensors beside it. An epoch is a list
of row indices (the seeded permutation of the epoch's rows); a batch is a slice of that list, its
rows gathered with one ``index_select`` and turned into the model's input by a ``transform`` on
the device (:class:`Normalised` for images: x / 255, minus the mean, over the std). There is no
per-sample Python and no DataLoader.

Several processes (:mod:`trcgl.runtime`): the epoch's list is the same in every process; each
global batch of ``batch_size`` rows is cut into ``size`` contiguous shares and process r trains on
the r-th (:func:`shards`). A :class:`Shard` says where its rows sit in the global batch (so noise
drawn for the whole global batch from one generator can be cut the same way) and by how much its
mean loss is scaled (its share of the global batch times the number of processes), so that the
gradient average over the processes is the gradient of the global batch's mean loss. A process
whose share of a short last batch is empty trains on a stand-in row with scale 0: it still takes
part in the gradient all-reduce, and adds nothing to it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch

#: The share of the GPU's free memory a stored tensor may take; a larger one stays in pinned host memory.
DEVICE_SHARE = 0.5


class DeviceTensor:
    """An (N, ...) tensor held for batched row indexing on ``device``: moved there when it fits
    (CUDA: at most :data:`DEVICE_SHARE` of the free memory), else pinned host memory; on the CPU
    the array itself (no copy of a NumPy array)."""

    def __init__(self, data, device, share: float = DEVICE_SHARE):
        self.device = torch.device(device)
        t = data if isinstance(data, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(data))
        if self.device.type == "cuda" and t.device.type == "cpu":
            free, _ = torch.cuda.mem_get_info(self.device)
            t = t.to(self.device) if t.nbytes <= share * free else t.pin_memory()
        elif self.device.type != "cuda":
            t = t.to(self.device)
        self.data = t

    def __len__(self) -> int:
        return len(self.data)

    @property
    def on_device(self) -> bool:
        return self.data.device == self.device or (self.device.type == "cuda" and self.data.is_cuda)

    def take(self, index: torch.Tensor) -> torch.Tensor:
        """Rows ``index`` (int64) on the device, in the stored dtype."""
        if self.on_device:
            return self.data.index_select(0, index.to(self.data.device))
        rows = torch.empty((len(index), *self.data.shape[1:]), dtype=self.data.dtype, pin_memory=True)
        torch.index_select(self.data, 0, index.cpu(), out=rows)
        return rows.to(self.device, non_blocking=True)


class Normalised:
    """uint8 images (B, H, W) -> float32 (B, 1, H, W): (x / 255 − mean) / std, on the device."""

    def __init__(self, mean: float, std: float):
        self.mean, self.std = float(mean), float(std)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return ((x.float() / 255.0 - self.mean) / self.std)[:, None]


def unit_range(x: torch.Tensor) -> torch.Tensor:
    """uint8 images (B, H, W) -> float32 (B, 1, H, W) in [-1, 1] (the autoencoder's input range)."""
    return (x.float() / 127.5 - 1.0)[:, None]


def seeded_order(rows, seed: int) -> torch.Tensor:
    """The rows (an int array, or a count n for 0..n-1) permuted by ``torch.randperm`` with a
    generator seeded by ``seed``: the same order in every process and on every device."""
    rows = torch.arange(rows) if isinstance(rows, int) else torch.as_tensor(np.asarray(rows, dtype=np.int64))
    return rows[torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed))]


def split_range(n: int, rank: int, size: int) -> tuple[int, int]:
    """[lo, hi): the rank-th of ``size`` contiguous parts of n rows (sizes differ by at most one)."""
    base, extra = divmod(n, size)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (rank < extra)


@dataclass
class Shard:
    index: torch.Tensor   # this process's rows of the global batch (stored-row indices)
    rows: slice           # their positions in the global batch
    size: int             # the global batch's size
    scale: float          # multiplies the mean loss: (rows here / global rows) × processes; 0 for a stand-in row


def shards(order: torch.Tensor, batch_size: int, rank: int = 0, size: int = 1) -> Iterator[Shard]:
    """This process's share of every global batch of ``order`` (see the module docstring)."""
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        lo, hi = split_range(len(batch), rank, size)
        if hi > lo:
            yield Shard(batch[lo:hi], slice(lo, hi), len(batch), (hi - lo) * size / len(batch))
        else:   # a short last batch left nothing for this process: a stand-in row that counts for nothing
            yield Shard(batch[:1], slice(0, 1), len(batch), 0.0)


@dataclass
class Batch:
    x: torch.Tensor               # the model input (transformed, flipped where asked)
    targets: dict                 # name -> rows of each per-row target
    shard: Shard


class TensorBatches:
    """Batches of a stored tensor and its per-row targets, indexed on the device.

    ``inputs`` is the stored tensor (a :class:`DeviceTensor`, or anything it accepts);
    ``transform`` turns its gathered rows into the model's input (:class:`Normalised` for uint8
    images; none for tensors already in float); ``targets`` are per-row arrays (labels, loss
    weights), replaceable between epochs with :meth:`set`. A per-row ``flip`` target (bool) flips
    those inputs left-right (the horizontal-flip augmentation)."""

    def __init__(self, inputs, device, transform: Callable | None = None, **targets):
        self.device = torch.device(device)
        self.inputs = inputs if isinstance(inputs, DeviceTensor) else DeviceTensor(inputs, self.device)
        self.transform = transform
        self.targets: dict[str, DeviceTensor] = {}
        for name, values in targets.items():
            self.set(name, values)

    def __len__(self) -> int:
        return len(self.inputs)

    def set(self, name: str, values) -> None:
        """Set (or with None, remove) the per-row target ``name``."""
        if values is None:
            self.targets.pop(name, None)
            return
        if len(values) != len(self.inputs):
            raise ValueError(f"target '{name}' has {len(values)} rows for {len(self.inputs)} stored rows")
        self.targets[name] = DeviceTensor(values, self.device)

    def gather(self, index: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """(model input, targets) of the stored rows ``index``."""
        x = self.inputs.take(index)
        x = self.transform(x) if self.transform is not None else x
        targets = {name: t.take(index) for name, t in self.targets.items()}
        flip = targets.pop("flip", None)
        if flip is not None:
            x = torch.where(flip.view(-1, *([1] * (x.dim() - 1))), x.flip(-1), x)
        return x, targets

    def batches(self, order, batch_size: int, rank: int = 0, size: int = 1) -> Iterator[Batch]:
        """The batches of one epoch: ``order`` (stored-row indices) in global batches of
        ``batch_size``, this process's share of each (:func:`shards`)."""
        order = torch.as_tensor(order, dtype=torch.int64)
        if self.inputs.on_device:
            order = order.to(self.inputs.data.device)
        for shard in shards(order, batch_size, rank, size):
            x, targets = self.gather(shard.index)
            yield Batch(x, targets, shard)

    def in_order(self, batch_size: int, lo: int = 0, hi: int | None = None) -> Iterator[tuple[torch.Tensor, dict]]:
        """Rows lo..hi in storage order, in batches (for prediction)."""
        hi = len(self) if hi is None else hi
        for start in range(lo, hi, batch_size):
            yield self.gather(torch.arange(start, min(start + batch_size, hi)))
