"""The claims ledger: every claim of the paper as data, judged against this run's results store by one
written rule, and the paper's statements about its own numbers checked against those numbers.

A :class:`Claim` names the table stage that tests it here (:mod:`trcgl.tables`), the row that should
win and the row it should beat, the metric the verdict uses (tail mAUC, the declared primary
endpoint), the paper's two values (from :mod:`trcgl.paper`, never entering the results store), the
direction the paper claims, and the control comparisons that tell whether this benchmark can see
such an effect at all (positive controls) and whether an effect could come from something else
(negative controls). :func:`verdict` is the rule; :data:`VERDICT_RULE` says it in words for the page.

An :class:`Assertion` is a sentence of the paper about its own tables ("consistent gains across all
metrics"); :func:`contradictions` compares the numbers it speaks about, so the ledger's list of the
paper's internal inconsistencies is computed from :mod:`trcgl.paper`, not typed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from . import paper
from .tables import (BASELINE, CCA, CCA_CONDITIONS, GATE_ONLY, IDEAL_ROW, METHOD, NULL_ROW, OURS, OURS_ROWS, OVERSAMPLING,
                     SHUFFLED_GRAPH, table1_pair)

PRIMARY = "mAUC tail"
#: the reference row of a claim that compares with whichever other row of its table is strongest here
BEST_OTHER = "the strongest other row"

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive at this scale"

VERDICT_RULE = (
    "Each claim is judged on the paired difference (claimed winner − compared row) in tail mAUC, with the "
    "interval the table stage recorded (the same resamples of seeds and test label rows for both rows). "
    "**Not supported**: the interval lies entirely on the side opposite to the paper's claim; or it contains 0 "
    "but excludes the paper's own effect (where the paper's effect is in the claimed direction) while every "
    "positive control of the claim (where it has one) shows its effect, so an effect as large as the paper's is ruled out on a benchmark that can "
    "show one. **Supported**: the interval excludes 0 on the side the paper claims, every positive control shows its "
    "effect (interval excluding 0 on its expected side) and no negative control does. **Inconclusive at this "
    "scale**: everything else, e.g. an interval that contains both 0 and the paper's effect, a positive control "
    "that shows nothing (the benchmark cannot see such an effect), a negative control that shows one (the gain "
    "need not come from what the claim names), or no interval at all.")


@dataclass(frozen=True)
class Control:
    """A comparison in the results store that qualifies a claim: ``positive`` (it must show an effect
    for the benchmark to be able to see the claim's) or ``negative`` (it must not show one)."""

    role: str                   # "positive" | "negative"
    table: str
    row: str
    reference: str
    label: str


@dataclass(frozen=True)
class Claim:
    """One claim of the paper and the comparison of this run that tests it."""

    name: str
    source: str                 # where the paper makes it
    wording: str                # the paper's words (Sec. 4 of its text)
    table: str                  # the table stage of trcgl.tables that tests it here
    row: str                    # the row the paper says wins
    reference: str              # the row it should beat (or BEST_OTHER)
    paper: tuple | None = None  # (paper's metric, paper's value of row, of reference, reference's name) or None
    direction: int = 1          # +1: the row is claimed higher
    controls: tuple[Control, ...] = field(default_factory=tuple)
    metric: str = PRIMARY
    #: the rows of the claimed method (never the compared row for BEST_OTHER); ``counterpart(reference,
    #: rows of the run)``: the (claimed, compared) pair to judge, e.g. Table 1's rows at one feature depth
    own: tuple[str, ...] = ()
    counterpart: Callable[[str, list], tuple[str, str]] | None = None

    def pair(self, reference: str, rows) -> tuple[str, str]:
        """The (claimed, compared) rows to judge, among a run's ``rows``, for the compared row ``reference``."""
        return (self.row, reference) if self.counterpart is None else self.counterpart(reference, list(rows))


def strongest_other(means, metric: str, leave_out=()) -> str | None:
    """The row with the highest seed mean of ``metric`` (``means``: a table's seed means, rows by
    metrics), the rows ``leave_out`` left out: the :data:`BEST_OTHER` of a claim (chapter 8) and
    the strongest baseline of Table 1 (chapter 5). None where no row is left or the metric is absent."""
    if metric not in means:
        return None
    others = means[metric].drop(index=list(leave_out), errors="ignore").dropna()
    return None if others.empty else str(others.idxmax())


def _paper_best_other(table: dict, row, column: int):
    """The paper's strongest row other than ``row`` on a column: (name, value)."""
    name = max((k for k in table if k != row), key=lambda k: table[k][column])
    return name, table[name][column]


def _paper(table: dict, columns, metric: str, row, reference):
    """(metric, value of row, value of reference, reference's name) from a paper table; ``reference``
    None: the paper's strongest other row on that metric."""
    c = list(columns).index(metric)
    name, value = (reference, table[reference][c]) if reference is not None else _paper_best_other(table, row, c)
    return (metric, table[row][c], value, name)


def paper_effect(row: str, reference: str) -> tuple[str, float] | None:
    """The paper's effect (metric, row − reference) for the claim comparing ``row`` with
    ``reference`` (None where the paper reports none): the yardstick a chapter's "no effect"
    must be able to rule out before it says so (:func:`verdict`)."""
    for claim in CLAIMS:
        if (claim.row, claim.reference) == (row, reference) and claim.paper is not None:
            metric, a, b, _ = claim.paper
            return metric, a - b
    return None


def effect_words(diff, effect: tuple[str, float] | None) -> str:
    """A difference's verdict in a chapter's words, by :func:`verdict` (``diff``: anything with
    ``low`` and ``high``, e.g. a row of :func:`trcgl.seedtables.paired_differences`): a gain or a loss where its
    interval excludes 0; otherwise *no effect as large as the paper's* where it also excludes the
    paper's effect, else *inconclusive*."""
    if _shows(diff, 1):
        return "a gain"
    if _shows(diff, -1):
        return "a loss"
    size = None if effect is None else effect[1]
    word, _ = verdict(diff, 1 if size is None or size >= 0 else -1, size)
    if size is None:
        return "inconclusive (the interval contains 0; the paper reports no effect to compare)"
    stands_in = ("" if effect[0] == PRIMARY else
                 f", its {effect[0]} step standing in: the paper gives no {PRIMARY} for this comparison")
    if word == NOT_SUPPORTED:
        return f"no effect as large as the paper's ({size:+.4f} {effect[0]}, which the interval excludes{stands_in})"
    return f"inconclusive (the interval contains both 0 and the paper's {size:+.4f} {effect[0]}{stands_in})"


#: the weight and α the paper chose (its best row in Tables 4 and 5)
PAPER_WEIGHT = max(paper.TABLE_4, key=lambda k: paper.TABLE_4[k][0])
PAPER_ALPHA = max(paper.TABLE_5, key=lambda k: paper.TABLE_5[k][0])

_GCN = "gcn_conditions"
#: the channel-class attention condition with rare findings drawn subtly (its ladder on the finer maps)
_SUBTLE = next(k for k, over in CCA_CONDITIONS.items() if "phantom.tail_subtlety" in over)
_GCN_CONTROLS = (
    Control("positive", _GCN, "tail hidden: with GCN", "tail hidden: without GCN", "with vs without GCN, tail lesions hidden"),
    Control("negative", _GCN, "co-occurrence broken: with GCN", "co-occurrence broken: without GCN",
            "with vs without GCN, co-occurrence broken"),
    Control("negative", _GCN, f"normal: {SHUFFLED_GRAPH}", "normal: without GCN",
            "the GCN over a shuffled graph vs without GCN (its capacity without the co-occurrence)"))
_SYNTHETIC_CONTROLS = (
    Control("positive", "controls", IDEAL_ROW, BASELINE, "ideal generator vs no extra images"),
    Control("negative", "controls", NULL_ROW, BASELINE, "the ideal images without their tail lesions vs no extra images"))


def _t2(row, reference=None):
    return _paper(paper.TABLE_2, paper.COLUMNS_2, "mAUC tail", row, reference)


def _t3(row, reference):
    return _paper(paper.TABLE_3, paper.COLUMNS_1, "mAUC", row, reference)


def _sensitivity(table: dict, key):
    return _paper(table, paper.COLUMNS_1, "mAUC", key, None)


CLAIMS: tuple[Claim, ...] = (
    Claim("Table 1: TRCGL-Net beats every baseline", "Sec. 4.4, Tables 1-2",
          "the proposed method achieves a tail-class mAP of 0.4904, an overall mAP of 0.4408, and an mAUC of 0.8989, "
          "outperforming state-of-the-art methods", "table1", OURS, BEST_OTHER, _t2(OURS),
          own=OURS_ROWS, counterpart=table1_pair),
    Claim("Table 2: TRCGL-Net lifts the tail over ConvNeXt", "Sec. 4.5, Table 2",
          "its tail-class mAUC is also increased to 0.9229", "table1", OURS, "ConvNeXt", _t2(OURS, "ConvNeXt"),
          own=OURS_ROWS, counterpart=table1_pair),
    Claim("Table 3: prompt diffusion adds to the baseline", "Sec. 4.6, Table 3",
          "the learnable text-guided diffusion module is the primary contributor to the overall performance gains",
          "table3", "+ prompt diffusion", "baseline", _t3("+ prompt diffusion", "baseline"),
          controls=_SYNTHETIC_CONTROLS),
    Claim("Table 3: channel-class attention adds to prompt diffusion", "Sec. 4.6, Table 3",
          "the model achieves a slight but consistent improvement to 0.4381 mAP", "table3",
          "+ channel-class attention", "+ prompt diffusion", _t3("+ channel-class attention", "+ prompt diffusion")),
    Claim("Table 3: the label GCN adds to channel-class attention", "Sec. 4.6, Table 3",
          "explicitly modeling label dependencies further enhances the classifier\u2019s ability", "table3",
          "+ label GCN (full)", "+ channel-class attention", _t3("+ label GCN (full)", "+ channel-class attention"),
          controls=_GCN_CONTROLS),
    Claim("Table 4: the synthetic weight the paper chose is best", "Sec. 4.7, Table 4",
          "mAP and mAUC achieve their best performance under a moderate weight (0.5)", "table4",
          f"w = {PAPER_WEIGHT:g}", BEST_OTHER, _sensitivity(paper.TABLE_4, PAPER_WEIGHT)),
    Claim("Table 5: the fusion strength α the paper chose is best", "Sec. 4.7, Table 5",
          "The best performance in terms of mAP and mAUC is achieved when the fusion strength is set to 0.05",
          "table5", f"α = {PAPER_ALPHA:g}", BEST_OTHER, _sensitivity(paper.TABLE_5, PAPER_ALPHA)),
    Claim("Class-aware spatial attention lifts subtle tail findings", "Sec. 3.2, Eq. 11",
          "This fusion strategy integrates global semantic information and class-aware local lesion features, "
          "enabling the model to preserve overall anatomical context while enhancing sensitivity to subtle "
          "abnormalities in tail-class diseases", "cca", f"{_SUBTLE}: {CCA}", f"{_SUBTLE}: {GATE_ONLY}", None),
    Claim("Synthetic images help the tail (against controls)", "Sec. 3.1, Table 3",
          "generate high-quality synthetic samples for tail classes, thereby alleviating the issue of feature scarcity",
          "controls", METHOD, BASELINE, _t3("+ prompt diffusion", "baseline"), controls=_SYNTHETIC_CONTROLS),
    Claim("Synthetic images beat oversampling the real tail rows", "Sec. 2 (re-sampling is 'insufficient')",
          "traditional re-sampling or data augmentation methods can increase sample size, they fail to incorporate "
          "disease-level semantic constraints", "controls", METHOD, OVERSAMPLING, None, controls=_SYNTHETIC_CONTROLS),
    Claim("The label GCN helps the tail through co-occurrence (against controls)", "Sec. 3.3, Table 3",
          "allowing tail classes to leverage discriminative cues from frequently occurring related classes", _GCN,
          "normal: with GCN", "normal: without GCN", _t3("+ label GCN (full)", "+ channel-class attention"),
          controls=_GCN_CONTROLS),
)


# ----------------------------------------------------------------------------- the verdict rule

def _shows(diff: dict, side: int) -> bool:
    """Whether a difference's interval excludes 0 on ``side`` (+1: above 0, -1: below)."""
    low, high = diff.get("low", math.nan), diff.get("high", math.nan)
    if any(v is None or math.isnan(v) for v in (low, high)):
        return False
    return low > 0 if side > 0 else high < 0


def verdict(diff: dict, direction: int = 1, paper_effect: float | None = None,
            controls: list[tuple[str, dict]] = ()) -> tuple[str, str]:
    """The rule of :data:`VERDICT_RULE`. ``diff``: the paired difference (row − reference) with
    ``value``, ``low``, ``high``; ``paper_effect``: the paper's difference on the same comparison
    (None: the paper reports none); ``controls``: (role, difference) pairs, each difference oriented
    so that the claim's direction is an effect. Returns (verdict, the reason in a sentence)."""
    low, high = diff.get("low", math.nan), diff.get("high", math.nan)
    if any(v is None or math.isnan(v) for v in (low, high)):
        return INCONCLUSIVE, "no interval (one seed and no recorded resamples)"
    positives = [d for role, d in controls if role == "positive"]
    negatives = [d for role, d in controls if role == "negative"]
    blind = [d for d in positives if not _shows(d, direction)]
    leaky = [d for d in negatives if _shows(d, direction)]
    if _shows(diff, -direction):
        return NOT_SUPPORTED, "the interval lies on the side opposite to the paper's claim"
    if _shows(diff, direction):
        if blind:
            return INCONCLUSIVE, "a difference on the claimed side, but the positive control shows no effect"
        if leaky:
            return INCONCLUSIVE, "a difference on the claimed side, but the negative control shows one too"
        return SUPPORTED, "the interval excludes 0 on the side the paper claims" + (
            " and the controls behave" if controls else "")
    sized = paper_effect is not None and direction * paper_effect > 0
    if sized and not (low <= paper_effect <= high) and not blind:
        return NOT_SUPPORTED, (f"the interval contains 0 and excludes the paper's effect ({paper_effect:+.4f})"
                               + (" while the positive control shows its effect" if positives else ""))
    if blind:
        return INCONCLUSIVE, "the interval contains 0 and the positive control shows no effect either"
    if sized:
        return INCONCLUSIVE, f"the interval contains both 0 and the paper's effect ({paper_effect:+.4f})"
    return INCONCLUSIVE, "the interval contains 0" + (
        "" if paper_effect is None else " and the paper's effect is not on the side it claims")


# ----------------------------------------------------------------------------- the paper against itself

@dataclass(frozen=True)
class Assertion:
    """A sentence of the paper about its own numbers, and the relation it states between them.

    ``kind``: ``"not below"`` (``row`` ≥ ``reference`` on every metric of ``metrics``), ``"best"``
    (``row`` ≥ every other row of the table on each metric), or ``"not above"`` (for every row,
    column ``metrics[0]`` ≤ column ``metrics[1]``: e.g. the rarer group's AP not above the commoner's)."""

    table: str                  # "1" ... "5" (trcgl.paper)
    wording: str
    kind: str
    metrics: tuple
    row: str | float | None = None
    reference: str | tuple | None = None      # "not below": one row or several


ASSERTIONS: tuple[Assertion, ...] = (
    Assertion("1", "ConvNeXt+CSRA further strengthens performance through class-specific attention recalibration, "
                   "achieving consistent gains across all metrics", "not below", paper.COLUMNS_1,
              "ConvNeXt + CSRA", "ConvNeXt"),
    Assertion("1", "ConvNeXt demonstrates the strongest baseline discriminative capability, achieving significantly "
                   "higher mAP and AUC than the traditional ResNet and EfficientNet", "not below", ("mAP", "mAUC"),
              "ConvNeXt", ("ResNet", "EfficientNet")),
    Assertion("2", "those with 500 to 5,000 samples are defined as medium classes (11 categories), and those with "
                   "fewer than 500 samples are defined as tail classes [...] TRCGL-Net achieves a tail-class mAP of "
                   "0.4904", "not above", ("mAP tail", "mAP medium")),
    Assertion("3", "Upon further incorporating the Channel-Class Attention module, the model achieves a slight but "
                   "consistent improvement to 0.4381 mAP", "not below", paper.COLUMNS_1,
              "+ channel-class attention", "+ prompt diffusion"),
    Assertion("3", "when the Label Relation Modeling module is introduced, the full TRGCL-Net reaches the best "
                   "performance of 0.4408 mAP, 0.8989 mAUC, and 0.4369 F1-score", "best", paper.COLUMNS_1,
              "+ label GCN (full)"),
    Assertion("4", "mAP and mAUC achieve their best performance under a moderate weight (0.5)", "best",
              ("mAP", "mAUC"), 0.5),
    Assertion("5", "The best performance in terms of mAP and mAUC is achieved when the fusion strength is set to "
                   "0.05", "best", ("mAP", "mAUC"), 0.05),
)

_TABLES = {"1": (paper.TABLE_1, paper.COLUMNS_1), "2": (paper.TABLE_2, paper.COLUMNS_2),
           "3": (paper.TABLE_3, paper.COLUMNS_1), "4": (paper.TABLE_4, paper.COLUMNS_1),
           "5": (paper.TABLE_5, paper.COLUMNS_1)}


def paper_tables() -> dict:
    """The paper's tables as {name: (rows, columns)} (the input of :func:`contradictions`)."""
    return dict(_TABLES)


def contradictions(assertion: Assertion, tables: dict | None = None) -> list[str]:
    """What in the paper's own numbers contradicts ``assertion``: one sentence per offending
    (row, metric), empty when the numbers agree with the sentence."""
    rows, columns = (tables or _TABLES)[assertion.table]
    col = {m: list(columns).index(m) for m in assertion.metrics}
    out = []
    if assertion.kind == "not below":
        a = rows[assertion.row]
        refs = assertion.reference if isinstance(assertion.reference, tuple) else (assertion.reference,)
        out += [f"{m}: {assertion.row} {a[col[m]]:.4f} < {ref} {rows[ref][col[m]]:.4f}"
                for ref in refs for m in assertion.metrics if a[col[m]] < rows[ref][col[m]]]
    elif assertion.kind == "best":
        a = rows[assertion.row]
        for m in assertion.metrics:
            over = [k for k in rows if k != assertion.row and rows[k][col[m]] > a[col[m]]]
            out += [f"{m}: {_name(assertion.row)} {a[col[m]]:.4f} < {_name(k)} {rows[k][col[m]]:.4f}" for k in over]
    elif assertion.kind == "not above":
        low, high = assertion.metrics
        out += [f"{name}: {low} {v[col[low]]:.4f} > {high} {v[col[high]]:.4f}"
                for name, v in rows.items() if v[col[low]] > v[col[high]]]
    else:
        raise ValueError(f"unknown assertion kind {assertion.kind!r} (known: not below, best, not above)")
    return out


def _name(key) -> str:
    return f"{key:g}" if isinstance(key, float) else str(key)


def inconsistencies(tables: dict | None = None) -> list[tuple[Assertion, list[str]]]:
    """Every assertion of :data:`ASSERTIONS` that the paper's numbers contradict, with what contradicts it."""
    found = [(a, contradictions(a, tables)) for a in ASSERTIONS]
    return [(a, c) for a, c in found if c]
