"""Intervals over seeds and test label rows (trcgl.resampling, trcgl.seedtables): the fast engine
against a plain loop with scikit-learn, clusters moving together, and pairing."""
import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from trcgl.resampling import resamples, row_weights
from trcgl.seedtables import bootstrap_records, ratio_interval, resampled_means

GROUPS = ["head", "head", "tail", "tail"]


def _data(seed=0, n=120):
    rng = np.random.default_rng(seed)
    Y = (rng.random((n, 4)) < [0.4, 0.3, 0.15, 0.1]).astype(int)
    Y[:2] = [[0] * 4, [1] * 4]
    clusters = np.repeat(np.arange(n // 2), 2)          # every label row rendered twice
    Y[1::2] = Y[::2]
    probs = {}
    for r, signal in (("good", 2.0), ("weak", 0.7), ("noise", 0.0)):
        for s in (0, 1, 2):
            noise = np.random.default_rng([seed, s, int(signal * 10)]).normal(size=Y.shape)
            probs[(r, s)] = 1 / (1 + np.exp(-(signal * (Y - 0.5) + noise)))
    return Y, probs, clusters


def test_row_weights_move_a_cluster_together_and_repeat():
    clusters = np.array([5, 5, 7, 9, 9, 9])
    for w in row_weights(clusters, 50, seed=3):
        assert w[0] == w[1] and w[3] == w[4] == w[5]
        assert w[[0, 2, 3]].sum() == 3                   # three clusters drawn, with replacement
    a = [w.copy() for w in row_weights(clusters, 5, seed=3)]
    b = list(row_weights(clusters, 5, seed=3))
    assert all((x == y).all() for x, y in zip(a, b))


def test_resampled_means_equal_a_plain_loop_with_sklearn():
    Y, probs, clusters = _data()
    rows, seeds = ["good", "weak"], [0, 1, 2]
    point, draws = resampled_means(Y, probs, clusters, GROUPS, rows, seeds, ["mAP", "mAUC tail"], n=6, seed=4)

    def plain(idx, drawn):
        out = {}
        for r in rows:
            ap, auc_tail = [], []
            for s in drawn:
                y, p = Y[idx], probs[(r, s)][idx]
                ap.append(np.mean([average_precision_score(y[:, c], p[:, c]) for c in range(4)]))
                auc_tail.append(np.mean([roc_auc_score(y[:, c], p[:, c]) for c in (2, 3)]))
            out[r] = (np.mean(ap), np.mean(auc_tail))
        return out

    whole = plain(np.arange(len(Y)), seeds)
    for r in rows:
        assert point[r]["mAP"] == pytest.approx(whole[r][0], abs=1e-12)
        assert point[r]["mAUC tail"] == pytest.approx(whole[r][1], abs=1e-12)
    for k, (counts, w) in enumerate(resamples(clusters, seeds, 6, seed=4)):
        got = plain(np.repeat(np.arange(len(Y)), w.astype(int)), np.repeat(seeds, counts.astype(int)))
        for i, r in enumerate(rows):
            assert draws["mAP"][k, i] == pytest.approx(got[r][0], abs=1e-12)
            assert draws["mAUC tail"][k, i] == pytest.approx(got[r][1], abs=1e-12)


def test_paired_differences_separate_signal_from_noise():
    Y, probs, clusters = _data(n=400)
    rec = bootstrap_records(Y, probs, clusters, GROUPS, ["good", "weak", "noise"], [0, 1, 2], ["mAUC"], n=200)
    diff = {(r["row"], r["reference"]): r for r in rec if r["kind"] == "difference"}
    assert diff[("good", "noise")]["sure"] and diff[("good", "noise")]["low"] > 0
    assert diff[("noise", "good")]["high"] < 0
    for r in (r for r in rec if r["kind"] == "interval"):
        assert r["low"] <= r["value"] <= r["high"]
    noise = next(r for r in rec if r["kind"] == "interval" and r["row"] == "noise")
    assert noise["low"] < 0.5 < noise["high"]                      # chance lies inside the noise row's interval


def test_ratio_interval_uses_the_tables_resamples():
    Y, probs, clusters = _data(n=400)
    r = ratio_interval(Y, probs, clusters, GROUPS, [0, 1, 2], "weak", "noise", "good", "mAUC", n=100, seed=2)
    point, draws = resampled_means(Y, probs, clusters, GROUPS, ["weak", "noise", "good"], [0, 1, 2], ["mAUC"], 100, 2)
    p = point
    assert r["value"] == pytest.approx((p["weak"]["mAUC"] - p["noise"]["mAUC"]) / (p["good"]["mAUC"] - p["noise"]["mAUC"]))
    d = (draws["mAUC"][:, 0] - draws["mAUC"][:, 1]) / (draws["mAUC"][:, 2] - draws["mAUC"][:, 1])
    assert r["low"] == pytest.approx(np.percentile(d, 2.5)) and r["high"] == pytest.approx(np.percentile(d, 97.5))
    assert 0 < r["low"] < r["value"] < r["high"] < 1
