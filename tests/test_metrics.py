import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from trcgl.metrics import aggregate_seeds, best_f1_thresholds, bootstrap_means, evaluate, f1_thresholds, per_class_scores

Y = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0], [1, 0, 0]])
P = np.array([[0.9, 0.2, 0.1], [0.3, 0.8, 0.4], [0.6, 0.4, 0.2], [0.2, 0.1, 0.3], [0.4, 0.7, 0.5]])


def test_per_class_scores_match_sklearn():
    t = per_class_scores(Y, P, threshold=0.5)
    for c in range(2):
        assert t.AP[c] == pytest.approx(average_precision_score(Y[:, c], P[:, c]))
        assert t.AUC[c] == pytest.approx(roc_auc_score(Y[:, c], P[:, c]))
        assert t.F1[c] == pytest.approx(f1_score(Y[:, c], P[:, c] >= 0.5))
    assert np.isnan(t.AP[2]) and np.isnan(t.AUC[2]) and np.isnan(t.F1[2])  # no positives


def test_per_class_scores_match_sklearn_on_random_data_with_ties_and_per_class_thresholds():
    rng = np.random.default_rng(7)
    for _ in range(10):
        Yr = (rng.random((80, 5)) < [0.5, 0.2, 0.05, 0.0, 1.0]).astype(int)
        Pr = np.round(rng.random((80, 5)), 2)
        thr = rng.random(5)
        t = per_class_scores(Yr, Pr, thr)
        for c in range(5):
            y, p = Yr[:, c], Pr[:, c]
            both = 0 < y.sum() < len(y)
            assert t.positives[c] == y.sum()
            if both:
                assert t.AP[c] == pytest.approx(average_precision_score(y, p), abs=1e-12)
                assert t.AUC[c] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
            else:
                assert np.isnan(t.AP[c]) and np.isnan(t.AUC[c])
            if y.sum():
                assert t.F1[c] == pytest.approx(f1_score(y, p >= thr[c], zero_division=0), abs=1e-12)
            else:
                assert np.isnan(t.F1[c])


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


def test_ranked_scores_equal_sklearn_with_ties_and_on_repeated_rows():
    """Unweighted: sklearn's AP and AUC per column (many ties). Weighted by a multiplicity per row:
    sklearn's on the rows repeated that often (rows of weight 0 left out)."""
    from trcgl.metrics import RankedScores

    rng = np.random.default_rng(1)
    for _ in range(20):
        Yr = rng.integers(0, 2, (60, 4))
        Yr[:2] = [[0] * 4, [1] * 4]
        Pr = np.round(rng.random((60, 4)), 1)  # many ties
        ranked = RankedScores(Yr, Pr)
        ap, auc = ranked.scores()
        w = rng.integers(0, 4, 60)
        w[:2] = 1
        wap, wauc = ranked.scores(w)
        keep = np.repeat(np.arange(60), w)
        for c in range(4):
            assert ap[c] == pytest.approx(average_precision_score(Yr[:, c], Pr[:, c]), abs=1e-12)
            assert auc[c] == pytest.approx(roc_auc_score(Yr[:, c], Pr[:, c]), abs=1e-12)
            assert wap[c] == pytest.approx(average_precision_score(Yr[keep, c], Pr[keep, c]), abs=1e-12)
            assert wauc[c] == pytest.approx(roc_auc_score(Yr[keep, c], Pr[keep, c]), abs=1e-12)
    # a column whose weighted rows lack positives is undefined
    ranked = RankedScores(np.array([[1], [0], [0]]), np.array([[0.9], [0.1], [0.5]]))
    assert np.isnan(ranked.scores(np.array([0, 1, 1]))[0][0]) and np.isnan(ranked.scores(np.array([0, 1, 1]))[1][0])


def test_ranking_means_equal_evaluate():
    from trcgl.metrics import ranking_means

    groups = ["head", "tail", "tail"]
    for empty in ("exclude", "released"):
        full = evaluate(Y, P, ["a", "b", "c"], groups, empty=empty).means
        fast = ranking_means(Y, P, groups, empty=empty)
        for k in ("mAP", "mAUC", "mAP tail", "mAUC head"):
            assert fast[k] == pytest.approx(full[k], abs=1e-12)


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


def test_seed_aggregation_equals_the_hand_written_t_interval():
    from scipy import stats

    v = np.array([0.31, 0.29, 0.35, 0.33, 0.30])
    for level in (0.95, 0.9):
        half = stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
        agg = aggregate_seeds(list(v) + [np.nan], level)
        assert agg["n"] == 5
        assert np.allclose([agg["low"], agg["high"]], [v.mean() - half, v.mean() + half], rtol=1e-12)


def test_f1_thresholds_follow_the_rule_and_come_from_the_selection_split():
    """``selection``: per class the argmax of F1 on the selection split (a class without positives
    there keeps the fixed threshold); ``fixed``: the fixed threshold everywhere; no other rule."""
    rng = np.random.default_rng(0)
    Ys = (rng.random((60, 3)) < [0.3, 0.2, 0.0]).astype(int)
    Ps = np.clip(0.5 * Ys + 0.6 * rng.random((60, 3)), 0, 1)
    chosen = f1_thresholds("selection", Ys, Ps, 0.4)
    for c in (0, 1):
        best = max(f1_score(Ys[:, c], Ps[:, c] >= t, zero_division=0) for t in Ps[:, c])
        assert f1_score(Ys[:, c], Ps[:, c] >= chosen[c], zero_division=0) == pytest.approx(best)
    assert chosen[2] == 0.4
    assert f1_thresholds("fixed", Ys, Ps, 0.4).tolist() == [0.4, 0.4, 0.4]
    with pytest.raises(ValueError, match="eval.f1_thresholds"):
        f1_thresholds("test", Ys, Ps, 0.4)
