"""Tables are built from the results store only; the paper's columns are the paper's values."""
import json

import numpy as np
import pytest
from scipy import stats

from trcgl import paper
from trcgl.seedtables import paired_differences, seed_means, seed_summary, seed_table, with_paper
from trcgl.results import ResultsStore


@pytest.fixture
def planted(tmp_path):
    """A results file written by hand, as a run would leave it."""
    records = []
    values = {"ConvNeXt": [0.30, 0.32, 0.34], "Ours": [0.35, 0.36, 0.40]}
    for row, vs in values.items():
        for seed, v in enumerate(vs):
            records.append({"table": "table1", "row": row, "metric": "mAP", "value": v, "seed": seed, "group": None})
            records.append({"table": "table1", "row": row, "metric": "mAUC", "value": 0.8 + v / 10, "seed": seed,
                            "group": None})
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"records": records}))
    return ResultsStore(path), values


def test_tables_reproduce_the_planted_results_exactly(planted):
    store, values = planted
    s = seed_summary(store, "table1", ["mAP"]).set_index("row")
    for row, vs in values.items():
        half = stats.t.ppf(0.975, 2) * np.std(vs, ddof=1) / np.sqrt(3)
        assert np.isclose(s.loc[row, "mean"], np.mean(vs))
        assert np.isclose(s.loc[row, "low"], np.mean(vs) - half) and np.isclose(s.loc[row, "high"], np.mean(vs) + half)
        assert s.loc[row, "n"] == 3
    t = seed_table(store, "table1", ["mAP", "mAUC"], notes={"CLIP": "needs pretrained CLIP weights"})
    m, lo, hi = np.mean(values["Ours"]), *s.loc["Ours", ["low", "high"]]
    assert t.loc["Ours", "mAP"] == f"{m:.3f} [{lo:.3f}, {hi:.3f}]"
    assert t.loc["CLIP", "mAP"] == "needs pretrained CLIP weights" and t.loc["Ours", "seeds"] == 3
    assert np.isclose(seed_means(store, "table1").loc["ConvNeXt", "mAUC"], 0.8 + 0.032)
    d = paired_differences(store, "table1", "ConvNeXt", "mAP")
    diffs = np.array(values["Ours"]) - np.array(values["ConvNeXt"])
    assert np.isclose(d.loc["Ours", "ΔmAP vs ConvNeXt"], diffs.mean())
    assert d.loc["Ours", "better on seeds"] == "3/3" and d.loc["Ours", "sure"]


def test_paper_columns_are_the_papers_values(planted):
    store, _ = planted
    ours = seed_means(store, "table1", ["mAP"])
    joined = with_paper(ours, paper.table(1), names={"Ours": "Ours"})
    assert joined.loc["Ours", "mAP (paper)"] == paper.TABLE_1["Ours"][0]
    assert joined.loc["ConvNeXt", "mAUC (paper)"] == paper.TABLE_1["ConvNeXt"][1]
    assert all(c.endswith("(paper)") for c in joined.columns if c not in ours.columns)


def test_a_missing_table_or_row_is_a_clear_error(planted):
    store, _ = planted
    with pytest.raises(KeyError, match="no records for table 'table9'"):
        seed_summary(store, "table9")
    with pytest.raises(KeyError, match="no row 'ViT'"):
        paired_differences(store, "table1", "ViT")


def test_the_benchmark_note_says_what_our_numbers_are_measured_on():
    from trcgl import load_config
    from trcgl.views.common import benchmark_note

    assert "phantom" in benchmark_note(load_config("smoke")) and "[0]" in benchmark_note(load_config("smoke"))
    assert "real PadChest images" in benchmark_note(load_config("smoke", {"data.source": "padchest"}))
