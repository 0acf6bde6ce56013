"""What several chapters show: a table's per-row means and the runs behind it, and the notes under the
tables that state the run's setting (every word read from the configuration and the table's records)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .. import stages as S
from ..seedtables import recorded_intervals


def table(ch, name: str, seeds=None):
    """A table stage's result (resolved, published into the results store)."""
    return S.table_result(ch.cfg, name, seeds, ch.cache)


def row_means(result) -> pd.DataFrame:
    """Per row: every metric's mean over the table's seeds (rows in the table's order)."""
    df = pd.DataFrame(result.records)
    df = df[df["kind"].fillna("seed") == "seed"] if "kind" in df else df
    out = df.pivot_table(index="row", columns="metric", values="value", aggfunc="mean")
    order = [r["name"] for r in result.rows if r["name"] in out.index]
    return out.reindex(index=order, columns=list(dict.fromkeys(df.metric)))


def run(ch, result, row: str, seed: int):
    """The trained classifier (TrainResult) of one (row, seed) of a table."""
    return ch.get(result.runs[(row, seed)])


def backbone_start(cfg) -> str:
    """Where the run's backbones start, read from the configuration (what the classifier stage
    does: :func:`trcgl.stages.uses_pretraining`): a local checkpoint, the ``pretrain`` stage's
    backbone (pretrained here on a pool disjoint from the training set, head labels only), or
    random initialisation."""
    if cfg.model.checkpoint:
        return "loaded from a local checkpoint"
    if cfg.pretrain.enabled:
        e = int(cfg.pretrain.epochs)
        budget = (f"until the selection score stops improving, at most {e} epochs," if cfg.pretrain.patience else
                  f"{e} epoch{'s' if e != 1 else ''}")
        return (f"pretrained here ({budget} on {cfg.pretrain.n_pool} training-split "
                f"rows disjoint from the training set, head-class labels only; one per architecture)")
    return "random initialisation"


def training_text(cfg) -> str:
    """Which stages the classifier trains, read from ``train.warmup_epochs`` / ``finetune_epochs``
    (/ ``finetune_stages`` / ``warmup_on_features``): heads only on the frozen backbone, the whole
    network (or its end), or heads then the whole network (or its end)."""
    w, f = int(cfg.train.warmup_epochs), int(cfg.train.finetune_epochs)
    def epochs(n):
        return f"{n} epoch{'s' if n != 1 else ''}"

    k = cfg.train.finetune_stages
    what = ("the whole network" if k is None else
            f"the backbone's last {'stage' if k == 1 else f'{k} stages'} and the heads (earlier stages frozen)")
    if f == 0:
        return f"heads only on the frozen backbone ({epochs(w)}; no fine-tuning)"
    if w == 0:
        return f"{what} fine-tuned ({epochs(f)})"
    if cfg.train.warmup_on_features:
        return (f"heads on the frozen backbone's cached features ({epochs(w)}), then, from that run's best epoch, "
                f"{what} fine-tuned on the images ({epochs(f)}; the starting epoch kept if no later one is better "
                "on selection)")
    return f"heads on the frozen backbone ({epochs(w)}), then {what} fine-tuned ({epochs(f)})"


def benchmark_note(cfg, reference: str = "The paper's columns: real PadChest, pretrained backbones, one run.",
                   records=None) -> str:
    """The lines under each table that say what our numbers are measured on (and the reference
    columns beside them), every setting read from ``cfg``; with the table's ``records``, which
    interval each metric carries (:func:`intervals_note`)."""
    where = ("phantom radiographs rendered from real PadChest label rows" if cfg.data.source == "phantom"
             else "real PadChest images")
    parts = [f"Ours: {where}, {cfg.data.image_size}px; backbones {backbone_start(cfg)}.",
             f"Trained: {training_text(cfg)}, best epoch on the selection split; scored on the test split, mean over "
             f"seeds {list(cfg.seeds)}; macro-F1 {f1_rule_text(cfg)}.",
             intervals_note(records) if records is not None else "", reference]
    return wrapped(*parts)


def f1_rule_text(cfg) -> str:
    """How the tables' F1 thresholds were chosen (``eval.f1_thresholds``), for the notes."""
    rules = {"selection": "at per-class thresholds each run chose on the selection split (best F1 there)",
             "fixed": f"at a fixed threshold of {cfg.eval.f1_threshold:g} for every class"}
    return rules[cfg.eval.f1_thresholds]


def interval_text(row) -> str:
    """"+0.0123 [+0.0010, +0.0236]" for a paired_differences row, without an interval for one seed."""
    if np.isnan(row["low"]):
        return f"{row.iloc[0]:+.4f} (one seed: no interval)"
    return f"{row.iloc[0]:+.4f} [{row['low']:+.4f}, {row['high']:+.4f}]"


def with_intervals(table: pd.DataFrame, columns, digits: int = 3) -> pd.DataFrame:
    """``table``'s ``columns`` as "0.910 [0.881, 0.936]" cells (from each column's "<col> low" and
    "<col> high"): one readable column per statistic instead of three numeric ones; a statistic
    that could not be computed reads "too few images", not NaN."""
    out = pd.DataFrame(index=table.index)
    for c in columns:
        out[c] = [("too few images" if not np.isfinite(v) else f"{v:.{digits}f}" if not np.isfinite(lo)
                   else f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]")
                  for v, lo, hi in zip(table[c], table[f"{c} low"], table[f"{c} high"])]
    return out


def budget_rule_text(cfg) -> str:
    """How many synthetic images each target class is asked for (chapters 2 and 5)."""
    d = cfg.diffusion
    return (f"{d.budget_multiple:g}× each target class's real training positives" if d.budget_multiple is not None
            else f"{d.n_per_class} per target class")


def wrapped(*paragraphs: str, width: int = 110) -> str:
    """Printed notes, one paragraph per line group, wrapped to ``width`` columns (a printed output does
    not wrap on the page: a long line would scroll sideways)."""
    from textwrap import fill

    return "\n".join(fill(p, width, break_on_hyphens=False) for p in paragraphs if p)


#: how each ``eval.interval`` reads an interval from the bootstrap resamples, in words for the page
INTERVAL_NAMES = {"percentile": "percentile", "basic": "basic (reversed percentile)", "bc": "bias-corrected percentile",
                  "bca": "bias-corrected and accelerated (BCa)"}


def interval_method_text(cfg) -> str:
    """"95% bias-corrected percentile bootstrap intervals, 1,000 resamples": the method of the
    configuration's intervals (``eval.interval``, ``eval.bootstrap``), for chapters whose intervals
    are computed in the view rather than recorded by a table stage."""
    return (f"95% {INTERVAL_NAMES.get(cfg.eval.interval, cfg.eval.interval)} bootstrap intervals, "
            f"{cfg.eval.bootstrap:,} resamples")


def intervals_note(records) -> str:
    """Which 95 % interval each metric of a table carries, read from its records: the metrics with
    ``interval`` records (their ``resamples`` and, where recorded, ``method``) resample seeds and test
    label rows together; every other metric gets a t-interval over the seeds (none with one seed)."""
    records = list(records)
    seeds = {r["seed"] for r in records if r.get("kind", "seed") in (None, "seed")}
    metrics = list(dict.fromkeys(r["metric"] for r in records if r.get("kind", "seed") in (None, "seed")))
    resampled = [r for r in records if r.get("kind") == "interval"]
    boot = [m for m in metrics if any(r["metric"] == m for r in resampled)]
    rest = [m for m in metrics if m not in boot]
    parts = []
    if boot:
        method, n = recorded_intervals(resampled)
        parts.append(f"{', '.join(boot)}: {' / '.join(method)} bootstrap interval over "
                     f"{' / '.join(map(str, n)) or 'the recorded'} joint resamples of the seeds and the test "
                     "label rows")
    if rest:
        parts.append(f"{', '.join(rest)}: " + ("t-interval over the seeds" if len(seeds) > 1
                                                else "no interval (one seed)"))
    return ("95% intervals: " + "; ".join(parts) + ".") if parts else ""


def differences_note(records, metric, what: str) -> str:
    """The sentence above a table of paired differences on ``metric`` (one, or several in the
    table's order): how its intervals were made, read from the table's records (``difference``
    records: a paired bootstrap on the resamples they name; none: a paired t-interval over the
    seeds, as :func:`trcgl.seedtables.paired_differences`)."""
    records, metrics = list(records), [metric] if isinstance(metric, str) else list(metric)
    recorded = [r for r in records if r.get("kind") == "difference" and r["metric"] in metrics]
    if recorded:
        method, n = recorded_intervals(recorded)
        how = (f"a paired {' / '.join(method)} bootstrap interval: both rows scored on the same "
               f"{' / '.join(map(str, n))} joint resamples of the seeds and the test label rows")
    else:
        seeds = {r["seed"] for r in records if r.get("kind", "seed") in (None, "seed")}
        how = "a paired t-interval over the seeds" if len(seeds) > 1 else "no interval (one seed)"
    return f"{what} on {', then '.join(metrics)}, on the same seeds ({how}; *sure* when the 95% interval excludes zero):"


def exercises(*items: tuple[str, str]):
    """A chapter's exercises as MyST Markdown (the book renders Markdown outputs as MyST:
    ``nb_render_markdown_format`` in ``_config.yml``): a numbered list, each exercise with a
    collapsible hint. Chapters whose exercises name the run's values (seeds, thresholds, epochs)
    take them from here, so the values are the configuration's, never typed."""
    from textwrap import indent

    from IPython.display import Markdown

    lines = []
    for k, (question, hint) in enumerate(items, 1):
        lines.append(f"{k}. " + indent(question.strip(), "   ").lstrip())
        lines.append(indent(f"```{{admonition}} Hint\n:class: dropdown\n{hint.strip()}\n```", "   "))
    return Markdown("\n".join(lines) + "\n")


#: how a missing value shows in the book's tables
MISSING = "–"


def table_display() -> None:
    """How the chapters' tables show on the page: no cell text cut (pandas cuts at 50 characters by
    default), every column shown, and a missing value as :data:`MISSING` instead of ``NaN`` (pandas has
    no display option for a DataFrame's missing values, so its HTML formatter is registered with IPython
    when a kernel runs the chapter)."""
    pd.set_option("display.max_colwidth", None)
    pd.set_option("display.max_columns", None)
    pd.set_option("display.width", None)
    pd.set_option("styler.format.na_rep", MISSING)
    try:
        from IPython import get_ipython
    except ImportError:        # pragma: no cover - IPython ships with the notebook stack
        return
    shell = get_ipython()
    if shell is not None:
        shell.display_formatter.formatters["text/html"].for_type(pd.DataFrame, table_html)


def table_html(df: pd.DataFrame) -> str:
    """A DataFrame as the book's HTML: missing values as :data:`MISSING`, long tables cut only in rows."""
    return df.to_html(na_rep=MISSING, notebook=True, max_rows=pd.get_option("display.max_rows"),
                      show_dimensions=len(df) > pd.get_option("display.max_rows"))
