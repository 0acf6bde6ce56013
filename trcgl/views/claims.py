"""Chapter 8 (the claims ledger): one row per claim of the paper, the paper's number beside this
run's paired difference in tail mAUC with its interval and controls, and a verdict by the rule of
:mod:`trcgl.claims`; then the paper's statements that its own numbers contradict.

It reads only tables that other chapters already compute (the table stages of chapters 3-6), and
this run's numbers only from the results store (:func:`trcgl.seedtables.paired_differences`)."""
from __future__ import annotations

import math

import pandas as pd

from .. import claims as C
from .. import stages as S
from ..seedtables import paired_differences, results_store, seed_means
from ..tables import WHOLE_OURS
from .common import table


def _tables() -> list[str]:
    names = [c.table for c in C.CLAIMS] + [k.table for c in C.CLAIMS for k in c.controls]
    return list(dict.fromkeys(names))


def needs(cfg) -> list:
    return [S.table(cfg, name) for name in _tables()]


def setting(ch) -> str:
    """What the ledger's numbers are: the profile, the seeds, the interval, the primary endpoint."""
    store = results_store(ch.cfg)
    recorded = [r for name in _tables() for r in store.records(name) if r.get("kind") == "difference"]
    # the method each record names (records without one are percentile intervals), its level and resamples
    kinds = sorted({(r.get("interval", "percentile"), r.get("level", 0.95), r["resamples"])
                    for r in recorded if r.get("resamples")})
    how = ("; ".join(f"a {100 * level:g}% {method} bootstrap interval over {n} joint resamples of the seeds and the "
                     f"test label rows" for method, level, n in kinds) if kinds else "a paired t-interval over the seeds")
    depth = ""
    if WHOLE_OURS in {r.get("row") for r in store.records("table1")}:
        depth = (" Table 1 has TRCGL-Net both on the cut ConvNeXt features and on the whole network, so its claims set "
                 "TRCGL-Net against each baseline at that baseline's feature depth (the paper's ConvNeXt being a whole "
                 "network).")
    return (f"profile {ch.cfg.profile}; seeds {list(ch.cfg.seeds)}; every difference paired (both rows on the same "
            f"seeds and test resamples), with {how}, as the table stages recorded them; the verdict on {C.PRIMARY} "
            f"(the primary endpoint).{depth}")


def rule() -> str:
    """The verdict rule, in words (the page prints it above the ledger)."""
    return C.VERDICT_RULE


def _difference(store, tbl: str, row: str, reference: str, metric: str) -> dict | None:
    """The store's paired difference row − reference (value, low, high), or None when either row has
    no results in this run."""
    try:
        d = paired_differences(store, tbl, reference, metric)
    except KeyError:
        return None
    if d.empty or row not in d.index:
        return None
    r = d.loc[row]
    return {"value": float(r.iloc[0]), "low": float(r["low"]), "high": float(r["high"])}


def _reference(means: pd.DataFrame, claim: C.Claim) -> str | None:
    """The claim's compared row; for :data:`~trcgl.claims.BEST_OTHER` the row with the highest mean of
    the claim's metric in this run (``means``: its table's seed means), the claimed method's rows left out."""
    if claim.reference != C.BEST_OTHER:
        return claim.reference
    return C.strongest_other(means, claim.metric, (claim.row, *claim.own))


def _interval(d: dict | None) -> str:
    if d is None:
        return "not run here"
    if math.isnan(d["low"]):
        return f"{d['value']:+.4f} (no interval)"
    return f"{d['value']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]"


def _paper_cell(claim: C.Claim) -> str:
    if claim.paper is None:
        return "no number in the paper"
    metric, a, b, ref = claim.paper
    ref = f"{ref:g}" if isinstance(ref, float) else ref
    what = metric if metric == claim.metric else f"{metric}; no {claim.metric} reported"
    return f"{a:.4f} vs {b:.4f} ({ref}): Δ {a - b:+.4f} ({what})"


def judge(ch, claim: C.Claim) -> dict:
    """One row of the ledger: this run's difference and controls from the results store, the paper's
    values, and the verdict with its reason (and, under ``"numbers"``, the difference and the paper's
    effect for the figure, and the rows compared)."""
    store = results_store(ch.cfg)
    means = seed_means(store, claim.table, [claim.metric])
    reference = _reference(means, claim)
    row = claim.row
    if reference is not None:
        row, reference = claim.pair(reference, means.index)
    diff = None if reference is None else _difference(store, claim.table, row, reference, claim.metric)
    controls = [(k, _difference(store, k.table, k.row, k.reference, claim.metric)) for k in claim.controls]
    paper_effect = None if claim.paper is None else claim.paper[1] - claim.paper[2]
    if diff is None:
        verdict, why = C.INCONCLUSIVE, "a compared row has no results in this run"
    else:
        missing = [k.label for k, d in controls if d is None and k.role == "positive"]
        verdict, why = C.verdict(diff, claim.direction, paper_effect,
                                 [(k.role, d) for k, d in controls if d is not None])
        if missing and verdict == C.SUPPORTED:
            verdict, why = C.INCONCLUSIVE, f"no positive control in this run ({'; '.join(missing)})"
    compared = reference if reference is not None else "—"
    if claim.reference == C.BEST_OTHER and reference is not None:
        compared += f" (the strongest other row here on {claim.metric})"
    return {"claim": claim.name, "paper (its numbers)": _paper_cell(claim),
            "here: compared rows": f"{row} vs {compared} ({claim.table})",
            f"here: Δ {claim.metric} [interval]": _interval(diff),
            "controls here": "; ".join(f"{k.role}: {k.label}{'' if k.table == claim.table else f' ({k.table})'} "
                                       f"{_interval(d)}" for k, d in controls) or "none",
            "verdict": verdict, "why": why,
            "numbers": {"diff": diff, "paper": paper_effect, "compared": (claim.table, row, reference)}}


def ledger(ch):
    """The ledger (one row per claim of :data:`trcgl.claims.CLAIMS`), a sentence counting its
    verdicts, and the ledger as a forest plot. Resolves the tables it reads (cached: computed by
    ``run all`` for chapters 3-6), which publishes them into the results store it then reads."""
    from ..plots import claims_forest

    for name in _tables():
        table(ch, name)
    judged = [judge(ch, c) for c in C.CLAIMS]
    numbers = [j.pop("numbers") for j in judged]
    rows = pd.DataFrame(judged).set_index("claim")
    counts = rows["verdict"].value_counts()
    text = (f"{len(rows)} claims: " + ", ".join(f"{int(counts.get(v, 0))} {v}" for v in
                                                (C.SUPPORTED, C.NOT_SUPPORTED, C.INCONCLUSIVE)) + ".")
    same: dict = {}                     # claims that this run judges on one and the same comparison
    for claim, n in zip(C.CLAIMS, numbers):
        if n["diff"] is not None:
            same.setdefault((*n["compared"], claim.metric), []).append(claim.name)
    for names in (n for n in same.values() if len(n) > 1):
        text += f" {' and '.join(names)} are judged here on the same comparison, so their verdicts are one result."
    borrowed = [c.name for c in C.CLAIMS if any(k.table != c.table for k in c.controls)]
    if borrowed:
        text += (f" {' and '.join(borrowed)} {'borrows its' if len(borrowed) == 1 else 'borrow their'} controls from "
                 "another table (named beside each control): they test the claim's mechanism on that table's model "
                 "and recipe, not on the rows compared.")
    nan = {"value": math.nan, "low": math.nan, "high": math.nan}
    diffs = [n["diff"] or nan for n in numbers]
    fig = claims_forest(list(rows.index), [d["value"] for d in diffs], [d["low"] for d in diffs],
                        [d["high"] for d in diffs], [n["paper"] for n in numbers], list(rows["verdict"]), C.PRIMARY)
    return rows, text, fig


def wording() -> pd.DataFrame:
    """Each claim in the paper's words, and where it makes it."""
    return pd.DataFrame([{"claim": c.name, "where": c.source, "the paper's words": c.wording}
                         for c in C.CLAIMS]).set_index("claim")


def inconsistencies() -> tuple[pd.DataFrame, str]:
    """The paper's sentences about its own tables that its numbers contradict (computed from
    :mod:`trcgl.paper`), and how many of the checked sentences hold."""
    found = C.inconsistencies()
    odd = [a for a, _ in found if a.kind == "not above"]      # a plausibility check, not the sentence's own words
    df = pd.DataFrame([{"table": f"Table {a.table}", "the paper says": a.wording,
                        "kind": ("at odds with the grouping it states (a rarer group scoring above a commoner one)"
                                 if a.kind == "not above" else "contradicted by its numbers"),
                        "its own numbers": "; ".join(c)} for a, c in found])
    text = (f"{len(C.ASSERTIONS)} sentences of the paper about its own tables were checked against its numbers; "
            f"{len(found) - len(odd)} are contradicted by them, {len(odd)} "
            f"{'is' if len(odd) == 1 else 'are'} at odds with them (the numbers are possible but implausible for "
            f"the grouping the sentence states), {len(C.ASSERTIONS) - len(found)} hold.")
    return df, text


def exercises(ledger_rows: pd.DataFrame):
    """The chapter's exercises; the first hint names this run's inconclusive rows and what holds each
    (``ledger_rows``: the ledger of :func:`ledger`)."""
    from .common import exercises as items

    held = ledger_rows[ledger_rows["verdict"] == C.INCONCLUSIVE]
    why = list(held["why"])
    if held.empty:
        this_run = "No row of this run's ledger is inconclusive: more seeds can only narrow the intervals of the others."
    else:
        this_run = ("This run's inconclusive rows, and what holds each: "
                    + "; ".join(f"*{claim}*: {reason}" for claim, reason in zip(held.index, why)) + ".")
    notes = []
    if any("positive control shows no effect" in w for w in why):
        notes.append("A row held by a positive control that shows nothing stays inconclusive until that control "
                     "shows its effect.")
    if any("negative control shows one" in w for w in why):
        notes.append("A negative control that shows an effect does not go away with more seeds: its interval "
                     "narrows too, around an effect that is there.")
    return items(
        ("Run the book with more seeds (`-p seeds` with a longer list). Which *inconclusive* rows move, and to which "
         "verdict?",
         "The intervals narrow as seeds are added (only the seeds' share of their width: the test rows' share "
         "stays); a row moves only when its interval stops containing 0 or stops containing the paper's effect. "
         + this_run + (" " + " ".join(notes) if notes else "")),
        ("The rule calls a claim *not supported* when the interval excludes the paper's effect while containing 0. "
         "Why does it ask the positive control to show an effect first?",
         "A benchmark that cannot see any effect of the kind (every arm near chance on the tail) gives narrow "
         "intervals around 0 for every comparison; ruling out the paper's effect there says nothing about the "
         "method."),
        ("Add a sentence of the paper to `trcgl.claims.ASSERTIONS` (e.g. on LDAM's mAP against ConvNeXt's in Table "
         "1) and rerun this page. Does the paper's table agree with it?",
         "`contradictions(assertion)` returns an empty list when the numbers agree with the sentence; a *not below* "
         "assertion compares one row with others on the metrics you name."),
    )
