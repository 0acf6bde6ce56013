"""Intervals over seeds and test label rows (trcgl.resampling, trcgl.seedtables): the fast engine
against a plain loop with scikit-learn, clusters moving together, pairing, and the interval
formulas against scipy.stats.bootstrap's."""
import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from trcgl.resampling import INTERVAL_METHODS, interval, resamples, row_weights
from trcgl.seedtables import bootstrap_records, interval_method_text, ratio_interval, resampled_means

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


@pytest.mark.parametrize("per_run", [False, True], ids=["one F1 threshold", "per run and class"])
def test_resampled_means_equal_a_plain_loop_with_sklearn(per_run):
    Y, probs, clusters = _data()
    rows, seeds = ["good", "weak"], [0, 1, 2]
    metrics = ["mAP", "mAUC tail", "macro-F1", "macro-F1 tail"]
    if per_run:     # each (row, seed) its own per-class thresholds, as the tables choose them on selection
        threshold = {(r, s): np.random.default_rng([i, s]).uniform(0.3, 0.8, 4) for i, r in enumerate(rows) for s in seeds}
    else:
        threshold = 0.6
    at = (lambda r, s: threshold[(r, s)]) if per_run else (lambda r, s: np.full(4, 0.6))      # noqa: E731
    point, draws = resampled_means(Y, probs, clusters, GROUPS, rows, seeds, metrics, n=6, seed=4, threshold=threshold)

    def plain(idx, drawn):
        out = {}
        for r in rows:
            ap, auc_tail, f1, f1_tail = [], [], [], []
            for s in drawn:
                y, p = Y[idx], probs[(r, s)][idx]
                ap.append(np.mean([average_precision_score(y[:, c], p[:, c]) for c in range(4)]))
                auc_tail.append(np.mean([roc_auc_score(y[:, c], p[:, c]) for c in (2, 3)]))
                f = [f1_score(y[:, c], p[:, c] >= at(r, s)[c], zero_division=0) for c in range(4)]
                f1.append(np.mean(f))
                f1_tail.append(np.mean(f[2:]))
            out[r] = (np.mean(ap), np.mean(auc_tail), np.mean(f1), np.mean(f1_tail))
        return out

    whole = plain(np.arange(len(Y)), seeds)
    for r in rows:
        for m, expected in zip(metrics, whole[r]):
            assert point[r][m] == pytest.approx(expected, abs=1e-6 if "F1" in m else 1e-12)
    for k, (counts, w) in enumerate(resamples(clusters, seeds, 6, seed=4)):
        got = plain(np.repeat(np.arange(len(Y)), w.astype(int)), np.repeat(seeds, counts.astype(int)))
        for i, r in enumerate(rows):
            for m, expected in zip(metrics, got[r]):
                assert draws[m][k, i] == pytest.approx(expected, abs=1e-6 if "F1" in m else 1e-12)


@pytest.mark.parametrize("method", INTERVAL_METHODS)
def test_paired_differences_separate_signal_from_noise(method):
    Y, probs, clusters = _data(n=400)
    for s in (0, 1, 2):                                             # a second row of pure noise
        probs[("noise 2", s)] = np.random.default_rng([9, s]).random(Y.shape)
    rec = bootstrap_records(Y, probs, clusters, GROUPS, ["good", "weak", "noise", "noise 2"], [0, 1, 2], ["mAUC"],
                            n=200, method=method)
    assert {r["interval"] for r in rec} == {method} and {r["resamples"] for r in rec} == {200}
    diff = {(r["row"], r["reference"]): r for r in rec if r["kind"] == "difference"}
    assert diff[("good", "noise")]["sure"] and diff[("good", "noise")]["low"] > 0
    assert diff[("noise", "good")]["high"] < 0
    assert not diff[("noise", "noise 2")]["sure"]
    assert diff[("noise", "noise 2")]["low"] < 0 < diff[("noise", "noise 2")]["high"]      # noise vs noise covers 0
    for r in (r for r in rec if r["kind"] == "interval"):
        assert r["low"] <= r["value"] <= r["high"]
    noise = next(r for r in rec if r["kind"] == "interval" and r["row"] == "noise")
    assert noise["low"] < 0.5 < noise["high"]                      # chance lies inside the noise row's interval


def test_ratio_interval_uses_the_tables_resamples():
    Y, probs, clusters = _data(n=400)
    r = ratio_interval(Y, probs, clusters, GROUPS, [0, 1, 2], "weak", "noise", "good", "mAUC", n=100, seed=2,
                       interval_method="percentile")
    point, draws = resampled_means(Y, probs, clusters, GROUPS, ["weak", "noise", "good"], [0, 1, 2], ["mAUC"], 100, 2)
    p = point
    assert r["value"] == pytest.approx((p["weak"]["mAUC"] - p["noise"]["mAUC"]) / (p["good"]["mAUC"] - p["noise"]["mAUC"]))
    d = (draws["mAUC"][:, 0] - draws["mAUC"][:, 1]) / (draws["mAUC"][:, 2] - draws["mAUC"][:, 1])
    assert r["low"] == pytest.approx(np.percentile(d, 2.5)) and r["high"] == pytest.approx(np.percentile(d, 97.5))
    assert 0 < r["low"] < r["value"] < r["high"] < 1


def test_ratio_interval_reads_the_configured_method():
    Y, probs, clusters = _data(n=200)
    args = (Y, probs, clusters, GROUPS, [0, 1, 2], "weak", "noise", "good", "mAUC", 100, 2)
    point, draws = resampled_means(Y, probs, clusters, GROUPS, ["weak", "noise", "good"], [0, 1, 2], ["mAUC"], 100, 2)
    d = (draws["mAUC"][:, 0] - draws["mAUC"][:, 1]) / (draws["mAUC"][:, 2] - draws["mAUC"][:, 1])
    for method in ("basic", "bc"):
        r = ratio_interval(*args, interval_method=method)
        assert r["interval"] == method and (r["low"], r["high"]) == pytest.approx(interval(d, r["value"], method))


# ----------------------------------------------------------------------------- interval formulas

def _scipy(data, statistic, method, paired=False):
    return stats.bootstrap(data, statistic, n_resamples=999, method=method, paired=paired, confidence_level=0.9,
                           rng=np.random.default_rng(5))


@pytest.mark.parametrize("method", ["percentile", "basic", "bca"])
def test_interval_formulas_equal_scipy_bootstrap(method):
    """From scipy's own resamples (its bootstrap distribution), our interval is scipy's interval:
    the mean of a skewed sample, and a paired difference (jackknife: leave one pair out)."""
    x = np.random.default_rng(0).exponential(size=25) ** 2
    res = _scipy((x,), np.mean, method)
    jack = [(x.sum() - x) / (len(x) - 1)]
    ours = interval(res.bootstrap_distribution, x.mean(), method, 0.9, jack)
    assert ours == pytest.approx((res.confidence_interval.low, res.confidence_interval.high), rel=1e-12)

    a, b = x, x * 0.8 + np.random.default_rng(1).normal(0, 0.3, len(x))
    res = _scipy((a, b), lambda a, b, axis=-1: np.mean(a - b, axis=axis), method, paired=True)
    d = a - b
    ours = interval(res.bootstrap_distribution, d.mean(), method, 0.9, [(d.sum() - d) / (len(d) - 1)])
    assert ours == pytest.approx((res.confidence_interval.low, res.confidence_interval.high), rel=1e-12)


def test_bc_interval_is_bca_without_acceleration_by_hand():
    draws = np.random.default_rng(3).gamma(2.0, size=2000)
    point = 1.7
    share = ((draws < point).sum() + (draws <= point).sum()) / (2 * len(draws))
    z0 = stats.norm.ppf(share)
    by_hand = np.quantile(draws, stats.norm.cdf([2 * z0 - 1.959963984540054, 2 * z0 + 1.959963984540054]))
    assert interval(draws, point, "bc") == pytest.approx(tuple(by_hand), rel=1e-12)
    assert interval(draws, point, "bc") == pytest.approx(interval(draws, point, "bca", jackknife=[[1.0, 2.0, 3.0]]))
    with pytest.raises(ValueError, match="jackknife"):
        interval(draws, point, "bca")
    assert np.isnan(interval([np.nan, np.nan], point, "bc")[0]) and np.isnan(interval(draws, np.nan, "basic")[1])


@pytest.mark.parametrize("method", ["basic", "bc"])
def test_centred_intervals_undo_the_resampling_bias(method):
    """Resamples that sit above the point estimate (as AP's do on few positives) shift a
    percentile interval above the point; the centred intervals hold the point and are centred on
    the bias-corrected estimate (point − bias), not on the resamples' centre (point + bias)."""
    point, bias, spread = 0.150, 0.012, 0.015
    draws = point + bias + spread * stats.norm.ppf((np.arange(20000) + 0.5) / 20000)     # normal, no noise
    pct = interval(draws, point, "percentile")
    low, high = interval(draws, point, method)
    assert (pct[0] + pct[1]) / 2 == pytest.approx(point + bias, abs=1e-3)
    assert low < point < high
    assert (low + high) / 2 == pytest.approx(point - bias, abs=1e-3)


def test_interval_method_is_named_from_the_records_and_the_config():
    from trcgl.config import load_config

    Y, probs, clusters = _data(n=120)
    rec = bootstrap_records(Y, probs, clusters, GROUPS, ["good", "noise"], [0, 1], ["mAP"], n=30, method="basic")
    assert interval_method_text(rec) == ("95 % basic (reverse-percentile) bootstrap intervals over 30 resamples of "
                                         "seeds and test label rows")
    cfg = load_config(profile="smoke")
    assert f"{cfg.eval.bootstrap:,} resamples" in interval_method_text(cfg)
    assert "bias-corrected" in interval_method_text(cfg.replace({"eval.interval": "bc"}))
    assert interval_method_text([{"kind": "interval", "resamples": 300}]).startswith("95 % percentile")
