import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory):
    from trcgl.cache import ArtifactCache

    return ArtifactCache(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="session")
def real_table(session_cache):
    """The real PadChest label table (parsed once per test session)."""
    from trcgl import load_config
    from trcgl.graph import Request
    from trcgl.stages import get

    return get(Request("label-table", load_config("smoke")), session_cache)


@pytest.fixture(scope="session")
def paper_cohort(real_table):
    from trcgl.data.padchest import build_cohort

    return build_cohort(real_table, "paper", split_seed=42)


CHAPTERS = [p.stem for p in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))]


class SmokeBook:
    """The smoke book's stages and chapters, computed in a background thread from the moment the
    session knows a test needs them, while the other tests run (the smoke tests are moved to the
    end of the session). As `make reproduce` does: two `python -m trcgl run all` processes at once
    on one empty run folder (the cache's locks must keep them apart, as under `make -j2`; each
    visits the stages in its own order), then every chapter through the CLI, two at a time, all on
    that run folder. Every process runs one torch thread: on two cores, torch's spinning threads
    would otherwise slow everything down many times."""

    def __init__(self, factory):
        self.run_dir = factory.mktemp("smoke-runs")
        self.root = factory.mktemp("smoke-book")
        self.done = threading.Event()
        self.stages = self.chapters = self.error = None
        threading.Thread(target=self._work, daemon=True, name="smoke-book").start()

    def _work(self):
        try:
            self.stages = self._compute_stages()
            self.chapters = self._execute_chapters()
        except BaseException as err:       # re-raised by the fixtures
            self.error = err
        finally:
            self.done.set()

    def _env(self, **extra):
        return {**os.environ, "TRCGL_RUN_DIR": str(self.run_dir), "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1",
                **extra}

    def _compute_stages(self):
        cmd = [sys.executable, "-m", "trcgl", "run", "all", "--profile", "smoke", "--device", "cpu"]
        procs = [subprocess.Popen(cmd + ["--shuffle", str(k)], cwd=ROOT, env=self._env(), stdout=subprocess.DEVNULL,
                                  stderr=open(self.run_dir / f"run{k}.log", "w")) for k in range(2)]
        codes = [p.wait() for p in procs]
        store = self.run_dir / "results-smoke.json"
        from trcgl.cache import ArtifactCache

        artifacts = sorted((r["stage"], r["key"]) for r in ArtifactCache(self.run_dir).listing() if r["bytes"] is not None)
        return self.run_dir, codes, store.read_text() if store.exists() else None, artifacts

    def _execute_chapters(self):
        from concurrent.futures import ThreadPoolExecutor

        from trcgl import book

        root = self.root
        for name in ("_config.yml", "_toc.yml", "pyproject.toml"):
            shutil.copy(ROOT / name, root / name)
        shutil.copytree(ROOT / "book", root / "book", ignore=shutil.ignore_patterns("_generated"))
        (root / "notebooks").mkdir()

        def execute(chapter):
            source = root / "notebooks" / f"{chapter}.py"
            shutil.copy(ROOT / "notebooks" / f"{chapter}.py", source)
            done = subprocess.run([sys.executable, "-m", "trcgl", "execute", str(source), "--profile", "smoke",
                                   "--device", "cpu", "--quiet"], cwd=ROOT, env=self._env(), capture_output=True,
                                  text=True)
            if done.returncode != 0:       # reported by that chapter's test
                return book.BookError(f"{chapter} failed (exit {done.returncode}): {done.stderr[-3000:]}")
            return source.with_suffix(".ipynb")

        with ThreadPoolExecutor(2) as pool:
            return dict(zip(CHAPTERS, pool.map(execute, CHAPTERS)))

    def wait(self):
        self.done.wait()
        if self.error is not None:
            raise self.error
        return self


def _uses_smoke_book(item) -> bool:
    return bool({"smoke_stages", "smoke_book"} & set(getattr(item, "fixturenames", ())))


def pytest_collection_modifyitems(session, config, items):
    """Smoke-book tests run last, and the book starts computing now, in the background; this
    process then uses one torch thread too (three busy processes on two cores)."""
    smoke = [item for item in items if _uses_smoke_book(item)]
    if not smoke:
        return
    items[:] = [item for item in items if not _uses_smoke_book(item)] + smoke
    import torch

    config._threads = (os.environ.get("OMP_NUM_THREADS"), torch.get_num_threads())
    os.environ["OMP_NUM_THREADS"] = "1"        # also for the processes the tests start
    torch.set_num_threads(1)
    config._smoke_book = SmokeBook(config._tmp_path_factory)


def pytest_runtest_setup(item):
    """Once the smoke book is done, the tests get their torch threads back (between two tests, so a
    test never changes its thread count halfway, e.g. between a run and the run it must repeat)."""
    book, threads = getattr(item.config, "_smoke_book", None), getattr(item.config, "_threads", None)
    if book is None or threads is None or not book.done.is_set():
        return
    import torch

    omp, count = threads
    if omp is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = omp
    torch.set_num_threads(count)
    item.config._threads = None


def _smoke(config) -> SmokeBook:
    if getattr(config, "_smoke_book", None) is None:      # e.g. a test selected after collection
        config._smoke_book = SmokeBook(config._tmp_path_factory)
    return config._smoke_book.wait()


@pytest.fixture(scope="session")
def smoke_stages(request):
    """Every stage of the smoke book, computed once per session (:class:`SmokeBook`). Yields
    (run dir, exit codes, the results store's text, the finished artifacts)."""
    return _smoke(request.config).stages


@pytest.fixture(scope="session")
def smoke_book(request, smoke_stages):
    """The whole book at CI scale in a temporary copy: every chapter executed in the smoke profile
    on the stages of `smoke_stages`, then built. Yields (root, {chapter: executed path or the
    exception}, html dir or exception)."""
    from trcgl import book

    smoke = _smoke(request.config)
    try:
        html = book.build(smoke.root, run_dir=smoke.run_dir)
    except Exception as err:
        html = err
    return smoke.root, smoke.chapters, html
