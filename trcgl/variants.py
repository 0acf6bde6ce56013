"""Named model variants of the ablation ladder, trained and scored side by side."""
from __future__ import annotations

import pandas as pd

from .metrics import evaluate
from .train import train_classifier

GAP_ONLY = "GAP only"
CCA = "channel-class attention"
FULL = "+ label GCN (full)"


def component_variants(cfg, names=(GAP_ONLY, CCA, FULL)) -> dict:
    """The classifier's components switched on one at a time (no synthetic images)."""
    ladder = {
        GAP_ONLY: cfg.replace({"model.channel_gate": False, "model.spatial_attention": False, "model.label_gcn": False}),
        CCA: cfg.replace({"model.label_gcn": False}),
        FULL: cfg.replace({"model.label_gcn": True}),
    }
    return {name: ladder[name] for name in names}


def train_and_compare(variants: dict, train_set, val_set, groups, cache=None):
    """Train (or load) each variant; returns (runs, evaluations, a table of their means).

    Each variant is scored with its own ``eval`` settings (F1 threshold, empty-class convention).
    """
    runs = {name: train_classifier(c, train_set, val_set, groups, cache=cache) for name, c in variants.items()}
    evals = {name: evaluate(val_set.Y, runs[name].val_probs, train_set.classes, groups, c.eval.f1_threshold,
                            empty=c.eval.empty_classes) for name, c in variants.items()}
    table = pd.DataFrame({name: ev.means for name, ev in evals.items()}).T
    return runs, evals, table
