"""The generator's diagnostic ladder: the two-sample AUC against scikit-learn, intervals that cover
and shrink, PRDC of identical and disjoint samples, and where a class is lost."""
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from trcgl.diffusion.ladder import ladder_table, lost_at, meets_bar, prdc_interval, two_sample_auc


def test_two_sample_auc_is_sklearns_and_its_interval_resamples_clusters():
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(1, 1, 40), rng.normal(0, 1, 300)
    auc, lo, hi = two_sample_auc(pos, neg, n_boot=400)
    assert auc == pytest.approx(roc_auc_score(np.r_[np.ones(40), np.zeros(300)], np.r_[pos, neg]))
    assert lo < auc < hi and 0.5 < lo
    # each positive repeated 5 times: the same AUC, but as 8 clusters the interval is wider than as 40 images
    rep = np.repeat(pos[:8], 5)
    a1, l1, h1 = two_sample_auc(rep, neg, n_boot=400)
    a2, l2, h2 = two_sample_auc(rep, neg, np.repeat(np.arange(8), 5), None, n_boot=400)
    assert a1 == a2 and (h2 - l2) > 1.5 * (h1 - l1)
    assert np.isnan(two_sample_auc([], neg)[0])
    # no signal: the interval covers chance
    _, lo, hi = two_sample_auc(rng.normal(0, 1, 60), rng.normal(0, 1, 300), n_boot=400)
    assert lo < 0.5 < hi


def test_prdc_of_a_copy_is_high_and_of_a_far_away_sample_is_zero():
    rng = np.random.default_rng(1)
    real = rng.normal(0, 1, (60, 4))
    same = prdc_interval(real, real + rng.normal(0, 1e-3, real.shape), n_sub=20)
    far = prdc_interval(real, rng.normal(50, 1, (60, 4)), n_sub=20)
    assert same["precision"] > 0.9 and same["coverage"] > 0.9
    assert far["precision"] == 0 and far["recall"] == 0 and far["coverage"] == 0
    assert same["precision low"] <= same["precision high"]
    assert np.isnan(prdc_interval(real[:3], real[:3])["precision"])


def test_ladder_names_the_rung_where_a_class_is_lost():
    rng = np.random.default_rng(2)
    n = 400
    Y = np.zeros((n, 2), np.uint8)
    Y[:40, 0] = 1
    Y[40:80, 1] = 1
    clusters = np.arange(n)
    P_real = np.where(Y == 1, 0.9, 0.1) + rng.normal(0, 0.05, Y.shape)
    P_recon = P_real.copy()
    P_recon[:, 1] = rng.random(n)                               # class 1 does not survive the autoencoder
    synth_t = np.repeat([0, 1], 30)
    P_synth = np.where(np.eye(2)[synth_t] == 1, 0.8, 0.1) + rng.normal(0, 0.05, (60, 2))
    P_unc = 0.1 + rng.normal(0, 0.05, (50, 2))
    t = ladder_table(["x", "y"], [0, 1], Y, clusters, P_real, P_recon, P_synth, synth_t, P_unc, n_boot=200)
    assert t.loc["x", "a"] > 0.99 and t.loc["x", "c"] > 0.9 and t.loc["x", "c'"] > 0.9
    assert t.loc["y", "b low"] < 0.5 < t.loc["y", "b high"]
    assert "d" not in t.columns
    lost = lost_at(t)
    # y's reconstructions are at chance, yet its samples pass (c): rung (b) is passed over (a class lost
    # in the autoencoder could not be drawn; the next test has one that fails (c) too)
    assert lost["x"] == "kept" and lost["y"] == "kept"
    assert isinstance(t, pd.DataFrame) and t.loc["x", "samples"] == 30
    assert meets_bar(t) == ["x", "y"]                          # rung (b) is not part of the bar
    no_b = ladder_table(["x", "y"], [0, 1], Y, clusters, P_real, None, P_synth, synth_t, P_unc, n_boot=200)
    assert "b" not in no_b.columns                              # without reconstructions: no rung (b)
    pd.testing.assert_frame_equal(no_b, t.drop(columns=["b", "b low", "b high"]))


def test_rung_c_prime_is_held_to_chance_only_and_comes_before_d():
    """(c') compares prompted with unconditional samples: a class is lost there only where its interval
    does not exclude 0.5, not for an AUC under the bar the absolute rungs use; it is checked after
    (c) and before (d), and the rule's sentence names that order."""
    from trcgl.diffusion.ladder import lost_rule

    def row(**aucs):
        out = {}
        for k, (v, lo, hi) in aucs.items():
            out |= {k: v, f"{k} low": lo, f"{k} high": hi}
        return out

    ok = (0.95, 0.9, 0.99)
    t = pd.DataFrame.from_dict({
        "weak prompt": row(a=ok, b=ok, c=ok, **{"c'": (0.74, 0.62, 0.85)}, d=ok),       # above chance: kept
        "no prompt": row(a=ok, b=ok, c=ok, **{"c'": (0.55, 0.45, 0.66)}, d=(0.5, 0.4, 0.6)),   # lost at (c'), not (d)
        "bad cas": row(a=ok, b=ok, c=ok, **{"c'": ok}, d=(0.7, 0.6, 0.8)),
        # the autoencoder just under the bar, yet the samples pass (c): not lost at (b); lost at (d)
        "samples beat the reconstructions": row(a=ok, b=(0.79, 0.73, 0.84), c=(0.98, 0.97, 0.99), **{"c'": ok},
                                                d=(0.54, 0.45, 0.62)),
        "lost in the autoencoder": row(a=ok, b=(0.6, 0.52, 0.68), c=(0.6, 0.55, 0.65), **{"c'": ok}, d=ok),
    }, orient="index")
    lost = lost_at(t)
    assert lost["weak prompt"] == "kept" and lost["no prompt"].startswith("(c')") and lost["bad cas"].startswith("(d)")
    assert lost["samples beat the reconstructions"].startswith("(d)") and lost["lost in the autoencoder"].startswith("(b)")
    assert lost_at(t, good=0.7)["bad cas"] == "kept"
    rule = lost_rule(0.8)
    assert "(a), (b), (c), (c'), (d)" in rule and "0.8" in rule


def test_the_generator_comparison_tool_refuses_an_unknown_variant_in_one_line():
    import subprocess
    import sys
    from pathlib import Path

    tool = str(Path(__file__).resolve().parents[1] / "tools" / "compare_generators.py")
    r = subprocess.run([sys.executable, tool, "--variant", "no such recipe"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "unknown generator variant 'no such recipe'" in r.stderr
    r = subprocess.run([sys.executable, tool, "--set", "diffusion.epochs=-1"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "diffusion.epochs" in r.stderr
