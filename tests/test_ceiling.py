"""The learnability ceiling's per-class table (chapter 1)."""
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from trcgl.ceiling import ceiling_table, failing


def _data(n=400, seed=0):
    rng = np.random.default_rng(seed)
    Y = rng.integers(0, 2, (n, 3))
    P = np.c_[Y[:, 0] + rng.normal(0, 0.3, n), rng.random(n), Y[:, 2] * 0.3 + rng.random(n)]
    return Y, P


def test_the_ceiling_is_sklearn_auc_with_an_interval_and_flags_a_class_at_chance():
    Y, P = _data()
    table = ceiling_table(Y, P, np.arange(len(Y)), ["a", "b", "c"], ["head", "tail", "tail"], [5, 6, 7], n_boot=200)
    for c, name in enumerate("abc"):
        assert table.loc[name, "AUC"] == pytest.approx(roc_auc_score(Y[:, c], P[:, c]))
        assert table.loc[name, "low"] <= table.loc[name, "AUC"] <= table.loc[name, "high"]
    assert table.loc["a", "low"] > 0.9 and table.loc["b", "low"] < 0.5 < table.loc["b", "high"]
    assert "b" in failing(table, 0.8) and "a" not in failing(table, 0.8)
    assert list(table["training positives"]) == [5, 6, 7]
    assert (table["test images"] == Y.sum(0)).all()


def width(table):
    return (table["high"] - table["low"]).to_numpy()


def test_repeated_label_rows_widen_the_interval_instead_of_narrowing_it():
    """Repeats of a label row (fresh anatomy, same labels) are resampled together: copying every row
    four times leaves the AUC alone and must not shrink the interval as four independent rows would."""
    Y, P = _data(120, seed=1)
    once = ceiling_table(Y, P, np.arange(120), list("abc"), ["head"] * 3, [0] * 3, n_boot=400)
    Y4, P4 = np.repeat(Y, 4, axis=0), np.repeat(P, 4, axis=0)
    clustered = ceiling_table(Y4, P4, np.repeat(np.arange(120), 4), list("abc"), ["head"] * 3, [0] * 3, n_boot=400)
    naive = ceiling_table(Y4, P4, np.arange(480), list("abc"), ["head"] * 3, [0] * 3, n_boot=400)
    assert np.allclose(clustered["AUC"], once["AUC"])
    assert (width(clustered) > 0.8 * width(once)).all()
    assert (width(naive) < 0.7 * width(once)).all()
    assert (clustered["test label rows"] == once["test images"]).all()


def test_a_class_without_positives_is_not_scored_and_fails():
    Y, P = _data(50)
    Y[:, 1] = 0
    table = ceiling_table(Y, P, np.arange(50), list("abc"), ["head"] * 3, [0] * 3, n_boot=20)
    assert np.isnan(table.loc["b", ["AUC", "low", "high"]].astype(float)).all()
    assert "b" in failing(table, 0.5)
    assert isinstance(table, pd.DataFrame)
