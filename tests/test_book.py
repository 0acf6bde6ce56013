"""End to end: a chapter executed by papermill, then the book built from it."""
import os
import re
import shutil

import pytest

from trcgl import book

from .conftest import CHAPTERS


@pytest.fixture
def mini_book(tmp_path, repo_root):
    """The real book sources, with a toc reduced to the overview and the prose pages."""
    for name in ("_config.yml", "pyproject.toml"):
        shutil.copy(repo_root / name, tmp_path / name)
    shutil.copytree(repo_root / "book", tmp_path / "book")
    (tmp_path / "notebooks").mkdir()
    shutil.copy(repo_root / "notebooks" / "00_overview.py", tmp_path / "notebooks")
    (tmp_path / "_toc.yml").write_text(
        "format: jb-book\nroot: book/intro\nchapters:\n  - file: notebooks/00_overview\n  - file: book/reproduce\n"
        "  - file: book/glossary\n  - file: book/bibliography\n"
    )
    return tmp_path


@pytest.mark.slow
def test_overview_executes_and_the_book_shows_its_figure(mini_book, tmp_path_factory):
    source = mini_book / "notebooks" / "00_overview.py"
    with pytest.raises(book.BookError, match="not executed"):
        book.check_fresh(mini_book)
    run_dir = tmp_path_factory.mktemp("runs")
    executed = book.execute(source, {"profile": "smoke", "device": "cpu"}, root=mini_book, run_dir=run_dir)
    assert executed == source.with_suffix(".ipynb")
    assert "smoke" in (run_dir / "timings.json").read_text()
    text = executed.read_text()
    assert '"profile": "smoke"' in text  # papermill injected the parameter
    assert "image/png" in text

    html_dir = book.build(mini_book, output=mini_book / "out")
    page = (html_dir / "notebooks" / "00_overview.html").read_text()
    images = re.findall(r'<img[^>]+src="([^"]+\.png)"', page)
    assert images, "the overview page shows no figure"
    assert all((html_dir / "notebooks" / src).resolve().is_file() for src in images)
    assert "Traceback" not in page

    # stale-output guard: editing the source after execution blocks the build, even when the
    # edit keeps an older modification time (a checkout, or an edit while the chapter ran)
    assert book.source_digest(source) in text
    stamp = executed.stat().st_mtime - 60
    source.write_text(source.read_text() + "\n# an edit after execution\n")
    os.utime(source, (stamp, stamp))
    with pytest.raises(book.BookError, match="another version"):
        book.build(mini_book, output=mini_book / "out")


def test_a_chapter_without_a_parameters_cell_is_refused(tmp_path):
    source = tmp_path / "notebooks" / "01_x.py"
    source.parent.mkdir()
    source.write_text("# %%\nprint('hi')\n")
    with pytest.raises(book.BookError, match="no cell tagged 'parameters'"):
        book.execute(source, {"profile": "smoke"}, root=tmp_path, run_dir=tmp_path / "runs")




@pytest.mark.slow
@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_executes_in_the_smoke_profile(chapter, smoke_book):
    """Every chapter runs end to end at CI scale and shows at least one figure, no error output."""
    import json

    _, results, _ = smoke_book
    out = results[chapter]
    if isinstance(out, Exception):
        raise out
    nb = json.loads(out.read_text())
    outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "no figure"


@pytest.mark.slow
def test_the_smoke_book_builds_with_measured_times(smoke_book):
    _, results, html = smoke_book
    if isinstance(html, Exception):
        raise html
    page = (html / "book" / "reproduce.html").read_text()
    assert "Profile" in page and "smoke" in page and "all chapters" in page
    for chapter in CHAPTERS:
        assert f"{chapter}" in page, f"{chapter} has no measured time on the reproduce page"


TINY_CHAPTER = '''# %% tags=["parameters"]
profile = "smoke"
device = "cpu"

# %%
import os, time
from tqdm import tqdm
for i in tqdm(range(3), desc="counting"):
    time.sleep(0.1)
print("finished counting in", profile)
time.sleep(float(os.environ.get("TINY_SLEEP", "0")))
'''


def _tiny(tmp_path):
    import subprocess
    import sys

    source = tmp_path / "notebooks" / "09_tiny.py"
    source.parent.mkdir()
    source.write_text(TINY_CHAPTER)

    def start(**env):
        return subprocess.Popen([sys.executable, "-m", "trcgl", "execute", str(source), "--profile", "smoke"],
                                cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, "TRCGL_RUN_DIR": str(tmp_path / "runs"), **env})
    return source, start


def test_a_chapter_run_streams_progress_labels_its_parameters_and_cleans_up(tmp_path):
    source, start = _tiny(tmp_path)
    leftover = book.staging_folder(source.with_suffix(".ipynb"))
    leftover.mkdir()
    (leftover / "09_tiny.ipynb").write_text("{}")            # as a hard-killed run leaves it
    proc = start()
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert "counting: 100%" in out and "3/3" in out           # the terminal shows the progress bar
    assert "finished counting in smoke" in out
    assert not leftover.exists() and sorted(p.name for p in source.parent.iterdir()) == ["09_tiny.ipynb", "09_tiny.py"]
    import nbformat

    nb = nbformat.read(source.with_suffix(".ipynb"), as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and injected[0].source.startswith(book.INJECTED_LABEL)
    assert 'profile = "smoke"' in injected[0].source


def test_a_killed_chapter_run_leaves_no_staging_folder(tmp_path):
    import signal
    import time

    source, start = _tiny(tmp_path)
    staging = book.staging_folder(source.with_suffix(".ipynb"))
    proc = start(TINY_SLEEP="120")
    deadline = time.time() + 90
    while not any(staging.glob("executed-*")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)                                    # papermill has started writing its output
    time.sleep(2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "trcgl: interrupted" in out
    assert not staging.exists() and not source.with_suffix(".ipynb").exists()


@pytest.mark.slow
def test_two_parallel_stage_runs_agree_and_the_chapters_only_load(smoke_stages, smoke_book):
    """`make -j2` from an empty cache: both processes finish, and a later sequential run finds
    everything cached and publishes the very same results store; the chapters computed nothing."""
    import json
    import subprocess
    import sys

    run_dir, codes, store, artifacts = smoke_stages
    assert codes == [0, 0], [(run_dir / f"run{k}.log").read_text()[-2000:] for k in range(2)]
    env = {**os.environ, "TRCGL_RUN_DIR": str(run_dir)}
    out = subprocess.run([sys.executable, "-m", "trcgl", "run", "all", "--profile", "smoke", "--device", "cpu"],
                         cwd=repo_root_path(), env=env, capture_output=True, text=True, check=True)
    assert " 0 stage(s) computed" in out.stdout, out.stdout
    assert (run_dir / "results-smoke.json").read_text() == store
    records = json.loads(store)["records"]
    assert records and {r["split"] for r in records} == {"test"}
    _, results, _ = smoke_book
    from trcgl.cache import ArtifactCache

    after = sorted((r["stage"], r["key"]) for r in ArtifactCache(run_dir).listing() if r["bytes"] is not None)
    assert after == artifacts, set(after) ^ set(artifacts)      # the chapters only loaded
    for nb in results.values():
        if isinstance(nb, Exception):
            continue
        meta = json.loads(nb.read_text())["metadata"]["trcgl"]
        assert meta["profile"] == "smoke" and meta["device"] == "cpu"


@pytest.mark.slow
def test_table_f1_is_scored_at_thresholds_each_run_chose_on_the_selection_split(smoke_stages):
    """The smoke run's components table: each (row, seed) scores F1 on the test split at the
    per-class thresholds that maximise F1 on its own selection probabilities (scikit-learn's F1)."""
    import numpy as np
    from sklearn.metrics import f1_score

    from trcgl import load_config
    from trcgl import stages as S
    from trcgl.cache import ArtifactCache
    from trcgl.metrics import best_f1_thresholds

    cache = ArtifactCache(smoke_stages[0])
    cfg = load_config("smoke", device="cpu")
    assert cfg.eval.f1_thresholds == "selection"
    result = S.table_result(cfg, "components", cache=cache)
    test, select = S.get(S.test_set(cfg), cache), S.get(S.selection_set(cfg), cache)
    seen = 0
    for (row, seed), run in result.runs.items():
        chosen = best_f1_thresholds(select.Y, S.get(run, cache).selection_probs)
        assert np.array_equal(result.thresholds[(row, seed)], chosen)
        P = result.probs[(row, seed)]
        per_class = [f1_score(test.Y[:, c], P[:, c] >= chosen[c], zero_division=0)
                     for c in range(test.Y.shape[1]) if test.Y[:, c].any()]
        value = next(r["value"] for r in result.records if r["kind"] == "seed" and r["row"] == row
                     and r["seed"] == seed and r["metric"] == "macro-F1")
        assert value == pytest.approx(np.mean(per_class), abs=1e-6), (row, seed)
        seen += 1
    assert seen == 3 * len(cfg.seeds)


def test_every_arm_of_the_synthetic_claim_gets_the_budget_asked_before_the_filter(smoke_stages):
    """The smoke run's controls: the generator is asked for budget_multiple x each tail class's
    training positives; the unfiltered set, the oversampled real rows, the shuffled set, the
    ideal generator and its lesion-free twin (the negative control) hold exactly that many images of each class at the synthetic weight; the
    ideal generator at the filter's count renders the kept label sets; the ideal generator's
    label sets are the very rows asked of the generator."""
    import numpy as np

    from trcgl import load_config
    from trcgl import stages as S
    from trcgl.cache import ArtifactCache
    from trcgl.diffusion.generate import target_classes

    cache = ArtifactCache(smoke_stages[0])
    cfg = load_config("smoke", device="cpu")
    train, cohort = S.get(S.train_set(cfg), cache), S.get(S.cohort(cfg), cache)
    targets = target_classes(cfg, cohort.groups)
    asked = np.round(cfg.diffusion.budget_multiple * train.Y[:, targets].sum(0)).clip(1).astype(int)
    res = S.get(S.synthetic_set(cfg), cache)
    assert res.plan.groupby("target_id", sort=False).size().reindex(targets).tolist() == asked.tolist()

    def per_target(s):
        return s.rows["target_id"].value_counts().reindex(targets, fill_value=0).tolist()

    arms = {k: S.get(S.control_set(cfg, k), cache) for k in ("unfiltered", "oversampled", "shuffled")}
    ideal = S.get(S.ideal_set(cfg), cache)
    null = S.get(S.ideal_set(cfg, lesions=False), cache)
    for name, s in {**arms, "ideal": ideal, "null": null}.items():
        assert len(s) == asked.sum(), name
        assert np.allclose(s.weights, cfg.diffusion.synthetic_weight), name
    assert per_target(arms["unfiltered"]) == per_target(ideal) == asked.tolist()
    assert (arms["oversampled"].Y[:, targets].sum(0) >= asked).all()       # real rows of each class, cycled
    assert np.array_equal(ideal.Y, arms["unfiltered"].Y)                    # the same label sets, rendered
    assert np.array_equal(null.Y, ideal.Y) and not np.array_equal(null.images, ideal.images)   # lesions left out
    assert np.unpackbits(null.masks_packed, axis=-1)[:, targets].sum() == 0
    bare = S.get(S.unlabelled_set(cfg), cache)                              # the same images, no tail labels
    others = np.setdiff1d(np.arange(len(cohort.class_set.classes)), targets)
    assert np.array_equal(bare.images, null.images) and bare.Y[:, targets].sum() == 0
    assert np.array_equal(bare.Y[:, others], null.Y[:, others]) and np.allclose(bare.weights, null.weights)
    assert not np.array_equal(arms["shuffled"].Y, arms["unfiltered"].Y)
    kept = S.get(S.control_set(cfg, "ideal-kept"), cache)
    assert np.array_equal(kept.Y, res.kept.Y) and len(kept) == int(res.plan["kept"].sum())
    doubled = S.get(S.ideal_set(cfg, 2.0), cache)
    assert len(doubled) == np.maximum(np.round(2 * cfg.diffusion.budget_multiple * train.Y[:, targets].sum(0)),
                                      1).sum()


def repo_root_path():
    from .conftest import ROOT

    return ROOT


@pytest.mark.slow
def test_a_changed_stage_or_a_mixed_profile_makes_the_book_stale(smoke_book, smoke_stages, tmp_path, monkeypatch):
    import json

    root, results, html = smoke_book
    if isinstance(html, Exception):
        raise html
    copy = tmp_path / "book"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("_build"))
    run_dir = smoke_stages[0]
    assert len(book.check_fresh(copy, run_dir)) == len(CHAPTERS)
    # the code of a stage's modules changes: every chapter that shows it is stale
    real = book_code_digest()
    monkeypatch.setattr("trcgl.graph.code_digest", lambda modules: real(modules) + ("x" if "trcgl.train" in modules else ""))
    with pytest.raises(book.BookError, match="05_main_results.ipynb: its stage results changed"):
        book.check_fresh(copy, run_dir)
    monkeypatch.undo()
    # one chapter executed with another profile
    nb = copy / "notebooks" / "00_overview.ipynb"
    data = json.loads(nb.read_text())
    data["metadata"]["trcgl"]["profile"] = "cpu"
    nb.write_text(json.dumps(data))
    with pytest.raises(book.BookError, match="different profiles or devices"):
        book.check_fresh(copy, run_dir)


def book_code_digest():
    from trcgl.graph import code_digest

    return code_digest
