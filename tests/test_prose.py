"""Every sentence the chapters print about the setup, every verdict and every exercise is true for
the run's configuration: built here from the ``smoke`` and ``cpu`` configurations (no training:
the notes, verdicts and exercises are rendered from the configuration and a few fake records),
and refused when it contradicts the configuration (pretraining, the stages trained, the interval
method, the F1 threshold, the run's seeds and settings)."""
import re
from types import SimpleNamespace

import jupytext
import numpy as np
import pandas as pd
import pytest

from .conftest import CHAPTERS, ROOT

PROFILES = ["smoke", "cpu"]


def config(profile):
    from trcgl import load_config

    return load_config(profile)


def fake_records(cfg, metrics=("mAP", "mAUC", "macro-F1", "mAUC tail"), rows=("A", "B")) -> list[dict]:
    """A table's records as the table stage writes them: per (row, seed, metric) values, interval
    records for the resampled metrics (not macro-F1), and paired differences."""
    out = [{"row": r, "metric": m, "value": 0.5, "seed": int(s), "kind": "seed"}
           for r in rows for s in cfg.seeds for m in metrics]
    resampled = [m for m in metrics if m != "macro-F1"]
    out += [{"row": r, "metric": m, "value": 0.5, "low": 0.4, "high": 0.6, "seed": None, "kind": "interval",
             "resamples": int(cfg.eval.bootstrap)} for r in rows for m in resampled]
    out += [{"row": a, "reference": b, "metric": m, "value": 0.0, "low": -0.1, "high": 0.1, "sure": False,
             "seed": None, "kind": "difference", "resamples": int(cfg.eval.bootstrap)}
            for a in rows for b in rows if a != b for m in resampled]
    return out


class FakeImages:
    """What an exercise reads of a test set: its labels, its label rows' ids (a row rendered again
    keeps its id) and its length."""

    def __init__(self, Y, ids=None):
        self.Y = Y
        self.rows = pd.DataFrame({"ImageID": [f"r{i}" for i in (range(len(Y)) if ids is None else ids)]})

    def __len__(self):
        return len(self.Y)


def fake_cohort(n_classes=30):
    counts = np.geomspace(20000, 20, n_classes).astype(int)
    groups = np.where(counts > 5000, "head", np.where(counts < 500, "tail", "medium"))
    summary = pd.DataFrame({"class": [f"class {k}" for k in range(n_classes)], "group": groups,
                            "train": counts}).set_index("class")
    return SimpleNamespace(groups=groups, summary=lambda: summary)


def fake_means():
    from trcgl.tables import CCA, FULL, GAP_ONLY

    return pd.DataFrame({m: [0.6, 0.7, 0.65] for m in ("mAP", "mAP tail", "mAUC tail")}, index=[GAP_ONLY, CCA, FULL])


def fake_ledger():
    from trcgl import claims as C

    return pd.DataFrame({"verdict": [C.SUPPORTED, C.INCONCLUSIVE],
                         "why": ["the interval excludes 0 on the side the paper claims",
                                 "a difference on the claimed side, but the negative control shows one too"]},
                        index=["claim one", "claim two"])


def chapter_exercises(chapter: str, cfg) -> str:
    """The Markdown of a chapter's exercises that its view builds from the configuration ('' for a
    chapter whose exercises are typed in its source)."""
    from trcgl.views import view

    ch = SimpleNamespace(cfg=cfg)
    cohort = fake_cohort()
    rng = np.random.default_rng(0)
    args = {"01_data_long_tail": (ch, cohort), "04_label_gcn": (ch, fake_means()),
            "05_main_results": (ch, cohort, FakeImages(rng.integers(0, 2, (40, 30)), ids=[*range(30), *range(10)])),
            "08_claims_ledger": (fake_ledger(),),
            "06_ablation_sensitivity": (ch, SimpleNamespace(records=fake_records(cfg))),
            "07_inpainting_augmentation": (ch,)}
    source = (ROOT / "notebooks" / f"{chapter}.py").read_text()
    if "view.exercises(" not in source:
        return ""
    return view(chapter).exercises(*args[chapter]).data


# ----------------------------------------------------------------------------- the notes under tables

@pytest.mark.parametrize("profile", PROFILES)
def test_the_table_note_states_the_configured_setting(profile):
    from trcgl.tables import tables_config
    from trcgl.views.common import benchmark_note

    cfg = config(profile)
    tcfg = tables_config(cfg)
    note = " ".join(benchmark_note(tcfg, records=fake_records(tcfg)).split())     # as one line: notes are wrapped
    assert tcfg.pretrain.enabled
    assert not re.search(r"random[- ]init", note), note
    assert "pretrained here" in note and f"{tcfg.pretrain.n_pool} training-split rows" in note
    assert tcfg.train.finetune_epochs == 0
    assert "heads only" in note and not re.search(r"(?<!no )fine-tun", note), note
    assert tcfg.eval.f1_thresholds == "selection"
    assert "macro-F1 at per-class thresholds each run chose on the selection split" in note and "fixed" not in note
    assert f"{tcfg.eval.bootstrap} joint resamples of the seeds and the test label rows" in note
    assert "t-interval" not in note.split("macro-F1:")[0], "a resampled metric is said to get a t-interval"
    assert ("macro-F1: t-interval over the seeds" in note) == (len(cfg.seeds) > 1), note
    assert re.search(r"\bmAP\b.*bootstrap", note)


def test_the_table_note_follows_the_configuration():
    """The same function says random initialisation and fine-tuning when the configuration does."""
    from trcgl.views.common import benchmark_note

    cfg = config("smoke").replace({"pretrain.enabled": False, "train.finetune_epochs": 3, "eval.f1_threshold": 0.2,
                                   "eval.f1_thresholds": "fixed"})
    note = " ".join(benchmark_note(cfg, records=fake_records(cfg)).split())
    assert "random initialisation" in note and "fine-tuned (3 epochs)" in note
    assert "macro-F1 at a fixed threshold of 0.2 for every class" in note and "selection split (best F1" not in note


@pytest.mark.parametrize("profile", PROFILES)
def test_the_gcn_verdict_states_the_configured_setting_and_leads_with_tail_mauc(profile):
    from trcgl.views import gcn

    cfg = config(profile)
    text = " ".join(gcn.verdict(SimpleNamespace(cfg=cfg), fake_means()).split())
    assert not re.search(r"random[- ]init", text), text
    assert "pretrained here" in text and "heads only" in text
    assert text.startswith("Tail mAUC")


@pytest.mark.parametrize("profile", PROFILES)
def test_the_differences_sentence_names_the_recorded_interval(profile):
    from trcgl.views.common import differences_note

    cfg = config(profile)
    text = differences_note(fake_records(cfg), "mAP", "Differences")
    assert "t-interval" not in text and f"{cfg.eval.bootstrap} joint resamples" in text
    text = differences_note([r for r in fake_records(cfg) if r["kind"] == "seed"], "mAP", "Differences")
    assert ("t-interval" in text) == (len(cfg.seeds) > 1)


def test_the_chapter_map_lists_written_chapters_and_existing_modules():
    from trcgl.chapters import chapter_map

    rows = chapter_map(ROOT / "notebooks")
    assert [r["status"] for r in rows] == ["in this book"] * len(rows), rows
    missing = chapter_map(ROOT / "no-such-folder")[0]["status"]
    assert missing.startswith("missing: ") and "00_overview.py" in missing


# ----------------------------------------------------------------------------- exercises

@pytest.mark.parametrize("profile", PROFILES)
def test_exercises_name_the_runs_values(profile):
    cfg = config(profile)
    text = {c: chapter_exercises(c, cfg) for c in CHAPTERS}
    suggested = re.search(r"-p seeds '\[([^\]]*)\]'", text["05_main_results"])
    assert suggested, "chapter 5's seeds exercise is not built from the configuration"
    new = {int(s) for s in suggested.group(1).split(",")}
    assert new > set(cfg.seeds), f"chapter 5 suggests seeds {new}; the profile already trains {list(cfg.seeds)}"
    assert f"trains seeds {[int(s) for s in cfg.seeds]}" in text["05_main_results"]
    assert "resamples 30 test label rows, rendered as 40 test images" in text["05_main_results"]   # rows, not images
    ledger = text["08_claims_ledger"]      # the run's inconclusive rows and what holds them, nothing else
    assert "*claim two*: a difference on the claimed side" in ledger and "claim one" not in ledger
    assert "negative control that shows an effect does not go away" in ledger and "positive control that shows" not in ledger
    thr = float(re.search(r"cam_threshold ([0-9.]+)", text["07_inpainting_augmentation"]).group(1))
    assert thr > cfg.inpaint.cam_threshold and "Raise" in text["07_inpainting_augmentation"]
    epochs = cfg.tables.warmup_epochs or cfg.train.warmup_epochs
    assert f"this run's {epochs} training epochs" in text["07_inpainting_augmentation"]
    ws = ", ".join(f"{w:g}" for w in cfg.tables.synthetic_weights)
    assert f"over [{ws}] in this run" in text["06_ablation_sensitivity"]
    assert f"With {len(cfg.seeds)} seed" in text["06_ablation_sensitivity"]
    assert "4.30" not in text["06_ablation_sensitivity"] or len(cfg.seeds) == 3
    assert f"tau {5 * cfg.model.tau:g}" in text["04_label_gcn"]
    assert "frozen" in text["04_label_gcn"]          # heads only in both profiles: the backbone's norm is fixed
    assert "/ 6?" not in text["01_data_long_tail"] or "tail" in text["01_data_long_tail"]


# ----------------------------------------------------------------------------- typed prose

#: phrases a chapter's markdown must not type: the setting they state belongs to the configuration
STALE = re.compile(r"random[- ]init|t-interval|not yet written", re.I)
#: a typed metric value (three or more decimals) or a typed count of results ("17 of 30")
TYPED_RESULT = re.compile(r"(?<![\d.])0\.\d{3,}\b|\b\d+ of \d+\b")


def typed_statements(source: str) -> list[str]:
    """Lines of a chapter's markdown cells that type a setting or a result instead of printing it."""
    found = []
    for cell in jupytext.reads(source, fmt="py:percent").cells:
        if cell.cell_type == "markdown":
            found += [line for line in cell.source.splitlines() if STALE.search(line) or TYPED_RESULT.search(line)]
    return found


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_no_chapter_types_a_setting_or_a_result_in_its_prose(chapter):
    assert typed_statements((ROOT / "notebooks" / f"{chapter}.py").read_text()) == []


def test_the_typed_prose_check_finds_planted_statements():
    planted = ("# %% [markdown]\n# Intervals: a paired t-interval over seeds.\n# TRCGL-Net reaches 0.4904 mAP.\n"
               "# 17 of 30 classes have F1 = 0.\n\n# %%\nx = 0.4904\n")
    assert len(typed_statements(planted)) == 3
    assert typed_statements("# %% [markdown]\n# Run with `-p gate_scale 0.05`.\n") == []


@pytest.mark.parametrize("profile", ["cpu", "smoke"])
def test_the_feature_grid_sentence_is_the_grid_the_backbone_gives(profile):
    import torch

    from trcgl.models.backbone import Backbone
    from trcgl.views.attention import grid_text

    cfg = config(profile)
    text = grid_text(cfg)
    for stage in (cfg.model.feature_stage, cfg.tables.cca_feature_stage):
        side = Backbone(cfg.model.backbone, stage)(torch.zeros(1, 1, cfg.data.image_size, cfg.data.image_size)).shape[-1]
        assert f"{side} × {side} cells" in text, (stage, side, text)
