"""A table of bad inputs a new user tries: each ends in one line on stderr that names the
offending value, exit code 2 and no traceback, or in a counted, logged skip.

Most cases run the command line in this process (``trcgl.cli.main``, exactly what
``python -m trcgl`` runs); a few run it as a real process; the failures of library calls a chapter
makes (a pipeline folder, a text encoder folder) go through ``trcgl.cli.guarded``, the same
wrapper ``main`` uses. Bad checkpoint files (a text file, a truncated file, a bare tensor) are
not in this table: they belong with the checkpoint loaders of trcgl/models, which are being
replaced by timm's.
"""
import errno
import gzip
import logging
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from trcgl import cli
from trcgl.data.padchest import shipped_table_path

from .conftest import ROOT

OVERVIEW = str(ROOT / "notebooks" / "00_overview.py")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Bad label tables and folders, made once."""
    d = tmp_path_factory.mktemp("bad-inputs")
    (d / "empty.csv").write_text("")
    (d / "truncated.csv.gz").write_bytes(shipped_table_path().read_bytes()[:4000])
    (d / "binary.csv").write_bytes(bytes(range(256)) * 40)
    (d / "not-gzip.csv.gz").write_text("ImageID,Labels\nx,['a']\n")
    header = "ImageID,ImageDir,PatientID,Projection,Labels\n"
    (d / "no-projection.csv").write_text("ImageID,ImageDir,PatientID,Labels\na.png,0,1,\"['normal']\"\n")
    (d / "no-usable-row.csv").write_text(header + "a.png,0,1,PA,\"['normal'\"\nb.png,0,2,PA,\n")
    rows = "".join(f"{i}.png,0,{i},L,\"['normal']\"\n" for i in range(40))
    (d / "lateral-only.csv").write_text(header + rows)
    (d / "header-only.csv").write_text(header)
    with gzip.open(d / "lateral-only.csv.gz", "wt") as fh:
        fh.write(header + rows)
    (d / "images-empty").mkdir()
    hollow = d / "hollow-pipeline"
    hollow.mkdir()
    (hollow / "model_index.json").write_text('{"_class_name": "PromptDiffusionPipeline"}')
    for name in ("unet", "vae", "scheduler", "text_encoder", "tokenizer", "context"):
        (hollow / name).mkdir()
    return d


@pytest.fixture
def run_dir(session_cache, monkeypatch):
    """Commands use the session's run folder (the label table is parsed once per session)."""
    monkeypatch.setenv("TRCGL_RUN_DIR", str(session_cache.root.parent))
    monkeypatch.delenv("PADCHEST_ROOT", raising=False)
    return session_cache.root.parent


def _assert_one_clean_line(rc, err, expected):
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert rc == 2, err
    assert "Traceback" not in err
    assert lines and "error:" in lines[-1] and expected in lines[-1], err
    assert sum("error:" in line for line in lines) == 1


def main_in_process(argv, capsys):
    try:
        rc = cli.main(argv)
    except SystemExit as exit_:            # argparse usage errors
        rc = exit_.code
    return rc, capsys.readouterr().err


S = ("config", "--profile", "smoke", "--set")
X = ("execute", OVERVIEW, "--profile", "smoke", "-p")
CSV = ("check-data", "--profile", "smoke", "--set")

# (id, argv with {d} for the fixture folder, text the one error line must contain)
CLI_CASES = [
    ("yaml-unclosed-list", [*S, "data.image_size=[1"], "not valid YAML: '[1'"),
    ("yaml-in-parameter", [*X, "seeds", "[0, 1"], "not valid YAML: '[0, 1'"),
    ("no-equals", [*S, "data.image_size"], "expected KEY=VALUE, got 'data.image_size'"),
    ("unknown-key", [*S, "data.imagesize=3"], "unknown config key 'data.imagesize'"),
    ("section-as-value", [*S, "data=3"], "config key 'data' is a section; got 3"),
    ("wrong-type", [*S, "data.image_size=big"], "got 'big'"),
    ("image-size-0", [*S, "data.image_size=0"], "data.image_size must be >= 8 and <= 1024; got 0"),
    ("image-size-huge", [*S, "data.image_size=100000"], "data.image_size must be >= 8 and <= 1024; got 100000"),
    ("difficulty-inf", [*S, "phantom.difficulty=.inf"], "phantom.difficulty must be a finite number > 0; got inf"),
    ("difficulty-nan-parameter", [*X, "difficulty", ".nan"], "phantom.difficulty must be a finite number > 0; got nan"),
    ("n-train-negative", [*X, "n_train", "-5"], "data.n_train must be >= 1 or null; got -5"),
    ("seeds-empty", [*S, "seeds=[]"], "seeds must hold at least 1 item(s); got []"),
    ("seeds-negative", [*X, "seeds", "[0, -3]"], "seeds item must be >= 0; got -3"),
    ("batch-size-0", [*S, "train.batch_size=0"], "train.batch_size must be >= 1; got 0"),
    ("warmup-negative", [*S, "train.warmup_epochs=-2"], "train.warmup_epochs must be >= 0; got -2"),
    ("epochs-fraction", [*X, "finetune_epochs", "2.5"], "'train.finetune_epochs' expects an integer; got 2.5"),
    ("source-unknown", [*S, "data.source=nosuch"], "unknown data.source 'nosuch': choose one of phantom, padchest"),
    ("on-missing-unknown", [*X, "on_missing", "maybe"], "unknown data.on_missing 'maybe'"),
    ("class-set-unknown", [*X, "class_set", "chexpert"], "unknown data.class_set 'chexpert'"),
    ("arch-unknown", [*S, "model.arch=mlp"], "unknown model.arch 'mlp'"),
    ("loss-unknown", [*S, "train.loss=focal"], "unknown train.loss 'focal'"),
    ("test-fraction", [*S, "data.test_fraction=1.5"], "data.test_fraction must be > 0 and < 1; got 1.5"),
    ("guidance-negative", [*X, "guidance_scale", "-1"], "diffusion.guidance_scale must be >= 0; got -1"),
    ("target-group", [*X, "target_groups", "[rare]"], "unknown diffusion.target_groups item 'rare'"),
    ("thresholds-crossed", [*S, "data.tail_threshold=9000"], "data.tail_threshold (9000) must not exceed"),
    ("parameter-unknown", [*X, "dificulty", "2"], "unknown notebook parameter(s) ['dificulty']"),
    ("profile-unknown", ["config", "--profile", "huge"], "invalid choice: 'huge'"),
    ("device-unknown", ["info", "--device", "tpu"], "invalid choice: 'tpu'"),
    ("command-unknown", ["train"], "invalid choice: 'train'"),
    ("workers-0", ["run", "all", "--profile", "smoke", "--workers", "0"], "--workers must be at least 1, got 0"),
    ("workers-with-row", ["run", "table1", "--profile", "smoke", "--workers", "2", "--row", "Ours", "--seed", "0"],
     "--workers computes a whole target: not with --row/--seed"),
    ("notebook-missing", ["execute", "{d}/nope.py"], "no such notebook source: {d}/nope.py"),
    ("csv-missing", [*CSV, "paths.padchest_csv={d}/nope.csv"], "PadChest label table not found: {d}/nope.csv"),
    ("csv-folder", [*CSV, "paths.padchest_csv={d}"], "PadChest label table not found: {d}"),
    ("csv-empty", [*CSV, "paths.padchest_csv={d}/empty.csv"], "the label table {d}/empty.csv is empty"),
    ("csv-truncated-gz", [*CSV, "paths.padchest_csv={d}/truncated.csv.gz"],
     "cannot read the label table {d}/truncated.csv.gz: EOFError"),
    ("csv-binary", [*CSV, "paths.padchest_csv={d}/binary.csv"], "the label table {d}/binary.csv lacks the column(s)"),
    ("csv-not-gzip", [*CSV, "paths.padchest_csv={d}/not-gzip.csv.gz"],
     "cannot read the label table {d}/not-gzip.csv.gz: BadGzipFile"),
    ("csv-no-projection", [*CSV, "paths.padchest_csv={d}/no-projection.csv"], "the label table {d}/no-projection.csv lacks the column(s) ['Projection'] (its header: 'ImageID, ImageDir, PatientID, Labels')"),
    ("csv-header-only", [*CSV, "paths.padchest_csv={d}/header-only.csv"],
     "the label table {d}/header-only.csv has its header row only, no data rows"),
    ("csv-no-usable-row", [*CSV, "paths.padchest_csv={d}/no-usable-row.csv"],
     "{d}/no-usable-row.csv has no usable row: 2 read, 1 without labels, 1 malformed"),
    ("csv-no-frontal-row", [*CSV, "paths.padchest_csv={d}/lateral-only.csv.gz"],
     "the train split has no row with Projection in ['PA', 'AP', 'AP_horizontal'] (the label table's projections: ['L'])"),
    ("images-no-folder-set", [*CSV, "data.source=padchest"], "no image folder is set: set PADCHEST_ROOT"),
    ("images-folder-missing", [*CSV, "data.source=padchest", "--set", "paths.padchest_root={d}/nowhere"],
     "PadChest image folder not found: {d}/nowhere"),
    ("images-missing", [*CSV, "data.source=padchest", "--set", "paths.padchest_root={d}/images-empty"],
     "missing PadChest image {d}/images-empty/"),
    ("images-none-read-skipping", [*CSV, "data.source=padchest", "--set", "paths.padchest_root={d}/images-empty",
                                   "--set", "data.on_missing=skip"],
     "none of the 300 PadChest images could be read under {d}/images-empty (300 missing, 0 unreadable"),
    ("cache-clear-unconfirmed", ["cache", "clear"], "nothing removed: clearing the cache of every stage needs a yes"),
    ("publish-unbuilt", ["publish", "--root", "{d}"], "no built book at {d}/_build/html"),
]


@pytest.mark.parametrize(("argv", "expected"), [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_a_bad_input_on_the_command_line_is_one_clean_line(argv, expected, files, run_dir, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", None)                  # no terminal: `cache clear` cannot ask
    argv = [a.replace("{d}", str(files)) for a in argv]
    rc, err = main_in_process(argv, capsys)
    _assert_one_clean_line(rc, err, expected.replace("{d}", str(files)))


def test_a_request_for_a_gpu_that_is_not_there_is_one_clean_line(run_dir, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: `--device cuda` is valid here")
    rc, err = main_in_process(["info", "--device", "cuda"], capsys)
    _assert_one_clean_line(rc, err, "device 'cuda' was asked for but torch sees no GPU; use DEVICE=auto or DEVICE=cpu")


LIBRARY_CASES = [
    ("pipeline-empty-components", lambda d: __import__("trcgl.diffusion.pipeline", fromlist=["x"]).load_pipeline(
        d / "hollow-pipeline"), "incomplete trcgl diffusion pipeline at {d}/hollow-pipeline: missing unet/ (lacks config.json"),
    ("pipeline-missing", lambda d: __import__("trcgl.diffusion.pipeline", fromlist=["x"]).load_pipeline(d / "nope"),
     "no trcgl diffusion pipeline at {d}/nope (no such folder)"),
    ("minilm-path-missing", lambda d: __import__("trcgl.diffusion.text", fromlist=["x"]).load_text_encoder(
        "minilm", d / "minilm"), "MiniLM text encoder not found at {d}/minilm (no such folder)"),
    ("clip-text-path-missing", lambda d: __import__("trcgl.diffusion.text", fromlist=["x"]).load_text_encoder(
        "clip", d / "clip"), "CLIP text encoder not found at {d}/clip"),
    ("clip-text-path-hollow", lambda d: __import__("trcgl.diffusion.text", fromlist=["x"]).load_text_encoder(
        "clip", d / "hollow-pipeline"), "CLIP text encoder not found at {d}/hollow-pipeline (no config.json in it)"),
    ("clip-image-encoder-missing", lambda d: __import__("trcgl.models", fromlist=["x"]).build_model(
        __import__("trcgl").load_config("smoke", {"model.arch": "clip", "paths.clip_image_encoder": str(d / "clip")}), 4),
     "no CLIP vision model at {d}/clip"),
]


@pytest.mark.parametrize(("call", "expected"), [c[1:] for c in LIBRARY_CASES], ids=[c[0] for c in LIBRARY_CASES])
def test_a_bad_weights_folder_is_one_clean_line(call, expected, files, capsys):
    rc = cli.guarded(lambda: call(files))
    _assert_one_clean_line(rc, capsys.readouterr().err, expected.replace("{d}", str(files)))


@pytest.mark.parametrize(("argv", "expected"), [
    (["config", "--set", "data.image_size=[1"], "not valid YAML: '[1'"),
    (["info", "--profile", "smoke", "--set", "x=1"], "unrecognized arguments: --set x=1"),
    (["config", "--set", "data.source=nosuch"], "unknown data.source 'nosuch'"),
    (["check-data", "--profile", "smoke", "--set", "paths.padchest_csv={d}/empty.csv"], "is empty"),
], ids=["yaml", "usage", "schema", "csv"])
def test_the_real_process_exits_2_with_one_line(argv, expected, files):
    argv = [a.replace("{d}", str(files)) for a in argv]
    out = subprocess.run([sys.executable, "-m", "trcgl", *argv], capture_output=True, text=True,
                         stdin=subprocess.DEVNULL)
    _assert_one_clean_line(out.returncode, out.stderr, expected)


# ----------------------------------------------------------------------------- counted, logged skips

def test_nested_and_unknown_labels_are_counted_and_logged(caplog):
    import pandas as pd

    from trcgl.data.padchest import parse_table

    raw = pd.DataFrame({"ImageID": ["a", "b", "c"], "ImageDir": ["0"] * 3, "PatientID": ["1", "2", "3"],
                        "Projection": ["PA"] * 3,
                        "Labels": ["['normal']", "[['pneumonia'], 'normal']", "['pneumonia', 'pnemonia']"]})
    with caplog.at_level(logging.WARNING):
        report = parse_table(raw).report
    assert (report["labels_nested"], report["rows_dropped"], report["labels_unknown"]) == (1, 1, 1)
    assert report["unknown_label_strings"] == "pnemonia (1)"
    assert "1 nested label lists" in caplog.text and "pnemonia (1)" in caplog.text


def test_unreadable_images_and_bad_image_dirs_are_counted_when_skipping(tmp_path, caplog):
    from PIL import Image

    from trcgl.data.images import PadChestImages

    (tmp_path / "0").mkdir()
    Image.fromarray(np.full((8, 8), 500, np.uint16)).save(tmp_path / "0" / "ok.png")
    (tmp_path / "0" / "broken.png").write_bytes(b"\x89PNG not really")
    reader = PadChestImages(tmp_path, 8, on_missing="skip")
    with caplog.at_level(logging.WARNING):
        images, kept, report = reader.read_many([("0", "ok.png"), ("0", "broken.png"), ("x7", "ok.png"),
                                                 ("0", "gone.png")])
    assert kept.tolist() == [True, False, False, False] and len(images) == 1
    assert (report.read, len(report.missing), len(report.unreadable)) == (1, 1, 2)
    assert "skipped 3 of 4 (1 missing, 2 unreadable)" in caplog.text


def test_every_from_pretrained_call_reads_local_files_only():
    """No code path can reach for a model hub: each ``from_pretrained(...)`` passes local_files_only=True."""
    import ast

    calls = []
    for path in sorted((ROOT / "trcgl").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "from_pretrained":
                local = any(k.arg == "local_files_only" and getattr(k.value, "value", None) is True
                            for k in node.keywords)
                calls.append((f"{path.relative_to(ROOT)}:{node.lineno}", local))
    assert len(calls) >= 6
    assert [where for where, local in calls if not local] == []


# ----------------------------------------------------------------------------- the run folder, its disk, memory

def _file_run_dir(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("TRCGL_RUN_DIR", str(tmp_path / "file"))
    return f"the run folder TRCGL_RUN_DIR={tmp_path / 'file'} is a file, not a folder; set TRCGL_RUN_DIR to a folder"


def _run_dir_under_a_file(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("TRCGL_RUN_DIR", str(tmp_path / "file" / "runs"))
    return f"TRCGL_RUN_DIR={tmp_path / 'file' / 'runs'} cannot be made: {tmp_path / 'file'} is a file, not a folder"


def _cache_is_a_file(tmp_path, monkeypatch):
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "cache").write_text("not a folder")
    monkeypatch.setenv("TRCGL_RUN_DIR", str(tmp_path / "runs"))
    return f"the run folder {tmp_path / 'runs'} cannot hold the cache ({tmp_path / 'runs' / 'cache'} is a file"


def _read_only(tmp_path, monkeypatch, code=errno.EROFS):
    """A read-only (or, for a user other than root, unwritable) run folder: its folders cannot be made."""
    import os
    import pathlib

    real_mkdir = pathlib.Path.mkdir

    def mkdir(self, *args, **kwargs):
        if str(self).startswith(str(tmp_path / "runs")):
            raise OSError(code, os.strerror(code), str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)
    monkeypatch.setenv("TRCGL_RUN_DIR", str(tmp_path / "runs"))
    return (f"the run folder {tmp_path / 'runs'} cannot hold the cache ({os.strerror(code)}: "
            f"{tmp_path / 'runs' / 'cache' / 'label-table'}); set TRCGL_RUN_DIR to a folder you can write")


RUN_DIR_CASES = {"is-a-file": _file_run_dir, "under-a-file": _run_dir_under_a_file, "cache-is-a-file": _cache_is_a_file,
                 "read-only": _read_only, "not-writable": lambda t, m: _read_only(t, m, errno.EACCES)}


@pytest.mark.parametrize("case", list(RUN_DIR_CASES))
def test_a_run_folder_that_cannot_hold_the_cache_is_one_clean_line(case, tmp_path, monkeypatch, capsys):
    """``TRCGL_RUN_DIR`` naming a file ended in a NotADirectoryError traceback."""
    monkeypatch.delenv("PADCHEST_ROOT", raising=False)
    expected = RUN_DIR_CASES[case](tmp_path, monkeypatch)
    rc, err = main_in_process(["check-data", "--profile", "smoke"], capsys)
    _assert_one_clean_line(rc, err, expected)


#: options of a `run` small enough for a test (a label table of 80 rows; 24 training rows in 3 chunks of 8)
def _tiny_run(csv) -> list[str]:
    from .test_padchest import TINY

    sets = [f"{key}={value}" for key, value in {**TINY, "paths.padchest_csv": str(csv)}.items()]
    return ["run", "image-sets", "--profile", "smoke", "--device", "cpu", *[a for s in sets for a in ("--set", s)]]


@pytest.fixture
def tiny_run(tmp_path, monkeypatch):
    from trcgl.data import datasets

    from .test_padchest import tiny_label_csv

    monkeypatch.setattr(datasets, "CHUNK", 8)
    monkeypatch.setenv("TRCGL_RENDER_PROCESSES", "1")      # in this process, so that the patches apply
    monkeypatch.delenv("PADCHEST_ROOT", raising=False)
    return _tiny_run(tiny_label_csv(tmp_path / "labels.csv"))


def _image_sets(run_dir) -> dict:
    from trcgl.cache import ArtifactCache

    cache = ArtifactCache(run_dir)
    return {key: cache.meta(cache.root / "image-set" / key)["digest"] for key in
            (r["key"] for r in cache.listing() if r["stage"] == "image-set" and r["bytes"] is not None)}


def test_a_full_disk_is_one_line_and_the_next_run_resumes_from_the_chunks_written(tiny_run, tmp_path, monkeypatch,
                                                                                  capsys):
    """A full disk (ENOSPC) while an image set is written ended in an OSError traceback. Now: one
    line naming the stage's .partial folder, what it needs and what is free; the chunk written
    before stays, and the next run renders only the rest and gives the uninterrupted run's set."""
    from trcgl import cache
    from trcgl.data import datasets

    real_write, chunks = cache.atomic_write_bytes, []

    def full_after_one_chunk(path, data):
        if path.name.startswith("chunk") and chunks:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(path, data)
        chunks.extend([path] if path.name.startswith("chunk") else [])

    monkeypatch.setattr(cache, "atomic_write_bytes", full_after_one_chunk)
    monkeypatch.setenv("TRCGL_RUN_DIR", str(tmp_path / "runs"))
    rc, err = main_in_process(tiny_run, capsys)
    partial = chunks[0].parent
    _assert_one_clean_line(rc, err, f"No space left on device while writing {partial}: it needs roughly ")
    assert partial.name.endswith(".partial") and partial.parent.name == "image-set"
    assert " free on that disk; the work so far (" in err and "stays there and the next run resumes from it" in err
    assert sorted(p.name for p in partial.iterdir()) == ["chunk0000.npz"]      # the chunk written is kept

    monkeypatch.setattr(cache, "atomic_write_bytes", real_write)
    renders, real_render = [], datasets.PhantomRenderer.render
    monkeypatch.setattr(datasets.PhantomRenderer, "render", lambda self, *a, **k: renders.append(1) or
                        real_render(self, *a, **k))
    rc, err = main_in_process(tiny_run, capsys)
    assert rc == 0, err
    assert len(renders) == 24 - 8 + 4 + 4                  # the rest of train (chunk 0 kept), selection, test
    assert not partial.exists()
    monkeypatch.setenv("TRCGL_RUN_DIR", str(tmp_path / "uninterrupted"))
    assert main_in_process(tiny_run, capsys)[0] == 0
    resumed = _image_sets(tmp_path / "runs")
    assert len(resumed) == 3 and resumed == _image_sets(tmp_path / "uninterrupted")


def test_a_full_disk_while_the_label_table_is_written_is_one_line(tmp_path, monkeypatch, capsys):
    """The label table's JSON is made in memory first: the line says how many bytes it needs."""
    from trcgl import cache

    from .test_padchest import tiny_label_csv

    real_write = cache.atomic_write_bytes

    def full(path, data):
        if path.name == "table.json":
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(path, data)

    monkeypatch.setattr(cache, "atomic_write_bytes", full)
    monkeypatch.setenv("TRCGL_RUN_DIR", str(tmp_path / "runs"))
    argv = ["check-data", "--profile", "smoke", "--set", f"paths.padchest_csv={tiny_label_csv(tmp_path / 'l.csv')}"]
    rc, err = main_in_process(argv, capsys)
    _assert_one_clean_line(rc, err, f"No space left on device while writing {tmp_path / 'runs' / 'cache' / 'label-table'}/")
    assert re.search(r"\.partial: it needs roughly [0-9.]+ KiB more, [0-9.]+ [KMG]iB free on that disk", err), err
    monkeypatch.setattr(cache, "atomic_write_bytes", real_write)
    assert main_in_process(argv, capsys)[0] == 0


def test_a_full_disk_in_any_stage_is_one_line_and_keeps_its_partial_work(tmp_path, capsys):
    """The cache turns a full disk (ENOSPC, or a quota: EDQUOT) in any stage's build into one line
    naming its .partial folder and the free space; the files written stay for the next run."""
    import os

    from trcgl.cache import ArtifactCache

    cache = ArtifactCache(tmp_path)

    def build(work, code):
        (work / "first.bin").write_bytes(b"x" * 1000)
        raise OSError(code, os.strerror(code))

    for code in (errno.ENOSPC, errno.EDQUOT):
        rc = cli.guarded(lambda code=code: cache.fetch("toy", {"code": code}, lambda work: build(work, code)))
        partial = cache.partial_path("toy", {"code": code})
        _assert_one_clean_line(rc, capsys.readouterr().err, f"{os.strerror(code)} while writing {partial}: it needs "
                               "more than the ")
        assert (partial / "first.bin").stat().st_size == 1000 and not cache.exists("toy", {"code": code})
    with pytest.raises(OSError, match="Broken pipe"):      # another OSError is not the disk's: it stays as it is
        cache.fetch("toy", {"code": errno.EPIPE}, lambda work: build(work, errno.EPIPE))


def test_an_image_set_too_big_for_the_memory_or_the_disk_is_refused_before_rendering(tiny_run, tmp_path, monkeypatch,
                                                                                      capsys):
    """A big set on a small machine ended in an allocator traceback after the rendering: now the
    set's memory (rows x size^2, its masks, the copies made while assembling) is checked against
    the memory available, and its bytes against the disk's free space, before anything is drawn."""
    from trcgl import cache
    from trcgl.data import datasets

    monkeypatch.setenv("TRCGL_RUN_DIR", str(tmp_path / "runs"))
    monkeypatch.setattr(datasets.PhantomRenderer, "render", lambda *a, **k: pytest.fail("rendered"))
    monkeypatch.setattr(datasets, "available_memory", lambda: 20_000)
    need = datasets.image_set_bytes("phantom", 24, 16, 30)
    rc, err = main_in_process(tiny_run, capsys)
    _assert_one_clean_line(rc, err, f"the image set 'train' needs about {cache.human_bytes(need['memory'])} of memory "
                           "to build (24 rows of 16x16 px), more than the 19.5 KiB this machine has available: lower "
                           "data.image_size or the number of rows")
    monkeypatch.setattr(datasets, "available_memory", lambda: 1 << 40)
    monkeypatch.setattr(cache, "free_bytes", lambda folder: 1000)
    rc, err = main_in_process(tiny_run, capsys)
    _assert_one_clean_line(rc, err, f"not enough free disk space while writing {tmp_path / 'runs' / 'cache'}")
    assert f"it needs roughly {cache.human_bytes(need['disk'])} more, 1000 bytes free on that disk" in err
