"""The book pipeline: jupytext ``.py`` -> papermill-executed ``.ipynb`` -> Jupyter Book.

Chapters are jupytext percent files ``notebooks/NN_name.py``. :func:`execute` turns one into a
notebook, runs it with papermill (parameters injected after its ``parameters`` cell) and writes
``notebooks/NN_name.ipynb`` only when the run succeeded. :func:`build` refuses to build the
book while an executed notebook is missing or was executed from another version of its source
(:func:`check_fresh`), then
runs ``jupyter-book build`` with ``execute_notebooks: off``, so the book shows papermill's outputs.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Mapping

import yaml

from .cache import atomic_write_json, default_run_dir
from .config import check_notebook_parameters
from .errors import TrcglError

KERNEL = "python3"


class BookError(TrcglError, RuntimeError):
    """The book cannot be built as it stands (stale or failed chapters, a broken toc)."""


def toc_files(root: Path) -> list[str]:
    """Every ``file:`` entry of ``_toc.yml`` (root first), without extension."""
    toc_path = Path(root) / "_toc.yml"
    if not toc_path.is_file():
        raise BookError(f"no _toc.yml in {root}")
    toc = yaml.safe_load(toc_path.read_text())
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key in ("root", "file"):
                if isinstance(node.get(key), str):
                    found.append(node[key])
            for value in node.values():
                if isinstance(value, (list, dict)):
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc)
    return found


def chapter_sources(root: Path) -> list[Path]:
    """The jupytext sources of the notebook chapters listed in the toc, in toc order."""
    root = Path(root)
    return [root / f"{entry}.py" for entry in toc_files(root) if (root / f"{entry}.py").is_file()]


#: The comment that labels papermill's injected-parameters cell in an executed chapter.
INJECTED_LABEL = (
    "# Injected by papermill for this run: these values override the defaults in the cell\n"
    "# above (`python -m trcgl execute CHAPTER -p NAME VALUE`, or `make reproduce PARAMS=...`).\n"
)


def execute(source: Path, parameters: Mapping[str, Any], root: Path | None = None,
            output: Path | None = None, run_dir: Path | None = None, echo: bool = False) -> Path:
    """Execute one chapter with papermill; returns the executed notebook's path.

    The kernel runs with the repository root as working directory and ``TRCGL_RUN_DIR`` set, so
    all chapters share one artifact cache. The wall time is recorded under the run folder
    (``timings.json``) for the reproduce page. On failure the partly executed notebook is kept as
    ``NAME.failed.ipynb`` and the error is raised; a stale ``NAME.ipynb`` is removed so it can
    never pass for a successful run.

    ``echo``: stream the chapter's stdout and stderr (its progress bars) to this terminal while it
    runs; the built page leaves stderr out (``nb_output_stderr: remove`` in ``_config.yml``).
    The notebook is staged in a hidden folder beside the output (``.NAME.staging``), removed when
    the run ends, also on Ctrl-C or SIGTERM, and by the next run after a hard kill.
    """
    import jupytext
    import papermill

    check_notebook_parameters(parameters)
    source = Path(source).resolve()
    root = Path(root).resolve() if root else source.parent.parent
    output = Path(output) if output else source.with_suffix(".ipynb")
    run_dir = Path(run_dir) if run_dir else default_run_dir()
    nb = jupytext.read(source)
    if not any("parameters" in c.get("metadata", {}).get("tags", []) for c in nb.cells):
        raise BookError(f"{source} has no cell tagged 'parameters' (add `# %% tags=[\"parameters\"]`)")
    nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": "Python 3", "language": "python"}
    nb.metadata["trcgl"] = {"source_sha256": source_digest(source)}   # what check_fresh compares
    output.parent.mkdir(parents=True, exist_ok=True)
    failed = output.with_suffix(".failed.ipynb")
    tmp = staging_folder(output)
    shutil.rmtree(tmp, ignore_errors=True)    # left by a run that was killed hard
    tmp.mkdir()
    streams = {"stdout_file": sys.stdout, "stderr_file": sys.stderr} if echo else {}
    try:
        raw = tmp / source.with_suffix(".ipynb").name
        jupytext.write(nb, raw)
        staged = tmp / ("executed-" + raw.name)
        start = time.perf_counter()
        # The kernel inherits this process's environment: one run folder for all chapters, and
        # the inline plotting backend even when the caller set MPLBACKEND=Agg (e.g. pytest).
        # Progress bars update at most every 20 s in a notebook, so the page keeps a few lines of them.
        ledger = Path(tmp) / "ledger.jsonl"
        with _environment(TRCGL_RUN_DIR=str(run_dir), TQDM_MININTERVAL="20", TRCGL_LEDGER=str(ledger),
                          MPLBACKEND="module://matplotlib_inline.backend_inline"), _terminate_as_interrupt():
            try:
                papermill.execute_notebook(
                    str(raw), str(staged), parameters=dict(parameters), kernel_name=KERNEL,
                    cwd=str(root), progress_bar=False, log_output=False, **streams,
                )
            except Exception as err:
                output.unlink(missing_ok=True)
                if staged.exists():
                    os.replace(staged, failed)
                if isinstance(err, papermill.PapermillExecutionError):
                    first = next((line for line in err.source.splitlines() if line.strip()), "")[:70]
                    raise BookError(f"{source.name} failed in the cell beginning `{first}`: {err.ename}: {err.evalue}\n"
                                    f"(the traceback is in the partly executed notebook {failed})") from None
                raise
        seconds = time.perf_counter() - start
        label_injected_parameters(staged)
        _record_provenance(staged, source, parameters, ledger)
        os.replace(staged, output)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    failed.unlink(missing_ok=True)
    _record_timing(run_dir, source.stem, dict(parameters), seconds)
    return output


def _record_provenance(notebook: Path, source: Path, parameters: Mapping[str, Any], ledger: Path) -> None:
    """Write into the executed notebook what it was made from: its source's digest, the profile,
    device and parameters, and every stage artifact it loaded (stage, key, content digest)."""
    from .runtime import select_device

    entries = [json.loads(line) for line in ledger.read_text().splitlines()] if ledger.exists() else []
    stages = sorted({(e["stage"], e["key"], e["digest"]) for e in entries})
    nb = json.loads(notebook.read_text())
    nb.setdefault("metadata", {})["trcgl"] = {
        "source_sha256": source_digest(source), "profile": str(parameters.get("profile")),
        "device": select_device(str(parameters.get("device") or "auto")).type,
        "parameters": {k: v for k, v in parameters.items() if k not in ("profile", "device")},
        "stages": [{"stage": s, "key": k, "digest": d} for s, k, d in stages],
    }
    notebook.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def staging_folder(output: Path) -> Path:
    """Where :func:`execute` stages a chapter's notebooks while it runs (hidden, beside the output)."""
    output = Path(output)
    return output.with_name(f".{output.stem}.staging")


def label_injected_parameters(path: Path) -> None:
    """Mark papermill's injected-parameters cell, on the page, as this run's parameters."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if "injected-parameters" in cell.metadata.get("tags", []):
            body = cell.source.split("\n", 1)[1] if cell.source.startswith("# Parameters") else cell.source
            cell.source = INJECTED_LABEL + body.lstrip("\n")
    nbformat.write(nb, path)


@contextlib.contextmanager
def _terminate_as_interrupt():
    """SIGTERM (``kill``, a CI timeout) raises KeyboardInterrupt, so the kernel is shut down and
    the staging folder removed as on Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _environment(**values: str):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def _timings(run_dir: Path):
    """``timings.json`` of a run folder, read and written back under a file lock (chapters and
    stage runs of ``make -j2`` record their times at once)."""
    from filelock import FileLock

    path = Path(run_dir) / "timings.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        data = json.loads(path.read_text()) if path.exists() else {}
        yield data
        atomic_write_json(path, data)


def _record_timing(run_dir: Path, chapter: str, parameters: dict, seconds: float) -> None:
    with _timings(run_dir) as data:
        _timing_entry(data, chapter, parameters, seconds)


def _timing_entry(data: dict, chapter: str, parameters: dict, seconds: float) -> None:
    profile = str(parameters.get("profile", "?"))
    before = data.setdefault(profile, {}).get(chapter, {})
    same = before.get("parameters") == parameters
    data[profile][chapter] = {
        "seconds": round(seconds, 2), "parameters": parameters,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        # the slowest run with these parameters: the one that computed what later runs load from the cache
        "slowest_seconds": round(max(seconds, before.get("slowest_seconds", 0.0) if same else 0.0), 2),
        "machine": machine_description(),
    }


def record_stage_timing(run_dir: Path, profile: str, target: str, ledger, wall: float | None = None,
                        workers: int = 1) -> None:
    """Record what a ``run`` of stages cost: per stage, how many were computed now and in how many
    seconds, and the cold cost (each resolved artifact's own build time, whenever it was built);
    the run's wall-clock time and its number of worker processes (``run --workers``: stages
    computed side by side, so their seconds add up to more than the wall-clock time)."""
    from .cache import ArtifactCache

    cache, per = ArtifactCache(run_dir), {}
    for e in {(e.stage, e.key): e for e in ledger}.values():
        meta = cache.meta(cache.root / e.stage / e.key)
        row = per.setdefault(e.stage, {"artifacts": 0, "computed": 0, "seconds now": 0.0, "cold seconds": 0.0})
        row["artifacts"] += 1
        row["cold seconds"] += float(meta.get("seconds") or 0.0)
        if e.computed or (workers > 1 and float(meta.get("seconds") or 0.0) and _built_since(meta, wall)):
            row["computed"] += 1
            row["seconds now"] += e.seconds if e.computed else float(meta["seconds"])
    with _timings(run_dir) as data:
        data.setdefault(profile, {})["stages"] = {"target": target, "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
                                                  "machine": machine_description(), "per stage": per,
                                                  "wall seconds": None if wall is None else round(wall, 1),
                                                  "workers": workers}


def _built_since(meta: dict, wall: float | None) -> bool:
    """Whether an artifact was finished within the last ``wall`` seconds (by a helper process of
    this run, ``run --workers``)."""
    if wall is None or "finished" not in meta:
        return False
    finished = time.mktime(time.strptime(meta["finished"], "%Y-%m-%d %H:%M:%S"))
    return time.time() - finished <= wall + 1


def machine_description() -> str:
    """"2 CPU cores, x86_64" (and the GPU when torch sees one)."""
    import platform

    text = f"{os.cpu_count()} CPU cores, {platform.machine()}"
    try:
        import torch

        if torch.cuda.is_available():
            text += f", {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    return text


def timings_markdown(run_dir: Path | None = None) -> str:
    """The measured chapter times of ``runs/timings.json`` as Markdown tables, one per profile."""
    path = Path(run_dir or default_run_dir()) / "timings.json"
    if not path.exists():
        return "*No chapter has been executed on the machine that built this book yet.*\n"
    data = json.loads(path.read_text())
    out = []
    for profile in sorted(data):
        rows = {k: v for k, v in data[profile].items() if k != "stages"}
        stages = data[profile].get("stages")
        out.append(f"**Profile `{profile}`**\n")
        if stages:
            per = stages["per stage"]
            wall, workers = stages.get("wall seconds"), stages.get("workers", 1)
            took = "" if wall is None else (f"; the run took **{wall:.0f} s** ({wall / 60:.1f} min) wall-clock with "
                                            f"{workers} worker process{'es' if workers > 1 else ''}")
            out.append(f"Stages (`python -m trcgl run {stages['target']}`, finished {stages['finished']}, "
                       f"{stages['machine']}{took}): the cold cost is each artifact's own build time, whenever it "
                       f"was built{' (side by side with ' + str(workers) + ' workers: the seconds add up to more than the wall-clock time)' if workers > 1 else ''}.\n")
            out.append("| stage | artifacts | computed in the last run | seconds in the last run | cold cost (s) |")
            out.append("|---|---:|---:|---:|---:|")
            for name in sorted(per):
                r = per[name]
                out.append(f"| {name} | {r['artifacts']} | {r['computed']} | {r['seconds now']:.0f} | {r['cold seconds']:.0f} |")
            out.append(f"| **all stages** | {sum(r['artifacts'] for r in per.values())} | "
                       f"{sum(r['computed'] for r in per.values())} | **{sum(r['seconds now'] for r in per.values()):.0f}** | "
                       f"**{sum(r['cold seconds'] for r in per.values()):.0f}** |\n")
        if not rows:
            continue
        out.append("| chapter | last run (s) | slowest run (s) | finished | machine | parameters |")
        out.append("|---|---:|---:|---|---|---|")
        for chapter in sorted(rows):
            r = rows[chapter]
            extra = {k: v for k, v in r["parameters"].items() if k not in ("profile", "device")}
            params = ", ".join(f"{k}={v}" for k, v in extra.items()) or "defaults"
            out.append(f"| {chapter} | {r['seconds']:.0f} | {r.get('slowest_seconds', r['seconds']):.0f} | {r['finished']} | "
                       f"{r.get('machine', '?')} | {params} (device {r['parameters'].get('device', 'auto')}) |")
        total = sum(r["seconds"] for r in rows.values())
        slow = sum(r.get("slowest_seconds", r["seconds"]) for r in rows.values())
        out.append(f"| **all chapters** | **{total:.0f}** | **{slow:.0f}** | | | |\n")
    return "\n".join(out) + "\n"


TIMINGS_PAGE = Path("book") / "_generated" / "timings.md"


def write_timings_page(root: Path, run_dir: Path | None = None) -> Path:
    """Write the measured times into the file the reproduce page includes."""
    path = Path(root) / TIMINGS_PAGE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(timings_markdown(run_dir))
    return path


def source_digest(source: Path) -> str:
    """SHA-256 of a chapter's source text (recorded in the executed notebook's metadata)."""
    import hashlib

    return hashlib.sha256(Path(source).read_bytes()).hexdigest()


def check_fresh(root: Path, run_dir: Path | None = None) -> list[Path]:
    """Raise :class:`BookError` unless every chapter's executed notebook exists, was executed
    from the ``.py`` source as it is now (the source hash recorded at execution; notebooks
    without one are judged by modification time), finished without an error, shows stage
    artifacts that are still the current ones (:func:`stale_stages`), and all chapters ran with
    the same profile and device. Returns the executed notebooks."""
    problems, executed, runs = [], [], {}
    for source in chapter_sources(root):
        nb_path = source.with_suffix(".ipynb")
        if not nb_path.exists():
            problems.append(f"{nb_path.name}: not executed")
            continue
        metadata = json.loads(nb_path.read_text()).get("metadata", {})
        recorded = metadata.get("trcgl", {})
        if recorded.get("source_sha256") is not None and recorded["source_sha256"] != source_digest(source):
            problems.append(f"{nb_path.name}: executed from another version of {source.name} (stale outputs)")
        elif recorded.get("source_sha256") is None and nb_path.stat().st_mtime < source.stat().st_mtime:
            problems.append(f"{nb_path.name}: older than {source.name} (stale outputs)")
        elif metadata.get("papermill", {}).get("exception"):
            problems.append(f"{nb_path.name}: its papermill run raised an exception")
        else:
            stale = stale_stages(source.stem, recorded, run_dir)
            if stale:
                problems.append(f"{nb_path.name}: {stale}")
            executed.append(nb_path)
            if "profile" in recorded:
                runs[nb_path.name] = (recorded["profile"], recorded.get("device"))
    if len(set(runs.values())) > 1:
        problems.append("the chapters ran with different profiles or devices: "
                        + ", ".join(f"{n} ({p}, {d})" for n, (p, d) in sorted(runs.items())))
    if problems:
        raise BookError(
            "cannot build the book from stale or missing chapter outputs:\n  "
            + "\n  ".join(problems)
            + "\nrun `make reproduce` (or `python -m trcgl execute notebooks/NAME.py`) first"
        )
    return executed


def stale_stages(chapter: str, recorded: Mapping[str, Any], run_dir: Path | None = None) -> str | None:
    """Why a chapter's stage results are out of date, or None. The chapter's stage requests (its
    view's ``needs``, with the profile, device and parameters it ran with) are resolved without
    computing anything: every one must still be in the cache, and be the artifact the chapter
    loaded when it ran. A code change in a stage's modules, a changed upstream artifact or a
    removed cache entry makes it stale."""
    from . import views
    from .cache import ArtifactCache
    from .config import load_config
    from .graph import Missing, Runner

    if chapter not in views.CHAPTER_VIEWS or "stages" not in recorded:
        return None
    cfg = load_config(recorded.get("profile", "cpu"), device=recorded.get("device"), **recorded.get("parameters", {}))
    shown = {(e["stage"], e["key"], e["digest"]) for e in recorded["stages"]}
    runner = Runner(ArtifactCache(run_dir), dry=True)
    try:
        for req in views.chapter_needs(chapter, cfg):
            art = runner.resolve(req)
            if (art.stage, art.key, art.digest) not in shown:
                return f"stage {art.stage}/{art.key} is not the one this chapter showed: re-execute it"
    except Missing as err:
        return f"its stage results changed since it ran ({err}): re-execute it"
    return None


def _jupyter_book() -> Path:
    exe = Path(sys.executable).parent / "jupyter-book"
    found = exe if exe.exists() else shutil.which("jupyter-book")
    if not found:
        raise BookError("jupyter-book is not installed in this environment; run `make install`")
    return Path(found)


#: Written by :func:`build` after every build that succeeded, beside the HTML folder
#: (``OUTPUT/_build/.book-built``). The Makefile's book and browser-check targets follow it: Sphinx
#: leaves a page whose source did not change (the index) untouched, so the pages' modification times
#: cannot tell a new build from an old one.
BUILD_STAMP = Path("_build") / ".book-built"


def write_build_stamp(out: Path, html: Path, notebooks: list[Path]) -> Path:
    """Record a finished build in ``out/_build/.book-built`` (a new file each time, so its
    modification time is the build's): when, where the HTML went, from which executed chapters."""
    stamp = Path(out) / BUILD_STAMP
    stamp.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(stamp, {"built": time.strftime("%Y-%m-%d %H:%M:%S"), "html": str(html),
                              "notebooks": sorted(str(p.name) for p in notebooks)})
    return stamp


def build(root: Path, output: Path | None = None, strict: bool = True, run_dir: Path | None = None) -> Path:
    """Check freshness, write the measured chapter times for the reproduce page, then
    ``jupyter-book build``; returns the HTML folder (``OUTPUT/_build/html``, by default
    ``ROOT/_build/html``). The build stamp (:data:`BUILD_STAMP`) is removed first and written
    again only when the build succeeded."""
    root = Path(root).resolve()
    out = Path(output).resolve() if output else root
    stamp = out / BUILD_STAMP
    stamp.unlink(missing_ok=True)      # a failed or interrupted build leaves none: `make book` builds again
    executed = check_fresh(root, run_dir)
    write_timings_page(root, run_dir)
    cmd = [str(_jupyter_book()), "build", str(root), "--builder", "html"]
    if output:
        cmd += ["--path-output", str(out)]
    if strict:
        cmd += ["-W", "-n", "--keep-going"]
    result = subprocess.run(cmd, cwd=root)
    if result.returncode != 0:
        raise BookError(f"jupyter-book build failed (exit {result.returncode}); see the log above")
    html = out / "_build" / "html"      # jupyter-book writes into <path-output>/_build/html
    write_build_stamp(out, html, executed)
    return html
