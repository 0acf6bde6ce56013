"""Several worker processes on one machine (``python -m trcgl run TARGET --workers N``, ``make reproduce``).

Two cores run the book's many small stages (the tables' heads on cached features take seconds
each and use a second core poorly) faster as two processes than as one with two threads. The
process the user started walks the target's stages in their order; N - 1 **helpers** (the same
command with ``--helper``) walk them in other orders: the first from the last to the first (so
that the long stages of the last chapters, e.g. the inpainting DiT, start early instead of
leaving one core idle at the end), the others shuffled. All share the cache: a stage is
computed by whichever process takes its lock first, and a process that finds a lock taken goes on
with other stages (:func:`trcgl.views.run`, ``cooperative``) until only taken ones are left. What
is computed does not depend on who computes it: every process keeps the same torch threads, so
the artifacts are those of a one-process run.

OpenMP's threads spin while they wait by default, which makes two processes with two threads each
on two cores 10-40 times slower; ``OMP_WAIT_POLICY=PASSIVE`` (set here before torch is imported,
inherited by the helpers) makes them sleep instead. A helper writes its output to a log file under
``<run dir>/logs``; a helper that fails fails the command.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def prepare(workers: int) -> None:
    """Before torch is imported: let idle OpenMP threads sleep when processes share the cores."""
    if workers > 1:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


class Helpers:
    """The helper processes of one ``run --workers N`` (a context manager: they are stopped if
    the main process leaves early)."""

    def __init__(self, command: list[str], n: int, log_dir: Path, target: str):
        self.command, self.n, self.log_dir, self.target = command, n, Path(log_dir), target
        self.procs: list[tuple[subprocess.Popen, Path]] = []

    def __enter__(self) -> "Helpers":
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for k in range(1, self.n + 1):
            log = self.log_dir / f"run-{self.target}-helper-{k}.log"
            with open(log, "wb") as out:
                order = ["--reverse"] if k == 1 else ["--shuffle", str(k)]
                proc = subprocess.Popen([sys.executable, "-m", "trcgl", *self.command, "--helper", *order],
                                        stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            self.procs.append((proc, log))
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
        for proc, _ in self.procs:       # left early (an error, ^C): stop the helpers
            proc.terminate()
        for proc, _ in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
