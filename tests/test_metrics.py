import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from trcgl.metrics import aggregate_seeds, best_f1_thresholds, bootstrap_means, evaluate, per_class_scores

Y = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0], [1, 0, 0]])
P = np.array([[0.9, 0.2, 0.1], [0.3, 0.8, 0.4], [0.6, 0.4, 0.2], [0.2, 0.1, 0.3], [0.4, 0.7, 0.5]])


def test_per_class_scores_match_sklearn():
    t = per_class_scores(Y, P, threshold=0.5)
    for c in range(2):
        assert t.AP[c] == pytest.approx(average_precision_score(Y[:, c], P[:, c]))
        assert t.AUC[c] == pytest.approx(roc_auc_score(Y[:, c], P[:, c]))
        assert t.F1[c] == pytest.approx(f1_score(Y[:, c], P[:, c] >= 0.5))
    assert np.isnan(t.AP[2]) and np.isnan(t.AUC[2]) and np.isnan(t.F1[2])  # no positives


def test_empty_classes_are_excluded_or_filled_as_released():
    ev = evaluate(Y, P, ["a", "b", "c"], ["head", "tail", "tail"])
    ap = [average_precision_score(Y[:, c], P[:, c]) for c in range(2)]
    auc = [roc_auc_score(Y[:, c], P[:, c]) for c in range(2)]
    assert ev.excluded == ["c"]
    assert ev.means["mAP"] == pytest.approx(np.mean(ap))
    assert ev.means["mAP tail"] == pytest.approx(ap[1])
    assert ev.means["mAUC head"] == pytest.approx(auc[0])
    assert np.isnan(ev.means["mAP medium"])
    rel = evaluate(Y, P, ["a", "b", "c"], ["head", "tail", "tail"], empty="released")
    assert rel.means["mAP"] == pytest.approx((ap[0] + ap[1] + 0.0) / 3)
    assert rel.means["mAUC"] == pytest.approx((auc[0] + auc[1] + 0.5) / 3)
    with pytest.raises(ValueError):
        evaluate(Y, P, ["a", "b", "c"], ["head"] * 3, empty="zero")


def test_best_f1_threshold_is_the_argmax():
    thr = best_f1_thresholds(Y, P)
    for c in range(2):
        grid = np.unique(P[:, c])
        best = max(f1_score(Y[:, c], P[:, c] >= t) for t in grid)
        assert f1_score(Y[:, c], P[:, c] >= thr[c]) == pytest.approx(best)
    assert thr[2] == 0.5


def test_fast_ap_and_auc_equal_sklearn_with_ties():
    from trcgl.metrics import _ap_fast, _auc_fast

    rng = np.random.default_rng(1)
    for _ in range(20):
        y = rng.integers(0, 2, 60)
        y[:2] = [0, 1]
        p = np.round(rng.random(60), 1)  # many ties
        assert _ap_fast(y, p) == pytest.approx(average_precision_score(y, p))
        assert _auc_fast(y, p) == pytest.approx(roc_auc_score(y, p))


def test_bootstrap_interval_contains_the_point_and_narrows_with_data():
    rng = np.random.default_rng(0)
    Yb = rng.integers(0, 2, (400, 3))
    Pb = np.clip(Yb * 0.3 + rng.random((400, 3)) * 0.7, 0, 1)
    ci = bootstrap_means(Yb, Pb, ["a", "b", "c"], ["head", "medium", "tail"], n=200)
    assert set(ci.index) == {"mAP", "mAUC"} | {f"{m} {g}" for m in ("mAP", "mAUC") for g in ("head", "medium", "tail")}
    assert (ci.low <= ci.value).all() and (ci.value <= ci.high).all()
    small = bootstrap_means(Yb[:60], Pb[:60], ["a", "b", "c"], ["head", "medium", "tail"], n=200)
    assert (small.high - small.low)["mAP"] > (ci.high - ci.low)["mAP"]


def test_seed_aggregation_t_interval():
    agg = aggregate_seeds([0.30, 0.34, 0.32])
    assert agg["mean"] == pytest.approx(0.32) and agg["n"] == 3
    # t(0.975, 2) = 4.303; sd = 0.02; half = 4.303 * 0.02 / sqrt(3)
    assert agg["high"] - agg["mean"] == pytest.approx(4.3027 * 0.02 / np.sqrt(3), rel=1e-3)
    assert np.isnan(aggregate_seeds([0.3])["low"])


def test_bootstrap_auc_matches_sklearn_and_its_interval_narrows_with_data():
    from trcgl.metrics import bootstrap_auc

    rng = np.random.default_rng(3)
    widths = []
    for n in (60, 2000):
        y = rng.integers(0, 2, n)
        p = y * 0.4 + rng.random(n)
        auc, lo, hi = bootstrap_auc(y, p, n=300, seed=0)
        assert auc == pytest.approx(roc_auc_score(y, p))
        assert lo <= auc <= hi
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 3
    assert all(np.isnan(bootstrap_auc(np.zeros(5), np.arange(5.0))))
