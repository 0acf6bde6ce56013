"""Several worker processes on one machine (``python -m trcgl run TARGET --workers N``, ``make reproduce``).

Two cores run the book's many small stages (the tables' heads on cached features take seconds
each and use a second core poorly) faster as two processes than as one with two threads. The
process the user started walks the target's stages in their order; N - 1 **helpers** (the same
command with ``--helper``) walk them in other orders: the first from the last to the first (so
that the long stages of the last chapters, e.g. the inpainting DiT, start early instead of
leaving one core idle at the end), the others shuffled. All share the cache: a stage is
computed by whichever process takes its lock first, and a process that finds a lock taken goes on
with other stages (:func:`trcgl.views.run`, ``cooperative``) until only taken ones are left. What
is computed does not depend on who computes it: every process uses the configuration's torch
threads (``threads``; the cpu profile: one per process, which on two cores trains about 15 % more
images per second in all than two threads each), so the artifacts are those of a one-process run
with the same configuration.

OpenMP's threads spin while they wait by default, which makes two processes with two threads each
on two cores 10-40 times slower; ``OMP_WAIT_POLICY=PASSIVE`` (set here before torch is imported,
inherited by the helpers) makes them sleep instead. A helper writes its output to a log file under
``<run dir>/logs``; a helper that fails fails the command.

A stopped run stops whole: SIGTERM (a scheduler, ``kill``) and Ctrl-C make the main process leave
through :class:`Helpers`' ``__exit__``, which stops the helpers (:func:`stop_on_sigterm`); a helper
whose main process died without that (SIGKILL, the OOM killer) stops too (:func:`watch_parent`). A
stopped helper leaves as a stopped stage run does: its locks released, its ``.partial`` work folder
kept, so the next run resumes it.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

#: The environment variable that tells a helper which process started it (:func:`watch_parent`).
PARENT_ENV = "TRCGL_HELPER_PARENT"


def prepare(workers: int) -> None:
    """Before torch is imported: let idle OpenMP threads sleep when processes share the cores."""
    if workers > 1:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


class Helpers:
    """The helper processes of one ``run --workers N`` (a context manager: they are stopped if
    the main process leaves early)."""

    #: seconds a helper has to stop after SIGTERM before it is killed
    GRACE = 10

    def __init__(self, command: list[str], n: int, log_dir: Path, target: str):
        self.command, self.n, self.log_dir, self.target = command, n, Path(log_dir), target
        self.procs: list[tuple[subprocess.Popen, Path]] = []

    def __enter__(self) -> "Helpers":
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, PARENT_ENV: str(os.getpid())}
        try:
            for k in range(1, self.n + 1):
                log = self.log_dir / f"run-{self.target}-helper-{k}.log"
                with open(log, "wb") as out:
                    order = ["--reverse"] if k == 1 else ["--shuffle", str(k)]
                    # started from this (main) thread: a helper's PR_SET_PDEATHSIG fires when the
                    # thread that started it ends, which is then the process (watch_parent)
                    proc = subprocess.Popen([sys.executable, "-m", "trcgl", *self.command, "--helper", *order],
                                            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
                self.procs.append((proc, log))
        except BaseException:
            self.__exit__()          # stopped while starting them: the ones started go too
            raise
        return self

    def wait(self) -> list[str]:
        """Wait for every helper; one line per helper that failed."""
        failed = []
        for proc, log in self.procs:
            if proc.wait() != 0:
                failed.append(f"helper process {proc.pid} failed (exit {proc.returncode}); its output: {log}")
        self.procs = []
        return failed

    def __exit__(self, *exc) -> None:
        """Left early (an error, Ctrl-C, SIGTERM): stop the helpers (SIGTERM: each stops as a
        stopped run does, see :func:`stop_on_sigterm`), SIGKILL the ones still there after
        ``GRACE`` seconds. Another Ctrl-C or SIGTERM meanwhile does not cut this short."""
        if not self.procs:
            return
        with _ignoring(signal.SIGINT, signal.SIGTERM):
            for proc, _ in self.procs:
                if proc.poll() is None:
                    proc.terminate()
            for proc, _ in self.procs:
                try:
                    proc.wait(timeout=self.GRACE)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.procs = []


@contextlib.contextmanager
def _ignoring(*signums: int):
    """Ignore these signals inside the block (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in signums}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


class Stopped(KeyboardInterrupt):
    """A stop signal (SIGTERM) turned into an exception, so that ``finally`` blocks and context
    managers run as on Ctrl-C (cache locks released, helpers stopped); the command line then exits
    with 128 + the signal's number (143), as a process killed by it would."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


@contextlib.contextmanager
def stop_on_sigterm():
    """Inside the block, SIGTERM raises :class:`Stopped` in the main thread (Ctrl-C raises
    KeyboardInterrupt anyway). Outside the main thread, or where SIGTERM is ignored, nothing changes."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is signal.SIG_IGN:
        yield
        return

    def stop(signum, frame):
        raise Stopped(signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def watch_parent(pdeathsig: bool = True, interval: float = 1.0) -> int | None:
    """In a helper: stop (SIGTERM to itself) when the main process that started it is gone, even
    when it was killed without a chance to stop its helpers (SIGKILL). On Linux the kernel sends
    the signal (``prctl(PR_SET_PDEATHSIG, SIGTERM)``, when the thread that started the helper
    ends: :class:`Helpers` starts them from the main thread); everywhere a daemon thread checks
    every ``interval`` seconds whether the parent changed. The parent comes from ``PARENT_ENV``
    (set by :class:`Helpers`), so a helper whose parent died before this call stops at once.
    Returns the parent's pid (None: not started as a helper, nothing to watch)."""
    parent = os.environ.pop(PARENT_ENV, None)      # not passed on to the processes this one starts
    if not parent:
        return None
    parent = int(parent)
    if pdeathsig and sys.platform.startswith("linux"):
        _set_pdeathsig(signal.SIGTERM)

    def gone() -> bool:
        return os.getppid() != parent

    def poll() -> None:
        while not gone():
            time.sleep(interval)
        os.kill(os.getpid(), signal.SIGTERM)

    if gone():
        os.kill(os.getpid(), signal.SIGTERM)
    else:
        threading.Thread(target=poll, daemon=True, name="watch-parent").start()
    return parent


def _set_pdeathsig(signum: int) -> bool:
    """``prctl(PR_SET_PDEATHSIG, signum)`` through libc; False where that is not available."""
    import ctypes
    import ctypes.util

    PR_SET_PDEATHSIG = 1
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False
