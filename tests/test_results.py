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
