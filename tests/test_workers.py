"""`run --workers 2`: a stopped run stops whole, and the next run goes on.

The two processes are held at their first stage by a lock this test takes (as if a third process
were computing the label table), so they stay put while the test signals the main process: SIGTERM
(a scheduler, `kill`) stops the helper through the main process, SIGKILL leaves the helper to
notice on its own (Linux: PR_SET_PDEATHSIG; everywhere: a thread that watches its parent). Either
way the helper leaves as a stopped run does (its output ends with the interrupt), and a following
run computes the target (the lock files the stopped processes used are still there; a stopped
stage's `.partial` folder resuming is tests/test_cache.py's)."""
import os
import shutil
import signal
import subprocess
import sys
import time

import psutil
import pytest
from filelock import FileLock

from .conftest import ROOT

RUN = ["run", "cohort", "--profile", "smoke", "--device", "cpu"]


def _alive(pid):
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _until(condition, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


@pytest.fixture
def held(tmp_path, session_cache, real_table):
    """An empty run folder whose label-table stage is locked by this test (the key the session computed)."""
    key = next(p.name for p in (session_cache.root / "label-table").iterdir() if p.is_dir())
    folder = tmp_path / "cache" / "label-table"
    folder.mkdir(parents=True)
    lock = FileLock(str(folder / f"{key}.lock"))
    lock.acquire()
    yield tmp_path, lock, session_cache.root / "label-table" / key
    lock.release()


def _start(run_dir):
    env = {**os.environ, "TRCGL_RUN_DIR": str(run_dir), "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    return subprocess.Popen([sys.executable, "-m", "trcgl", *RUN, "--workers", "2"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _cmdline(process):
    """A child's command line, or none when it has just exited (a short-lived child, such as one the
    main process ran and has not reaped yet, is a zombie or gone between listing and reading)."""
    try:
        return process.cmdline()
    except (psutil.ZombieProcess, psutil.NoSuchProcess):
        return []


def _helper(main, run_dir):
    """The helper's pid, once it is running its stages (its first line in its log; at most 20 s)."""
    log = run_dir / "logs" / "run-cohort-helper-1.log"
    found = []

    def started():
        if main.poll() is not None:
            return True
        found[:] = [c.pid for c in psutil.Process(main.pid).children() if "--helper" in _cmdline(c)]
        return bool(found) and log.exists() and "helper " in log.read_text()

    _until(started, 20)
    assert main.poll() is None, main.communicate()[0]        # still held at the lock
    assert found, "no helper process"
    return found[0], log


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_a_stopped_main_process_stops_its_helper_and_the_next_run_goes_on(held, how):
    run_dir, lock, table = held
    main = _start(run_dir)
    try:
        helper, log = _helper(main, run_dir)
        main.send_signal(getattr(signal, how))
        out = main.communicate(timeout=30)[0]
        assert _until(lambda: not _alive(helper), 10), f"the helper outlived its main process ({how})"
        assert "trcgl: interrupted (SIGTERM)" in log.read_text()      # it stopped as a stopped run does
        if how == "SIGTERM":            # the main process too, with the code of a process killed by SIGTERM
            assert main.returncode == 128 + signal.SIGTERM and "trcgl: interrupted (SIGTERM)" in out, out
    finally:
        for pid in [main.pid] + ([helper] if "helper" in locals() else []):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    if how == "SIGTERM":
        return
    lock.release()      # the next run (after the harder case only: each run takes seconds)
    shutil.copytree(table, run_dir / "cache" / "label-table" / table.name)     # as if the other process finished
    again = _start(run_dir)
    out = again.communicate(timeout=120)[0]
    assert again.returncode == 0 and "computed cohort/" in out, out


CHILD = """
import sys, time
from trcgl import workers
with workers.stop_on_sigterm():
    try:
        workers.watch_parent(pdeathsig=False, interval=0.2)
        print("ready", flush=True)
        time.sleep(60)
    except workers.Stopped:
        print("stopped", flush=True)
        sys.exit(143)
"""

PARENT = f"""
import os, subprocess, sys
child = subprocess.Popen([sys.executable, "-c", {CHILD!r}], env={{**os.environ, "TRCGL_HELPER_PARENT": str(os.getpid())}})
print(child.pid, flush=True)
sys.exit(child.wait())      # until this process is killed (or the child fails)
"""


def test_without_pdeathsig_a_helper_still_notices_its_parent_is_gone(tmp_path):
    """The portable watch (a thread polling the parent's pid), alone: SIGKILL the parent, the child stops."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    parent = subprocess.Popen([sys.executable, "-c", PARENT], env=env, stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        assert parent.stdout.readline().strip() == "ready"
        parent.kill()
        parent.wait()
        assert _until(lambda: not _alive(child), 5), "the child outlived its parent"
        assert parent.stdout.read().strip() == "stopped"
    finally:
        for pid in (parent.pid, locals().get("child")):
            if pid and _alive(pid):
                os.kill(pid, signal.SIGKILL)
    # a helper whose parent died before it began to watch stops at once
    late = subprocess.run([sys.executable, "-c", CHILD], env={**env, "TRCGL_HELPER_PARENT": str(parent.pid)},
                          capture_output=True, text=True, timeout=30)
    assert late.returncode == 143 and late.stdout.strip() == "stopped", late
