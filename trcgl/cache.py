"""Artifact cache: finished stage outputs on disk, keyed, locked and verified.

Each expensive stage (rendering a dataset, training a model, sampling a synthetic set) stores its
output in ``<run_dir>/cache/<stage>/<key>/``, where ``key`` is :func:`digest` of everything the
stage depends on (the stage graph, :mod:`trcgl.graph`, derives that payload). The rules:

- **One writer per key.** A per-key file lock (``<key>.lock``, :mod:`filelock`) serialises
  processes that want the same artifact: the second waits, then loads what the first made.
- **Never half written, never overwritten.** The stage writes into ``<key>.partial/`` (kept
  across interruptions, so a training loop resumes from its checkpoints there); when it
  returns, every file's SHA-256 goes into ``meta.json`` and the folder is renamed into place.
  A finished artifact is never deleted or overwritten by another process.
- **Verified on load.** Every file is checked against ``meta.json`` (size and SHA-256, once per
  process). A folder that fails is moved aside to ``<key>.corrupt-<time>`` with a warning naming
  it, and the stage is computed again.
- **No pickles.** Artifacts are NumPy arrays, JSON, CSV, safetensors and torch state dicts that
  load with ``weights_only=True``.
- **Several processes, one build** (``accelerate launch``, :mod:`trcgl.runtime`): every process
  resolves the same stages in the same order. A stage that only one process computes takes the
  ordinary path above (whichever process gets the lock builds; the others wait on the lock and
  load). A stage the processes build *together* (a trainer, ``fetch(..., group=...)``): the main
  process alone checks the cache and takes the lock, and tells the others whether to load or to
  build; all then call ``build`` with the same ``.partial`` folder (a trainer reads its
  checkpoints there in every process and writes files from the main one only), and the main
  process seals and renames it while the others wait. The lock and the folder are thus touched
  by one process only, and no process can load or compute a half-finished artifact.
"""
from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import math
import os
import re
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

from .errors import TrcglError

log = logging.getLogger(__name__)

META = "meta.json"


# ----------------------------------------------------------------------------- digests

def _feed(h, item: Any) -> None:
    import numpy as np

    if isinstance(item, bytes):
        h.update(b"b%d:" % len(item))
        h.update(item)
    elif isinstance(item, np.ndarray):
        arr = np.ascontiguousarray(item)
        h.update(f"a{arr.dtype.str}{arr.shape}:".encode())
        h.update(arr.tobytes())
    else:
        text = json.dumps(item, sort_keys=True, separators=(",", ":"), default=str)
        h.update(b"j%d:" % len(text))
        h.update(text.encode())


def digest(*items: Any, length: int = 16) -> str:
    """The one digest of the project: SHA-256 of ``items`` in order, ``length`` hex digits.

    Bytes are hashed as they are, NumPy arrays by dtype, shape and bytes, anything else as
    canonical JSON (sorted keys), so ``{"a": 1, "b": 2}`` and ``{"b": 2, "a": 1}`` agree.
    """
    h = hashlib.sha256()
    for item in items:
        _feed(h, item)
    return h.hexdigest()[:length]


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes (full length)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def default_run_dir() -> Path:
    """``$TRCGL_RUN_DIR`` or ``./runs``; a :class:`StorageError` when that path (or a folder it
    would be made in) is a file."""
    given = os.environ.get("TRCGL_RUN_DIR")
    path = Path(given or "runs").resolve()
    blocking = _blocking_file(path)
    if blocking is not None:
        what = "is a file" if blocking == path else f"cannot be made: {blocking} is a file"
        raise StorageError(f"the run folder TRCGL_RUN_DIR={given} {what}, not a folder; set TRCGL_RUN_DIR to a "
                           "folder (it is made if missing), or unset it to use ./runs" if given else
                           f"the run folder ./runs ({path}) {what}, not a folder; move that file away, or set "
                           "TRCGL_RUN_DIR to a folder (it is made if missing)")
    return path


# ----------------------------------------------------------------------------- storage problems

class StorageError(TrcglError):
    """The run folder cannot hold the cache: it is a file, it cannot be written, or its disk is
    full. The message names the folder and the fix; a stage's ``.partial`` work is kept."""


#: a full disk, or an exhausted disk quota
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
#: the run folder is a file, or is not writable
NOT_WRITABLE = (errno.ENOTDIR, errno.EEXIST, errno.EACCES, errno.EPERM, errno.EROFS)


def _blocking_file(path: Path) -> Path | None:
    """The file that stands where ``path`` or one of its parent folders should be; None if none."""
    for p in (path, *path.parents):
        if p.exists():
            return None if p.is_dir() else p
    return None


def human_bytes(n: float) -> str:
    """``512 bytes``, ``47.7 KiB``, ``1.5 GiB``."""
    if n < 1024:
        return f"{n:.0f} bytes"
    power = min(int(math.log(n, 1024)), 3)
    return f"{n / 1024 ** power:.1f} {('KiB', 'MiB', 'GiB')[power - 1]}"


def folder_bytes(folder: Path) -> int:
    """The bytes of the files under ``folder`` (0 when there is none)."""
    folder = Path(folder)
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) if folder.is_dir() else 0


def free_bytes(folder: Path) -> int:
    """Free bytes on the disk of ``folder`` (or of its nearest existing parent)."""
    folder = Path(folder).resolve()
    return shutil.disk_usage(next(p for p in (folder, *folder.parents) if p.exists())).free


def disk_full(folder: Path, needed: int | None, reason: str = "no space left on device") -> StorageError:
    """The one-line error of a full disk while writing ``folder``: what it needs, what is free, and
    that the ``.partial`` work there is kept for the next run to resume from."""
    folder = Path(folder)
    free = human_bytes(free_bytes(folder))
    need = f"it needs roughly {human_bytes(needed)} more, {free} free" if needed else f"it needs more than the {free} free"
    return StorageError(f"{reason} while writing {folder}: {need} on that disk; the work so far "
                        f"({human_bytes(folder_bytes(folder))}) stays there and the next run resumes from it: free "
                        "space on that disk (or lower data.image_size / the row counts), then run the same command again")


@contextmanager
def disk_space(folder: Path, needed: int):
    """``with disk_space(folder, needed):`` refuses to start when the disk of ``folder`` has less
    free than ``needed`` bytes (an estimate of the whole work) minus what ``folder`` already holds
    (work resumed), and turns a full disk inside the block into :func:`disk_full`'s one line."""
    folder = Path(folder)
    remaining = max(int(needed) - folder_bytes(folder), 0)
    if remaining > free_bytes(folder):
        raise disk_full(folder, remaining, "not enough free disk space")
    try:
        yield
    except OSError as err:
        if err.errno not in DISK_FULL:
            raise
        raise disk_full(folder, max(int(needed) - folder_bytes(folder), 0), err.strerror or "disk full") from err


def storage_problem(err: OSError, run_dir: Path, work: Path) -> StorageError | None:
    """The :class:`StorageError` an ``OSError`` met while computing a stage in ``work`` stands for
    (a full disk; the run folder a file or not writable), or None when it is another fault."""
    if err.errno in DISK_FULL:
        return disk_full(work, None, err.strerror or "disk full")
    name = err.filename if isinstance(err.filename, (str, os.PathLike)) else None
    if err.errno in NOT_WRITABLE and name is not None and Path(name).resolve().is_relative_to(Path(run_dir).resolve()):
        blocking = _blocking_file(Path(name).resolve()) if err.errno in (errno.ENOTDIR, errno.EEXIST) else None
        what = f"{blocking} is a file, not a folder" if blocking is not None else f"{err.strerror}: {name}"
        return StorageError(f"the run folder {run_dir} cannot hold the cache ({what}); set TRCGL_RUN_DIR to a "
                            "folder you can write (it is made if missing), or fix this one")
    return None


# ----------------------------------------------------------------------------- atomic writes

#: the temporary file of an :func:`atomic_write_bytes` (``tempfile.mkstemp``'s random part)
ATOMIC_TMP = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")


def atomic_write_bytes(path: Path, data: bytes) -> str:
    """Write a file so that readers see either the old content or the new, never a part; returns
    the SHA-256 of the bytes written (:func:`file_sha256` of the file, without reading it back)."""
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
    return hashlib.sha256(data).hexdigest()


def atomic_torch_save(obj: Any, path: Path) -> str:
    """``torch.save`` through :func:`atomic_write_bytes` (a checkpoint is never half written);
    returns the file's SHA-256."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n").encode())


def save_npy(path: Path, array) -> str:
    """``np.save`` through :func:`atomic_write_bytes`; returns the file's SHA-256."""
    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return atomic_write_bytes(path, buffer.getvalue())


def load_npy(path: Path):
    """``np.load`` that refuses pickled object arrays."""
    import numpy as np

    return np.load(path, allow_pickle=False)


# ----------------------------------------------------------------------------- the cache

class CorruptArtifact(RuntimeError):
    """A finished artifact's files do not match the checksums in its meta.json."""


def manifest(folder: Path) -> dict[str, dict]:
    """``{relative path: {"bytes": n, "sha256": hex}}`` of every file under ``folder`` but meta.json."""
    folder = Path(folder)
    out = {}
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = f.relative_to(folder).as_posix()
        if rel == META:
            continue
        out[rel] = {"bytes": f.stat().st_size, "sha256": file_sha256(f)}
    return out


class Busy(Exception):
    """Another process holds the lock of an artifact this one asked for without waiting."""


class ArtifactCache:
    """A folder of finished stage outputs keyed by ``(stage, digest(payload))``."""

    def __init__(self, run_dir: Path | str | None = None):
        self.root = (Path(run_dir) if run_dir is not None else default_run_dir()) / "cache"
        self.hits = 0
        self.misses = 0
        self._verified: dict[Path, tuple] = {}

    # -- paths
    @staticmethod
    def key(payload: Any) -> str:
        return digest(payload)

    def path(self, stage: str, payload: Any) -> Path:
        """Where the finished artifact of ``stage`` for ``payload`` lives (or will live)."""
        return self.root / stage / self.key(payload)

    def partial_path(self, stage: str, payload: Any) -> Path:
        """The working folder of an unfinished stage; kept across interruptions for resuming."""
        final = self.path(stage, payload)
        return final.with_name(final.name + ".partial")

    def exists(self, stage: str, payload: Any) -> bool:
        return (self.path(stage, payload) / META).is_file()

    # -- reading
    def meta(self, folder: Path) -> dict:
        return json.loads((Path(folder) / META).read_text())

    def verify(self, folder: Path) -> dict:
        """The artifact's meta.json after checking every file's size and SHA-256 (once per process
        while the files are unchanged); raises :class:`CorruptArtifact` on a mismatch."""
        folder = Path(folder)
        meta = self.meta(folder)
        files = meta.get("files") if isinstance(meta, dict) else None
        if files is None:
            raise CorruptArtifact(f"{folder}: meta.json lists no files (made by an older trcgl)")
        stamp = tuple(sorted((rel, (folder / rel).stat().st_mtime_ns) for rel in files if (folder / rel).is_file()))
        if self._verified.get(folder) == stamp:
            return meta
        for rel, want in files.items():
            f = folder / rel
            if not f.is_file():
                raise CorruptArtifact(f"{folder}: file {rel} is missing")
            if f.stat().st_size != want["bytes"] or file_sha256(f) != want["sha256"]:
                raise CorruptArtifact(f"{folder}: file {rel} does not match its checksum")
        self._verified[folder] = stamp
        return meta

    def _finished(self, final: Path) -> dict | None:
        """meta.json of a verified finished artifact; None when there is none. A corrupt one is
        moved aside (never deleted) with a warning naming it."""
        if not (final / META).is_file():
            if final.exists():   # a folder without meta.json: not a finished artifact
                self._move_aside(final, "no meta.json")
            return None
        try:
            return self.verify(final)
        except (CorruptArtifact, ValueError, OSError) as err:   # ValueError: a meta.json of bad JSON or bytes
            self._move_aside(final, str(err))
            return None

    def _move_aside(self, final: Path, why: str) -> None:
        aside = final.with_name(f"{final.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
        log.warning("cached artifact %s failed verification (%s); moved to %s and computing it again",
                    final, why, aside.name)
        os.replace(final, aside)
        self._verified.pop(final, None)

    # -- computing
    def get_or_compute(self, stage: str, payload: Any, build: Callable[[Path], None]) -> Path:
        """The artifact folder (see :meth:`fetch`)."""
        return self.fetch(stage, payload, build)[0]

    def fetch(self, stage: str, payload: Any, build: Callable[[Path], None], group=None,
              wait: bool = True) -> tuple[Path, bool]:
        """:meth:`_fetch`, with a full disk or an unusable run folder as one :class:`StorageError`
        (the stage's ``.partial`` folder is kept: the next run resumes from it)."""
        try:
            return self._fetch(stage, payload, build, group, wait)
        except OSError as err:
            problem = storage_problem(err, self.root.parent, self.partial_path(stage, payload))
            if problem is None:
                raise
            raise problem from err

    def _fetch(self, stage: str, payload: Any, build: Callable[[Path], None], group=None,
               wait: bool = True) -> tuple[Path, bool]:
        """The verified artifact folder and whether this call computed it; ``build(folder)`` fills
        it on a miss.

        ``build`` writes its files into the folder it is given (a ``.partial`` folder that may
        already hold checkpoints from an interrupted earlier call). When it returns, the folder
        is sealed with ``meta.json`` (the payload and every file's checksum) and renamed into
        place. A per-key lock makes a second process wait for the first instead of computing
        the same artifact in the same folder; with ``wait=False`` it raises :class:`Busy` instead
        (``run --workers``: the process goes on with other stages). ``group``
        (:class:`trcgl.runtime.Processes` of several processes): they build it together (see the
        module docstring).
        """
        from filelock import FileLock, Timeout

        if group is not None and group.size > 1:
            return self._fetch_together(stage, payload, build, group)
        final = self.path(stage, payload)
        if self._finished(final) is not None:
            self.hits += 1
            log.debug("cache hit: %s/%s", stage, final.name)
            return final, False
        final.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(final.with_name(final.name + ".lock")), timeout=-1 if wait else 0)
        try:
            lock.acquire()
        except Timeout:
            raise Busy(f"{stage}/{final.name}") from None
        try:
            if self._finished(final) is not None:   # another process finished it while we waited
                self.hits += 1
                return final, False
            self.misses += 1
            log.info("cache miss: %s/%s, computing", stage, final.name)
            work = final.with_name(final.name + ".partial")
            work.mkdir(parents=True, exist_ok=True)
            start = time.perf_counter()
            build(work)
            self._seal(stage, payload, final, work, start)
        finally:
            lock.release()
        return final, True

    def _seal(self, stage: str, payload: Any, final: Path, work: Path, start: float) -> None:
        """Checksum the built folder into meta.json and rename it into place (under the lock)."""
        (work / META).unlink(missing_ok=True)    # a stage's own meta.json must not shadow ours
        for tmp in [f for f in work.rglob(".*.tmp") if ATOMIC_TMP.fullmatch(f.name)]:
            tmp.unlink()        # a write killed half way (SIGKILL, power): not part of the artifact
        files = manifest(work)
        meta = {"stage": stage, "key": final.name, "params": payload, "files": files,
                "digest": digest(files), "seconds": round(time.perf_counter() - start, 3),
                "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
        atomic_write_json(work / META, meta)
        os.replace(work, final)   # final does not exist: we hold its lock and found none
        self._verified[final] = tuple(sorted((rel, (final / rel).stat().st_mtime_ns) for rel in files))

    def _fetch_together(self, stage: str, payload: Any, build: Callable[[Path], None], group) -> tuple[Path, bool]:
        """:meth:`fetch` for a stage that the processes of ``group`` build together: the main
        process decides under the lock, every process builds, the main process seals."""
        from filelock import FileLock

        final = self.path(stage, payload)
        work = final.with_name(final.name + ".partial")
        lock, compute = None, False
        try:
            if group.is_main and self._finished(final) is None:
                final.parent.mkdir(parents=True, exist_ok=True)
                lock = FileLock(str(final.with_name(final.name + ".lock")))
                lock.acquire()
                compute = self._finished(final) is None   # another run may have finished it meanwhile
                if compute:
                    work.mkdir(parents=True, exist_ok=True)
            if not group.broadcast_flag(compute):
                self.hits += 1
                return final, False
            self.misses += 1
            if group.is_main:
                log.info("cache miss: %s/%s, computing in %d processes", stage, final.name, group.size)
            start = time.perf_counter()
            build(work)
            group.barrier()                 # every process is done with the folder
            if group.is_main:
                self._seal(stage, payload, final, work, start)
            group.barrier()                 # the artifact is in place for everyone
            return final, True
        finally:
            if lock is not None:
                lock.release()

    # -- housekeeping
    def clear(self, stage: str | None = None) -> int:
        """Delete cached artifacts (of one stage, or all); returns how many finished folders went."""
        base = self.root / stage if stage else self.root
        if not base.exists():
            return 0
        n = sum(1 for _ in base.rglob(META))
        shutil.rmtree(base)
        self._verified.clear()
        return n

    def listing(self) -> list[dict]:
        rows = []
        for meta in sorted(self.root.glob(f"*/*/{META}")):
            size = sum(f.stat().st_size for f in meta.parent.rglob("*") if f.is_file())
            rows.append({"stage": meta.parent.parent.name, "key": meta.parent.name, "bytes": size})
        for part in sorted(self.root.glob("*/*.partial")):
            rows.append({"stage": part.parent.name, "key": part.name, "bytes": None})
        return rows
