"""What the stages of every domain share: files and folders outside the cache as inputs, the
device, the class groups of an input, and resolving a request (:func:`get`, :func:`resolve`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..cache import digest, file_sha256
from ..graph import Const, Request, StageError
from ..graph import resolve as _resolve
from ..graph import value as _value

# ----------------------------------------------------------------------------- external inputs

_FILE_DIGESTS: dict = {}


def file_input(path: str | Path) -> Const:
    """A file outside the cache as an input: keyed by its content, not its path (hashed once per
    process and file state: path, size, modification time)."""
    path = Path(path)
    if not path.is_file():
        raise StageError(f"input file not found: {path}")
    info = path.stat()
    state = (str(path.resolve()), info.st_size, info.st_mtime_ns)
    if state not in _FILE_DIGESTS:
        _FILE_DIGESTS[state] = file_sha256(path)[:16]
    return Const(path, _FILE_DIGESTS[state])


_FOLDER_DIGESTS: dict = {}


def folder_input(path: str | Path, what: str) -> Const:
    """A folder outside the cache (saved weights, a pipeline, an image folder) as an input, keyed
    by its files (names, sizes, modification times; computed once per process and folder state)."""
    path = Path(path)
    if not path.is_dir():
        raise StageError(f"{what}: no folder at {path}")
    state = (str(path.resolve()), path.stat().st_mtime_ns)
    if state not in _FOLDER_DIGESTS:
        files = sorted((f.relative_to(path).as_posix(), f.stat().st_size, f.stat().st_mtime_ns)
                       for f in path.rglob("*") if f.is_file())
        _FOLDER_DIGESTS[state] = digest(files)
    return Const(path, _FOLDER_DIGESTS[state])


# ----------------------------------------------------------------------------- shared by the declarations

def _device(cfg):
    from ..runtime import select_device

    return select_device(cfg.device)


def _groups(value) -> list[str]:
    """The class groups of an input: a cohort's, or a list given directly (tests)."""
    return list(getattr(value, "groups", value))


# ----------------------------------------------------------------------------- resolving requests

def get(req: Request, cache=None) -> Any:
    """The loaded value of a request (computed, with its inputs, when not cached)."""
    return _value(req, cache)


def resolve(req: Request, cache=None):
    """The :class:`~trcgl.graph.Artifact` of a request (folder, key, digest, value)."""
    return _resolve(req, cache)


# ----------------------------------------------------------------------------- in-memory inputs

def module_weights_digest(module) -> str:
    """The content digest of a torch module's weights (an in-memory model as an input)."""
    state = module.state_dict()
    return digest(*[k for k in sorted(state)], *[state[k].detach().cpu().float().numpy() for k in sorted(state)])
