"""The claims ledger: the verdict rule on hand-made differences, the paper's internal
inconsistencies found from its numbers, and a registry that names only rows the table stages train."""
import math
import re

import pytest

from trcgl import claims as C
from trcgl import load_config, paper
from trcgl.tables import TABLES, table_rows

from .conftest import ROOT

TEXT = ROOT.parent / "shared" / "paper" / "trcgl-net-2607.00975.txt"


def d(value, low, high):
    return {"value": value, "low": low, "high": high}


WORKS, SILENT = d(0.05, 0.02, 0.08), d(0.001, -0.01, 0.012)


# ----------------------------------------------------------------------------- the verdict rule

def test_an_interval_above_zero_with_working_controls_is_supported():
    verdict, why = C.verdict(d(0.03, 0.01, 0.05), 1, 0.05, [("positive", WORKS), ("negative", SILENT)])
    assert verdict == C.SUPPORTED, why
    assert C.verdict(d(-0.03, -0.05, -0.01), -1, -0.02)[0] == C.SUPPORTED      # a claimed decrease


def test_an_interval_on_the_wrong_side_is_not_supported():
    verdict, why = C.verdict(d(-0.03, -0.05, -0.01), 1, 0.05, [("positive", WORKS)])
    assert verdict == C.NOT_SUPPORTED and "opposite" in why
    assert C.verdict(d(-0.03, -0.05, -0.01), 1, 0.05, [("positive", SILENT)])[0] == C.NOT_SUPPORTED


def test_ruling_out_the_papers_effect_on_a_sensitive_benchmark_is_not_supported():
    verdict, why = C.verdict(d(0.002, -0.01, 0.015), 1, 0.05, [("positive", WORKS)])
    assert verdict == C.NOT_SUPPORTED and "excludes the paper's effect" in why


def test_a_silent_positive_control_makes_every_non_negative_result_inconclusive():
    # the claim's own interval excludes 0 on the paper's side, but the benchmark cannot see the effect
    assert C.verdict(d(0.03, 0.01, 0.05), 1, 0.05, [("positive", SILENT)])[0] == C.INCONCLUSIVE
    # the interval rules out the paper's effect, but on a benchmark that shows nothing
    verdict, why = C.verdict(d(0.002, -0.01, 0.015), 1, 0.05, [("positive", SILENT)])
    assert verdict == C.INCONCLUSIVE and "positive control" in why


def test_a_negative_control_that_shows_the_effect_makes_a_gain_inconclusive():
    verdict, why = C.verdict(d(0.03, 0.01, 0.05), 1, 0.05, [("positive", WORKS), ("negative", WORKS)])
    assert verdict == C.INCONCLUSIVE and "negative control" in why


def test_an_interval_holding_zero_and_the_papers_effect_is_inconclusive():
    assert C.verdict(d(0.02, -0.01, 0.06), 1, 0.05)[0] == C.INCONCLUSIVE
    assert C.verdict(d(0.002, -0.01, 0.015), 1, None)[0] == C.INCONCLUSIVE      # the paper gives no number
    assert C.verdict(d(0.002, -0.01, 0.015), 1, -0.001)[0] == C.INCONCLUSIVE    # the paper's own step goes the other way


def test_no_interval_is_inconclusive():
    assert C.verdict(d(0.03, math.nan, math.nan), 1, 0.05)[0] == C.INCONCLUSIVE


# ----------------------------------------------------------------------------- the paper against itself

def test_the_papers_contradictions_are_found_from_its_numbers():
    found = {(a.table, tuple(c)) for a, c in C.inconsistencies()}
    assert found == {
        ("1", ("mAUC: ConvNeXt + CSRA 0.8581 < ConvNeXt 0.8720",)),                  # "consistent gains across all metrics"
        ("3", ("F1: + channel-class attention 0.4053 < + prompt diffusion 0.4192",)),  # "slight but consistent improvement"
        ("2", ("Ours: mAP tail 0.4904 > mAP medium 0.3272",)),                        # the tail above the medium classes
        ("3", ("mAUC: + label GCN (full) 0.8989 < + channel-class attention 0.9000",)),  # "reaches the best performance"
    }


def test_a_consistent_paper_has_no_contradictions():
    tables = C.paper_tables()
    t1, t2, t3 = dict(paper.TABLE_1), dict(paper.TABLE_2), dict(paper.TABLE_3)
    t1["ConvNeXt + CSRA"] = (0.3671, 0.8800, 0.3227)
    t2["Ours"] = (0.5479, 0.3272, 0.2904, 0.9012, 0.8849, 0.9229)
    t3["+ channel-class attention"] = (0.4381, 0.8985, 0.4253)
    tables.update({"1": (t1, paper.COLUMNS_1), "2": (t2, paper.COLUMNS_2), "3": (t3, paper.COLUMNS_1)})
    assert C.inconsistencies(tables) == []
    assert len(C.ASSERTIONS) > 4         # the sentences that hold were checked too


def test_an_unknown_assertion_kind_is_refused():
    with pytest.raises(ValueError, match="unknown assertion kind"):
        C.contradictions(C.Assertion("1", "x", "above", ("mAP",), "Ours", "ConvNeXt"))


@pytest.mark.skipif(not TEXT.exists(), reason="the paper's text is not beside this checkout")
def test_the_quoted_words_are_the_papers():
    text = " ".join(TEXT.read_text().split())
    quotes = [c.wording for c in C.CLAIMS] + [a.wording for a in C.ASSERTIONS]
    for quote in quotes:
        for part in re.split(r"\s*\[\.\.\.\]\s*", quote):
            assert " ".join(part.split()) in text, part


# ----------------------------------------------------------------------------- the registry against the tables

@pytest.mark.parametrize("profile", ["smoke", "cpu"])
def test_the_registry_names_rows_the_table_stages_train(profile):
    cfg = load_config(profile)
    for claim in C.CLAIMS:
        comparisons = [(claim.table, claim.row, claim.reference)] + [(k.table, k.row, k.reference)
                                                                       for k in claim.controls]
        for table, row, reference in comparisons:
            assert table in TABLES, (claim.name, table)
            trained = [r.name for r in table_rows(cfg, table) if not r.unavailable]
            assert row in trained, (claim.name, table, row)
            assert reference in trained or (reference == C.BEST_OTHER and len(trained) > 1), (claim.name, reference)
        assert claim.metric == C.PRIMARY
        if claim.paper is not None:
            metric, a, b, _ = claim.paper
            assert metric in paper.COLUMNS_1 + paper.COLUMNS_2 and a != b


@pytest.mark.parametrize("profile", ["smoke", "cpu"])
def test_the_ledger_needs_no_stage_that_other_chapters_do_not(profile, monkeypatch):
    """Every request of the ledger is a table request that another chapter makes with the same
    arguments, so `run all` computes nothing new for it (table requests recorded, not built: building
    one walks every run of the table)."""
    import trcgl.stages as S
    from trcgl.views import CHAPTER_VIEWS, chapter_needs

    monkeypatch.setattr(S, "table", lambda cfg, name, seeds=None: ("table", name, seeds and tuple(seeds), cfg.hash()))
    cfg = load_config(profile)
    mine = chapter_needs("08_claims_ledger", cfg)
    assert mine and all(isinstance(q, tuple) for q in mine)
    missing = set(mine)
    for chapter in reversed([c for c in CHAPTER_VIEWS if c != "08_claims_ledger"]):   # the tables' chapters are last
        missing -= {q for q in chapter_needs(chapter, cfg) if isinstance(q, tuple)}
        if not missing:
            break
    assert not missing


# ----------------------------------------------------------------------------- the ledger reads the results store

def test_a_ledger_row_reads_the_store_and_compares_with_the_strongest_other_row(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from trcgl.results import ResultsStore
    from trcgl.views import claims as view

    monkeypatch.setenv("TRCGL_RUN_DIR", str(tmp_path))
    values = {"Ours": (0.80, 0.82), "weak": (0.70, 0.69), "strong": (0.75, 0.76)}
    records = [{"row": r, "metric": "mAUC tail", "value": v, "seed": s, "kind": "seed"} for r, vs in values.items()
               for s, v in enumerate(vs)]
    records += [{"row": "Ours", "reference": "strong", "metric": "mAUC tail", "value": 0.05, "low": 0.02, "high": 0.08,
                 "seed": None, "kind": "difference", "resamples": 50},
                {"row": "Ours", "reference": "weak", "metric": "mAUC tail", "value": 0.10, "low": -0.01, "high": 0.2,
                 "seed": None, "kind": "difference", "resamples": 50}]
    ResultsStore(tmp_path / "results-t.json").replace_table("table1", records)
    ch = SimpleNamespace(cfg=SimpleNamespace(profile="t", seeds=[0, 1]))
    claim = C.Claim("c", "", "", "table1", "Ours", C.BEST_OTHER, ("mAUC tail", 0.9, 0.85, "ConvNeXt"))
    row = view.judge(ch, claim)
    assert row["here: compared rows"].startswith("Ours vs strong") and row["verdict"] == C.SUPPORTED
    assert row["here: Δ mAUC tail [interval]"] == "+0.0500 [+0.0200, +0.0800]"
    assert "Δ +0.0500" in row["paper (its numbers)"]
    # a positive control that this run did not train cannot vouch for the benchmark
    blind = C.Claim("c", "", "", "table1", "Ours", "strong", None,
                    controls=(C.Control("positive", "controls", "ideal", "none", "ideal vs none"),))
    row = view.judge(ch, blind)
    assert row["verdict"] == C.INCONCLUSIVE and "ideal vs none (controls) not run here" in row["controls here"]
    # a control of the claim's own table is not named by its table; one of another table is (above)
    own = C.Claim("c", "", "", "table1", "Ours", "strong", None,
                  controls=(C.Control("negative", "table1", "weak", "Ours", "weak vs Ours"),))
    assert view.judge(ch, own)["controls here"].startswith("negative: weak vs Ours ")
    # a compared row without results
    assert view.judge(ch, C.Claim("c", "", "", "table1", "Ours", "absent"))["verdict"] == C.INCONCLUSIVE


def test_the_table_1_claim_meets_the_strongest_baseline_at_its_own_feature_depth(tmp_path, monkeypatch):
    """Where Table 1 has whole-network rows beside the cut ones, the strongest other row leaves out
    both TRCGL-Net rows, and TRCGL-Net is judged at that row's depth: the whole-network TRCGL-Net
    against a whole network, the cut one against a cut one."""
    from types import SimpleNamespace

    from trcgl.results import ResultsStore
    from trcgl.tables import OURS, WHOLE_CONVNEXT, WHOLE_OURS
    from trcgl.views import claims as view

    monkeypatch.setenv("TRCGL_RUN_DIR", str(tmp_path))
    ch = SimpleNamespace(cfg=SimpleNamespace(profile="t", seeds=[0, 1]))
    claim = next(c for c in C.CLAIMS if c.name.startswith("Table 1"))

    def store(values, diffs):
        records = [{"row": r, "metric": "mAUC tail", "value": v, "seed": s, "kind": "seed"} for r, v in values.items()
                   for s in (0, 1)]
        records += [{"row": a, "reference": b, "metric": "mAUC tail", "value": v, "low": v - 0.01, "high": v + 0.01,
                     "seed": None, "kind": "difference", "resamples": 50} for (a, b), v in diffs.items()]
        ResultsStore(tmp_path / "results-t.json").replace_table("table1", records)

    # the whole-network TRCGL-Net is the highest row of all: still not its own "strongest other row"
    store({OURS: 0.80, WHOLE_OURS: 0.90, WHOLE_CONVNEXT: 0.85, "ConvNeXt + CSRA": 0.70, "ConvNeXt": 0.60},
          {(WHOLE_OURS, WHOLE_CONVNEXT): 0.05, (OURS, WHOLE_CONVNEXT): -0.05})
    row = view.judge(ch, claim)
    assert row["here: compared rows"].startswith(f"{WHOLE_OURS} vs {WHOLE_CONVNEXT}")
    assert row["here: Δ mAUC tail [interval]"] == "+0.0500 [+0.0400, +0.0600]"
    # a cut baseline strongest: the cut TRCGL-Net meets it
    store({OURS: 0.80, WHOLE_OURS: 0.90, WHOLE_CONVNEXT: 0.65, "ConvNeXt + CSRA": 0.85, "ConvNeXt": 0.60},
          {(OURS, "ConvNeXt + CSRA"): -0.05, (WHOLE_OURS, "ConvNeXt + CSRA"): 0.05})
    row = view.judge(ch, claim)
    assert row["here: compared rows"].startswith(f"{OURS} vs ConvNeXt + CSRA")
    assert row["here: Δ mAUC tail [interval]"] == "-0.0500 [-0.0600, -0.0400]"


def test_a_chapter_says_no_effect_only_where_the_interval_rules_out_the_papers():
    """The chapters' words for a difference follow the verdict rule: gain / loss where the interval
    excludes 0; "no effect as large as the paper's" only where it also excludes the paper's effect;
    otherwise inconclusive. The paper's effect is read from the claim comparing the same rows."""
    metric, size = C.paper_effect("+ channel-class attention", "+ prompt diffusion")
    a, b = paper.TABLE_3["+ channel-class attention"][1], paper.TABLE_3["+ prompt diffusion"][1]
    assert (metric, size) == ("mAUC", pytest.approx(a - b))
    assert C.paper_effect("ConvNeXt", "Ours") is None
    assert C.effect_words({"value": 0.02, "low": 0.01, "high": 0.03}, (metric, size)) == "a gain"
    assert C.effect_words({"value": -0.02, "low": -0.03, "high": -0.01}, (metric, size)) == "a loss"
    narrow = {"value": 0.0, "low": -size / 2, "high": size / 2}          # excludes the paper's effect
    wide = {"value": 0.0, "low": -2 * size, "high": 2 * size}            # contains it
    assert C.effect_words(narrow, (metric, size)).startswith("no effect as large as the paper's")
    assert C.effect_words(wide, (metric, size)).startswith("inconclusive (the interval contains both 0")
    assert C.effect_words(narrow, None).startswith("inconclusive")


def test_the_strongest_other_row_leaves_out_the_named_rows_and_missing_values():
    import pandas as pd

    means = pd.DataFrame({"mAUC tail": [0.9, 0.8, float("nan"), 0.7], "mAP": [0.1, 0.2, 0.9, 0.3]},
                         index=["Ours", "A", "B", "C"])
    assert C.strongest_other(means, "mAUC tail") == "Ours"
    assert C.strongest_other(means, "mAUC tail", ("Ours",)) == "A"           # B has no value: never chosen
    assert C.strongest_other(means, "mAP", ("Ours", "B")) == "C"
    assert C.strongest_other(means, "mAUC tail", ("Ours", "A", "C")) is None
    assert C.strongest_other(means, "mAUC", ()) is None                       # a metric the table lacks
