"""Phantom image sets rendered chunk by chunk, by a pool of processes when the set is large.

The rows of an image set are cut into chunks (``CHUNK`` rows, :mod:`trcgl.data.datasets`); each
chunk is rendered by :class:`~trcgl.data.phantom.PhantomRenderer` (an image depends only on its
render id and its row, never on what was rendered before it) and written atomically as
``chunk<k>.npz``. A chunk file that exists is finished, so an interrupted build resumes at the
chunks still missing, whichever process rendered the others.

With more than one process and at least :data:`MIN_POOL_CHUNKS` chunks to render, the missing
chunks go to a pool of *spawned* processes (a fresh interpreter each: no state is inherited
from the parent's threads). Each worker renders with one torch thread; the pixels are the same
as the serial path's (``tests/test_datasets.py`` compares them). The number of processes is a
property of the machine, not of the experiment, so it is not a config key (it cannot change a
pixel or a cache key): ``TRCGL_RENDER_PROCESSES`` sets it, default every CPU this process may
use; ``1`` renders in this process.
"""
from __future__ import annotations

import io
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import TrcglError
from .phantom import PhantomRenderer, downsample

PROCESSES_ENV = "TRCGL_RENDER_PROCESSES"
#: fewer missing chunks than this render in this process (starting workers costs seconds)
MIN_POOL_CHUNKS = 4


class RenderError(TrcglError):
    """A bad ``TRCGL_RENDER_PROCESSES``."""


@dataclass(frozen=True)
class ChunkJob:
    """The rows of one chunk: what the renderer needs of each, and where the chunk goes."""

    path: Path
    render_ids: tuple[str, ...]
    present: tuple[tuple[str, ...], ...]    # the classes drawn in each image
    sentences: tuple                        # each row's report sentences (localizations)
    labels: tuple                           # each row's PadChest labels

    def __len__(self) -> int:
        return len(self.render_ids)


def render_processes() -> int:
    """How many processes render: ``$TRCGL_RENDER_PROCESSES``, else every CPU this process may use."""
    text = os.environ.get(PROCESSES_ENV, "").strip()
    if not text:
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:      # not Linux
            return max(1, os.cpu_count() or 1)
    if not text.isdigit() or int(text) < 1:
        raise RenderError(f"{PROCESSES_ENV} must be a whole number >= 1 (1: render in this process); got {text!r}")
    return int(text)


def render_chunk(renderer: PhantomRenderer, size: int, job: ChunkJob) -> int:
    """Render one chunk at ``size`` pixels and write it (images uint8, packed masks); returns its rows."""
    from ..cache import atomic_write_bytes

    imgs, masks = [], []
    n_classes = len(renderer.classes)
    for rid, present, sentences, labels in zip(job.render_ids, job.present, job.sentences, job.labels):
        img, m = renderer.render(rid, list(present), sentences, labels)
        img, m = downsample(img, m, size)
        imgs.append(np.round(img * 255).astype(np.uint8))
        masks.append(np.packbits(m.reshape(n_classes, -1), axis=-1))
    buffer = io.BytesIO()
    np.savez(buffer, images=np.stack(imgs), masks=np.stack(masks))
    atomic_write_bytes(job.path, buffer.getvalue())
    return len(job)


_WORKER: dict = {}


def _init_worker(renderer: PhantomRenderer, size: int) -> None:
    import torch

    torch.set_num_threads(1)
    _WORKER.update(renderer=renderer, size=size)


def _render_in_worker(job: ChunkJob) -> int:
    return render_chunk(_WORKER["renderer"], _WORKER["size"], job)


def render_chunks(renderer: PhantomRenderer, size: int, jobs: list[ChunkJob], processes: int | None = None,
                  progress=None) -> int:
    """Render every chunk of ``jobs`` whose file is missing; returns how many processes rendered
    (1: this one). ``progress(n)`` is called with the rows of each finished (or found) chunk."""
    progress = progress or (lambda n: None)
    todo = []
    for job in jobs:
        if job.path.exists():           # finished before an interruption
            progress(len(job))
        else:
            todo.append(job)
    processes = min(render_processes() if processes is None else int(processes), len(todo))
    if processes < 2 or len(todo) < MIN_POOL_CHUNKS:
        for job in todo:
            progress(render_chunk(renderer, size, job))
        return 1
    import multiprocessing

    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_init_worker, initargs=(renderer, size)) as pool:
        futures = [pool.submit(_render_in_worker, job) for job in todo]
        try:
            for done in as_completed(futures):
                progress(done.result())
        except BaseException:
            for f in futures:
                f.cancel()
            raise
    return processes
