"""The diagnostic ladder of the generator (chapter 2): at which step is a tail class lost?

Every rung is scored per target class by the **oracle** (:mod:`trcgl.diffusion.oracle`, trained on
many fresh renders, so it has seen plenty of every tail class) or, for rung (d), by a classifier
trained on synthetic images alone:

(a) **real images**: the oracle's ROC AUC of class c on real test images, positives against
    negatives; the ceiling of every rung below;
(b) **VAE reconstructions** of the same test images: what a latent generator can reach at most.
    A lesion the autoencoder does not keep cannot be generated;
(c) **samples prompted with c** against real test images without c ("GAN-test"), and against
    unconditional samples: does the prompt put the finding in?
(d) **classification accuracy score** (CAS, Ravuri & Vinyals 2019): a classifier trained on the
    generator's images alone, scored on the real test split; beside it the same classifier
    trained on the ideal generator's renders of the very same label sets (the most such a set
    could teach);
(e) **precision, recall, density and coverage** (Naeem et al. 2020, the ``prdc`` package) of the
    samples prompted with c against real test images with c, in the oracle's feature space;
    beside them the same four numbers for real selection images with c (a perfect generator's
    values at these sample sizes).

AUCs come with a bias-corrected percentile interval over resamples of test **label rows** (an image
and its repeats are drawn together, :mod:`trcgl.resampling`) and of synthetic images; chance is
0.5. PRDC's interval is a subsampling interval (80 % of each side drawn without replacement):
bootstrap duplicates would sit at distance 0 from themselves and inflate k-NN scores.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..metrics import RankedScores
from ..resampling import interval, row_weights

#: The rungs of the ladder, in order (column prefixes of :func:`ladder_table`).
RUNGS = {
    "a": "real images",
    "b": "VAE reconstructions",
    "c": "prompted samples vs real negatives",
    "c'": "prompted samples vs unconditional samples",
    "d": "CAS: trained on generated images",
    "d*": "CAS: trained on ideal renders of the same label sets",
}


def two_sample_auc(pos, neg, pos_clusters=None, neg_clusters=None, n_boot: int = 1000, seed: int = 0,
                   method: str = "bc", level: float = 0.95) -> tuple[float, float, float]:
    """ROC AUC of scores ``pos`` (should be high) against ``neg``, with a ``method`` interval over
    ``n_boot`` joint resamples of the clusters (default: every score its own cluster; clusters of
    the two sides must not share labels). (NaN, NaN, NaN) when a side is empty."""
    pos, neg = np.asarray(pos, float), np.asarray(neg, float)
    if len(pos) == 0 or len(neg) == 0:
        return (float("nan"),) * 3
    pc = np.asarray([f"p{i}" for i in range(len(pos))] if pos_clusters is None else [f"p{c}" for c in pos_clusters])
    nc = np.asarray([f"n{i}" for i in range(len(neg))] if neg_clusters is None else [f"n{c}" for c in neg_clusters])
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))][:, None]
    ranked = RankedScores(y, np.r_[pos, neg][:, None])
    auc = float(ranked.scores()[1][0])
    draws = np.array([ranked.scores(w)[1][0] for w in row_weights(np.r_[pc, nc], n_boot, seed)])
    lo, hi = interval(draws[np.isfinite(draws)], auc, method, level)
    return auc, float(lo), float(hi)


def _prdc(real: np.ndarray, fake: np.ndarray, k: int) -> dict:
    """``prdc.compute_prdc`` without its print of the sample sizes, its pairwise distances
    computed in this thread: prdc asks scikit-learn for 8 joblib jobs, which on these few hundred
    rows cost 30 times the distances themselves (the results are the same)."""
    import contextlib
    import io

    from joblib import parallel_config
    from prdc import compute_prdc

    with contextlib.redirect_stdout(io.StringIO()), parallel_config(backend="sequential"):
        return compute_prdc(real, fake, nearest_k=k)


def prdc_interval(real: np.ndarray, fake: np.ndarray, k: int = 5, n_sub: int = 200, frac: float = 0.8,
                  seed: int = 0, level: float = 0.95) -> dict:
    """Precision, recall, density and coverage of ``fake`` against ``real`` feature rows (``prdc``)
    and a subsampling interval of each; NaN when a side has no more than ``k`` rows."""
    names = ("precision", "recall", "density", "coverage")
    if min(len(real), len(fake)) <= k + 1:
        return {f"{n}{s}": float("nan") for n in names for s in ("", " low", " high")}
    point = _prdc(real, fake, k)
    rng = np.random.default_rng(seed)
    nr, nf = max(int(frac * len(real)), k + 2), max(int(frac * len(fake)), k + 2)
    subs = [_prdc(real[rng.choice(len(real), nr, replace=False)], fake[rng.choice(len(fake), nf, replace=False)], k)
            for _ in range(n_sub)]
    out = {}
    a = (1 - level) / 2
    for n in names:
        vals = np.array([s[n] for s in subs])
        out[n], out[f"{n} low"], out[f"{n} high"] = float(point[n]), *map(float, np.quantile(vals, [a, 1 - a]))
    return out


def ladder_table(classes, targets, test_Y, test_clusters, P_real, P_recon, P_synth, synth_targets, P_uncond,
                 P_cas=None, P_cas_ideal=None, n_boot: int = 1000, seed: int = 0, method: str = "bc") -> pd.DataFrame:
    """One row per target class: the AUC of rungs (a) to (d*) (:data:`RUNGS`), each with its interval.

    ``P_real`` / ``P_recon``: the oracle's probabilities (N, C) on the test images and on their VAE
    reconstructions (rung b; omitted when None); ``P_synth``: on samples, prompted for ``synth_targets``; ``P_uncond``: on
    unconditional samples; ``P_cas`` / ``P_cas_ideal``: the CAS classifiers' probabilities on the
    test images (rungs d and d*; omitted when None)."""
    test_Y, synth_targets = np.asarray(test_Y), np.asarray(synth_targets)
    clusters = np.asarray(test_clusters)
    rows = []
    for c in targets:
        y = test_Y[:, c] == 1
        s = P_synth[synth_targets == c, c]
        pairs = {"a": (P_real[y, c], P_real[~y, c], clusters[y], clusters[~y])}
        if P_recon is not None:
            pairs["b"] = (P_recon[y, c], P_recon[~y, c], clusters[y], clusters[~y])
        pairs["c"], pairs["c'"] = (s, P_real[~y, c], None, clusters[~y]), (s, P_uncond[:, c], None, None)
        if P_cas is not None:
            pairs["d"] = (P_cas[y, c], P_cas[~y, c], clusters[y], clusters[~y])
        if P_cas_ideal is not None:
            pairs["d*"] = (P_cas_ideal[y, c], P_cas_ideal[~y, c], clusters[y], clusters[~y])
        row = {"class": classes[c], "samples": int(len(s))}
        for k, (p, n, pc, nc) in pairs.items():
            row[k], row[f"{k} low"], row[f"{k} high"] = two_sample_auc(p, n, pc, nc, n_boot, seed + 17 * int(c), method)
        rows.append(row)
    return pd.DataFrame(rows).set_index("class")


def meets_bar(table: pd.DataFrame, good: float = 0.8) -> list[str]:
    """The classes whose prompted samples reach rung (c) ≥ ``good`` against real negatives and lie
    above unconditional samples (rung (c′) interval above chance): the bar of issue 21."""
    return [c for c in table.index if table.loc[c, "c"] >= good and table.loc[c, "c' low"] > 0.5]


#: the rungs :func:`lost_at` checks, in order; (c') compares two kinds of samples, so it is held to chance
#: only (the prompt adds something), the others also to the bar ``good``
LOST_ORDER = ("a", "b", "c", "c'", "d")
RELATIVE_RUNGS = ("c'",)


def lost_rule(good: float = 0.8) -> str:
    """:func:`lost_at`'s rule in words (the ladder's text prints it)."""
    absolute = ", ".join(f"({k})" for k in LOST_ORDER if k not in RELATIVE_RUNGS)
    relative = ", ".join(f"({k})" for k in RELATIVE_RUNGS)
    return (f"a class is lost at the first rung, in the order {', '.join(f'({k})' for k in LOST_ORDER)}, that fails: "
            f"{absolute} fail below an AUC of {good:g} or where the interval does not exclude 0.5 (chance); {relative} "
            "fails only where its interval does not exclude 0.5 (the prompted samples are not told apart from "
            "unconditional ones). A failure at (a) or (b) is passed over where (c) passes: samples that the judge "
            "tells from real negatives show that neither the judge nor the autoencoder lost the class. (d*) is a "
            "reference, not a rung a class can be lost at")


def lost_at(table: pd.DataFrame, good: float = 0.8) -> pd.Series:
    """Per class, the first rung of :data:`LOST_ORDER` (where the table has it) that fails by
    :func:`lost_rule` (a failing (a) or (b) passed over where (c) passes): where the class is lost
    ("kept" when none is)."""
    def fails(row, k) -> bool:
        return not row[f"{k} low"] > 0.5 or (k not in RELATIVE_RUNGS and not row[k] >= good)

    out = {}
    for name, row in table.iterrows():
        out[name] = "kept"
        for k in LOST_ORDER:
            if k not in row or not fails(row, k):
                continue
            if k in ("a", "b") and "c" in row and not fails(row, "c"):
                continue                    # the samples pass: the class was not lost before them
            out[name] = f"({k}) {RUNGS[k]}"
            break
    return pd.Series(out, name="lost at")


def prdc_table(classes, targets, F_real_pos, F_synth, synth_targets, F_select_pos, k: int = 5,
               seed: int = 0) -> pd.DataFrame:
    """Rung (e) per target class: PRDC of the prompted samples against real test images with the
    class (``F_real_pos[c]``: their oracle features), and of real selection images with the class
    (``F_select_pos[c]``) against the same test images, the reference."""
    synth_targets = np.asarray(synth_targets)
    rows = []
    for c in targets:
        for who, fake in (("generated", F_synth[synth_targets == c]), ("real (selection)", F_select_pos[c])):
            rows.append({"class": classes[c], "images": who, "n": len(fake),
                         **prdc_interval(F_real_pos[c], fake, k, seed=seed + int(c))})
    return pd.DataFrame(rows).set_index(["class", "images"])
