"""The paper's text against the authors' released code, trained on the same data and seeds (issue 14).

:func:`released_rows` gives the rows of that comparison in the style of
:func:`trcgl.tables.ablation_rows`: the text reading (the defaults), the released reading
(the ``released`` preset, ``trcgl/configs/presets/released.yaml``), and one row per behaviour
that may move results, each the text reading with that behaviour of the released code alone:
the label graph, the loss with its sampler, the EMA, and the training recipe (augmentations,
stochastic depth, AdamW's ε). Every row is scored under the same
conventions (the ``eval`` section of the text reading), so the differences are the training's;
the released metric conventions are an evaluation choice, shown where the book compares them.
"""
from __future__ import annotations

from .config import preset_overrides
from .tablerow import Row

TEXT = "text reading"
RELEASED = "released reading"

#: One row each: the options of the released preset that make up one behaviour. The class counts
#: option goes with the graph and with the loss (both count the synthetic rows in the released code).
BEHAVIOURS = {
    "released graph": ("model.adjacency", "train.counts_include_extra"),
    "released loss + sampler": ("train.loss", "train.sampler", "train.counts_include_extra"),
    "EMA": ("train.ema",),
    "augmentation + drop path + AdamW ε": ("train.augment", "model.drop_path_rate", "train.adamw_eps"),
}


def _describe(over: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in over.items())


def released_rows(cfg, synthetic=None, preset: str = "released") -> list[Row]:
    """The rows of the comparison: ``cfg`` is the text reading; ``synthetic`` the extra training set
    every row gets (the filtered synthetic tail images, or ``None``)."""
    over = {k: v for k, v in preset_overrides(preset).items() if not k.startswith("eval.")}
    rows = [Row(TEXT, cfg, extra=synthetic, meta={"changes": "— (the defaults)"}),
            Row(RELEASED, cfg.replace(over), extra=synthetic, meta={"changes": f"the {preset} preset"})]
    for name, keys in BEHAVIOURS.items():
        part = {k: over[k] for k in keys}
        rows.append(Row(f"text + {name}", cfg.replace(part), extra=synthetic, meta={"changes": _describe(part)}))
    return rows
