import pytest

from trcgl.results import ResultsStore


def test_add_replace_and_pivot(tmp_path):
    path = tmp_path / "results.json"
    store = ResultsStore(path)
    store.add("t1", "baseline", "mAP", 0.30, seed=0)
    store.add("t1", "baseline", "mAP", 0.40, seed=1)
    store.add("t1", "ours", "mAP", 0.50, seed=0)
    store.add("t1", "baseline", "mAP", 0.20, seed=0)  # replaces the first record
    again = ResultsStore(path)  # reloaded from disk
    assert len(again.records("t1")) == 3
    table = again.table("t1")
    assert list(table.index) == ["baseline", "ours"]
    assert table.loc["baseline", "mAP"] == pytest.approx(0.30)  # mean of 0.20 and 0.40
    assert table.loc["ours", "mAP"] == pytest.approx(0.50)
    with pytest.raises(KeyError, match="no records"):
        again.table("t2")


def test_rejects_a_foreign_file(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a trcgl results file"):
        ResultsStore(path)


def test_a_truncated_results_file_is_set_aside_and_started_afresh(tmp_path, caplog):
    """A results file cut short (a copy, a disk error) is moved aside with a warning naming it,
    and the next table written starts a new one (instead of a traceback on every run)."""
    path = tmp_path / "results-smoke.json"
    store = ResultsStore(path)
    store.replace_table("t1", [{"row": "a", "metric": "mAP", "value": 0.5}])
    store.replace_table("t2", [{"row": "b", "metric": "mAP", "value": 0.25}])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    again = ResultsStore(path)
    assert again.records() == [] and str(path) in caplog.text
    assert [p.name.split(".corrupt-")[0] for p in tmp_path.glob("*corrupt*")] == ["results-smoke.json"]
    again.replace_table("t2", [{"row": "b", "metric": "mAP", "value": 0.25}])
    assert [r["table"] for r in ResultsStore(path).records()] == ["t2"]
