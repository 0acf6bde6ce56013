"""Artifact cache: "load if present, else compute and save", keyed by configuration.

Each expensive stage (rendering a dataset, training a model, sampling a synthetic set) stores
its output in ``<run_dir>/cache/<stage>/<hash>/`` where ``hash`` is the hash of the parameters
the stage depends on. The stage writes into ``<hash>.partial/`` first; only a finished stage is
renamed to ``<hash>/`` (an atomic rename on one file system), so an interrupted run never
leaves a half-written artifact that looks complete. The partial folder survives an interruption,
so a stage that checkpoints into it (a training loop) can resume from there.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from .config import config_hash

log = logging.getLogger(__name__)

META = "meta.json"


def default_run_dir() -> Path:
    """``$TRCGL_RUN_DIR`` or ``./runs``."""
    return Path(os.environ.get("TRCGL_RUN_DIR", "runs")).resolve()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file so that readers see either the old content or the new, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def array_digest(*arrays) -> str:
    """A short SHA-256 digest of arrays' bytes, in order (part of cache keys)."""
    import hashlib

    import numpy as np

    h = hashlib.sha256()
    for arr in arrays:
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()[:16]


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` through :func:`atomic_write_bytes` (a checkpoint is never half written)."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n").encode())


class ArtifactCache:
    """A folder of finished stage outputs keyed by ``(stage, hash(params))``."""

    def __init__(self, run_dir: Path | str | None = None):
        self.root = (Path(run_dir) if run_dir is not None else default_run_dir()) / "cache"
        self.hits = 0
        self.misses = 0

    def path(self, stage: str, params: Any) -> Path:
        """Where the finished artifact of ``stage`` for ``params`` lives (or will live)."""
        return self.root / stage / config_hash(params)

    def partial_path(self, stage: str, params: Any) -> Path:
        """The working folder of an unfinished stage; kept across interruptions for resuming."""
        final = self.path(stage, params)
        return final.with_name(final.name + ".partial")

    def exists(self, stage: str, params: Any) -> bool:
        return (self.path(stage, params) / META).is_file()

    def get_or_compute(self, stage: str, params: Any, build: Callable[[Path], None]) -> Path:
        """Return the artifact folder, calling ``build(folder)`` to fill it on a miss.

        ``build`` writes its files into the folder it is given (a ``.partial`` folder that may
        already hold checkpoints from an interrupted earlier call). When it returns, the folder
        is sealed with ``meta.json`` (the parameters) and renamed into place.
        """
        final = self.path(stage, params)
        if (final / META).is_file():
            self.hits += 1
            log.info("cache hit: %s/%s", stage, final.name)
            return final
        self.misses += 1
        log.info("cache miss: %s/%s, computing", stage, final.name)
        work = self.partial_path(stage, params)
        work.mkdir(parents=True, exist_ok=True)
        build(work)
        atomic_write_json(work / META, {"stage": stage, "params": params})
        if final.exists():  # a folder without meta.json: an old, unfinished layout
            shutil.rmtree(final)
        os.replace(work, final)
        return final

    def clear(self, stage: str | None = None) -> int:
        """Delete cached artifacts (of one stage, or all); returns how many folders went."""
        base = self.root / stage if stage else self.root
        if not base.exists():
            return 0
        n = sum(1 for p in base.rglob(META))
        shutil.rmtree(base)
        return n

    def listing(self) -> list[dict]:
        rows = []
        for meta in sorted(self.root.glob(f"*/*/{META}")):
            size = sum(f.stat().st_size for f in meta.parent.rglob("*") if f.is_file())
            rows.append({"stage": meta.parent.parent.name, "key": meta.parent.name, "bytes": size})
        for part in sorted(self.root.glob("*/*.partial")):
            rows.append({"stage": part.parent.name, "key": part.name, "bytes": None})
        return rows
