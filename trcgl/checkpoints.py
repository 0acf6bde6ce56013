"""Resuming from a ``.partial`` folder: a file that cannot be used is no file, and the work is done again.

A trainer checkpoints into its stage's ``.partial`` folder (:mod:`trcgl.cache`) after every epoch
and resumes from there after an interruption. Checkpoints are written atomically
(:func:`trcgl.cache.atomic_torch_save`: a temporary file, ``fsync``, a rename), so a training killed
while writing one keeps the previous one. A truncated or garbled ``last.pt`` can still arise below
that: a run folder copied while a run wrote into it, or copied short (a full disk at the
destination, an interrupted ``rsync``), a file system that does not keep the rename's promise (some
network file systems), a disk that loses blocks, a file edited by hand. Reading one used to end the
run in a ``PytorchStreamReader`` traceback.

:func:`load_resume_checkpoint` treats a checkpoint that cannot be read or does not fit (``torch.load``
raising, a checksum that does not match, a missing entry, a tensor of the wrong shape, a file it
vouches for that changed) as none:
a warning names the file, :func:`set_aside` moves it out of the ``.partial`` folder and the
training starts over. The checksum (:func:`save_checkpoint` stores the SHA-256 of the state's
contents in it) is what catches garbled bytes inside a tensor: ``torch.load`` reads those without
complaint, and the training would go on from garbage. The same goes for other unfinished work a stage reads back (an image set's
rendered chunks). A file set aside goes beside the ``.partial`` folder as
``<key>.partial.<its path>.corrupt-<time>-<pid>`` (the cache's own ``<key>.corrupt-*`` convention):
kept for inspection, never sealed into the artifact, deleted with the stage's cache.
"""
from __future__ import annotations

import copy
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

#: what a ``restore`` function raises for a checkpoint that reads but does not fit the training
#: (a missing entry, a tensor of the wrong shape, an optimizer of other parameters, ...)
MISFIT = (KeyError, IndexError, TypeError, ValueError, RuntimeError, AttributeError)


#: the entry of a checkpoint that holds the digest of the rest (:func:`state_digest`)
CHECKSUM = "checksum"


def state_digest(state: Any) -> str:
    """SHA-256 of a checkpoint's contents: every tensor's dtype, shape and bytes, and the plain
    values (numbers, strings, lists, dicts with their keys in a fixed order) by their ``repr``."""
    import hashlib

    h = hashlib.sha256()
    _feed(h, state)
    return h.hexdigest()


def _feed(h, obj: Any) -> None:
    import torch

    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"t{t.dtype}{tuple(t.shape)}:".encode())
        h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    elif isinstance(obj, dict):
        h.update(b"d%d:" % len(obj))
        for key in sorted(obj, key=repr):
            _feed(h, key)
            _feed(h, obj[key])
    elif isinstance(obj, (list, tuple)):
        h.update(b"l%d:" % len(obj))
        for item in obj:
            _feed(h, item)
    else:
        h.update(f"{type(obj).__name__}:{obj!r};".encode())


def save_checkpoint(state: dict, path: Path) -> None:
    """Write a training's checkpoint atomically (:func:`trcgl.cache.atomic_torch_save`) with the
    digest of its contents, which :func:`load_resume_checkpoint` checks."""
    from .cache import atomic_torch_save

    atomic_torch_save({**state, CHECKSUM: state_digest(state)}, path)


def aside_path(path: Path) -> Path:
    """Where :func:`set_aside` moves ``path``: beside the ``.partial`` folder that holds it (beside
    the file itself when none does)."""
    path = Path(path)
    stamp = f"corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    for folder in path.parents:
        if folder.name.endswith(".partial"):
            inside = path.relative_to(folder).as_posix().replace("/", ".")
            return folder.with_name(f"{folder.name}.{inside}.{stamp}")
    return path.with_name(f"{path.name}.{stamp}")


def set_aside(path: Path, why: str, what: str = "checkpoint", then: str = "starting that training over") -> Path | None:
    """Move an unusable file of a ``.partial`` folder out of it with a warning naming it and why;
    returns where it went (None when another process moved it first)."""
    path = Path(path)
    target = aside_path(path)
    try:
        os.replace(path, target)
    except FileNotFoundError:
        return None
    log.warning("unusable %s %s (%s); moved to %s, %s", what, path, why, target.name, then)
    return target


def load_resume_checkpoint(path: Path, restore: Callable[[dict], T] | None = None, rollback: Iterable[Any] = (),
                           main: bool = True) -> T | dict | None:
    """The checkpoint of an interrupted training, or None when there is none or it cannot be used.

    ``restore(state)`` applies the loaded dict to the training (weights, optimizer, schedule, ...)
    and returns what the trainer needs; it raises (:data:`MISFIT`) when the checkpoint does not
    fit. Then the objects of ``rollback`` (anything with ``state_dict`` / ``load_state_dict``: the
    model ``restore`` may have half loaded) get their state from before back, as does torch's
    global random state, so that starting over is exactly a run from scratch. An unreadable or
    unfit checkpoint is moved aside (:func:`set_aside`; by the ``main`` process only, when several
    processes resume from the same folder) and None is returned. Without ``restore`` the loaded
    dict is returned. The checkpoint must have been written by :func:`save_checkpoint`: its
    checksum is checked first."""
    import torch

    path = Path(path)
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except MemoryError:
        raise
    except Exception as err:  # noqa: BLE001 -- torch.load raises many types for a bad file
        return _unusable(path, f"cannot be read: {type(err).__name__}: {first_line(err)}", main)
    if not isinstance(state, dict):
        return _unusable(path, f"holds a {type(state).__name__}, not a checkpoint", main)
    if CHECKSUM not in state:
        return _unusable(path, "has no checksum (not written by this trcgl)", main)
    if state.pop(CHECKSUM) != state_digest(state):
        return _unusable(path, "its contents do not match its checksum", main)
    if restore is None:
        return state
    parts = list(rollback)
    before = [copy.deepcopy(p.state_dict()) for p in parts]
    rng = torch.get_rng_state()
    try:
        return restore(state)
    except torch.cuda.OutOfMemoryError:
        raise
    except MISFIT as err:
        for part, saved in zip(parts, before):
            part.load_state_dict(saved)
        torch.set_rng_state(rng)
        return _unusable(path, f"does not fit this training: {type(err).__name__}: {first_line(err)}", main)


def _unusable(path: Path, why: str, main: bool) -> None:
    if main:
        set_aside(path, why)
    else:
        log.debug("unusable checkpoint %s (%s): starting over", path, why)
    return None


def first_line(err: BaseException) -> str:
    """The first sentence of an error's message (torch's run on for several lines)."""
    text = str(err).strip()
    return text.splitlines()[0].split(". ")[0][:200] if text else "no message"
