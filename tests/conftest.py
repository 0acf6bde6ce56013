import os
import shutil
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


@pytest.fixture(scope="session")
def smoke_stages(tmp_path_factory):
    """Every stage of the smoke book computed once per test session, as `make reproduce` does
    before the chapters: two `python -m trcgl run all` processes at once on one empty run folder
    (the cache's locks must keep them apart, as under `make -j2`). Yields (run dir, exit codes,
    the results store's text, the finished artifacts)."""
    import subprocess
    import sys

    run_dir = tmp_path_factory.mktemp("smoke-runs")
    # two processes on a 2-core machine: one thread each, or torch's spinning threads slow both ~10x
    env = {**os.environ, "TRCGL_RUN_DIR": str(run_dir), "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "trcgl", "run", "all", "--profile", "smoke", "--device", "cpu"]
    procs = [subprocess.Popen(cmd + ["--shuffle", str(k)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=open(run_dir / f"run{k}.log", "w")) for k in range(2)]
    codes = [p.wait() for p in procs]
    store = run_dir / "results-smoke.json"
    from trcgl.cache import ArtifactCache

    artifacts = sorted((r["stage"], r["key"]) for r in ArtifactCache(run_dir).listing() if r["bytes"] is not None)
    return run_dir, codes, store.read_text() if store.exists() else None, artifacts


@pytest.fixture(scope="session")
def smoke_book(tmp_path_factory, smoke_stages):
    """The whole book at CI scale in a temporary copy: every chapter executed in the smoke
    profile on the stages computed by `smoke_stages` (one shared run folder, as in `make
    reproduce`), then built. Yields (root, {chapter: executed path or the exception}, html dir
    or exception)."""
    from trcgl import book

    import subprocess
    import sys
    from concurrent.futures import ThreadPoolExecutor

    root = tmp_path_factory.mktemp("smoke-book")
    for name in ("_config.yml", "_toc.yml", "pyproject.toml"):
        shutil.copy(ROOT / name, root / name)
    shutil.copytree(ROOT / "book", root / "book", ignore=shutil.ignore_patterns("_generated"))
    (root / "notebooks").mkdir()
    run_dir = smoke_stages[0]
    # two chapters at a time, as `make -j2 reproduce` runs them: each through the CLI in its own
    # process (one thread each on two cores), all on the one run folder
    env = {**os.environ, "TRCGL_RUN_DIR": str(run_dir), "OMP_NUM_THREADS": "1"}

    def execute(chapter):
        source = root / "notebooks" / f"{chapter}.py"
        shutil.copy(ROOT / "notebooks" / f"{chapter}.py", source)
        done = subprocess.run([sys.executable, "-m", "trcgl", "execute", str(source), "--profile", "smoke",
                               "--device", "cpu", "--quiet"], cwd=ROOT, env=env, capture_output=True, text=True)
        if done.returncode != 0:       # reported by that chapter's test
            return book.BookError(f"{chapter} failed (exit {done.returncode}): {done.stderr[-3000:]}")
        return source.with_suffix(".ipynb")

    with ThreadPoolExecutor(2) as pool:
        results = dict(zip(CHAPTERS, pool.map(execute, CHAPTERS)))
    try:
        html = book.build(root, run_dir=run_dir)
    except Exception as err:
        html = err
    return root, results, html
