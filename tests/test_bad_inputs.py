"""A table of bad inputs a new user tries: each ends in one line on stderr that names the
offending value, exit code 2 and no traceback, or in a counted, logged skip.

Most cases run the command line in this process (``trcgl.cli.main``, exactly what
``python -m trcgl`` runs); a few run it as a real process; the failures of library calls a chapter
makes (a pipeline folder, a text encoder folder) go through ``trcgl.cli.guarded``, the same
wrapper ``main`` uses. Bad checkpoint files (a text file, a truncated file, a bare tensor) are
not in this table: they belong with the checkpoint loaders of trcgl/models, which are being
replaced by timm's.
"""
import gzip
import logging
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
