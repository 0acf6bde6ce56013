"""The paper's tables as data: which rows (configurations and extra training images) each table
trains, for the results chapters (Tables 1-5) and the inpainting chapter's head-to-head.

A row is a configuration, optionally an extra training set (an :class:`Extra`: which stage's
images, with which loss weight and PIL flag), or the reason it cannot run here. The rows say
*what* to train; :func:`trcgl.stages.table` turns them into stage requests, and
:mod:`trcgl.seedtables` builds the displayed tables from the results they record.
"""
from __future__ import annotations

from typing import Callable

from .released import released_rows
from .tablerow import Extra, Row

#: Kinds of extra training images (each a stage of :mod:`trcgl.stages`).
SYNTHETIC, INPAINTED, INPAINTED_UNGUARDED, COPIES = "synthetic", "inpainted", "inpainted-unguarded", "copies"
# the synthetic claim's arms at the synthetic budget (trcgl.controls)
UNFILTERED, OVERSAMPLED, IDEAL_KEPT, SHUFFLED = "unfiltered", "oversampled", "ideal-kept", "shuffled"
RETRIEVED = "retrieved"     # the pool a pretrained generator learnt from, its images added directly
IDEAL = "ideal"             # the ideal generator at the budget; ideal_dose(k): at k times the budget
IDEAL_HIDDEN = "ideal, lesions hidden"   # the same images without the target lesions: the null control
IDEAL_BARE = "ideal, lesions and labels hidden"   # the null control's images without the tail labels too
UNFILTERED_AT_INPAINTED = "unfiltered, at the inpainted count"   # the generated images at the inpainted set's count
UNGUARDED_AT_GUARDED = "inpainted-unguarded, at the guarded count"   # the guard's dose without the guard


def ideal_dose(scale: float) -> str:
    """The extra-image kind of the ideal generator at ``scale`` times the synthetic budget."""
    return IDEAL if float(scale) == 1.0 else f"{IDEAL} x{float(scale):g}"


def dose_scale(kind: str) -> float | None:
    """The scale of an :func:`ideal_dose` kind (None for any other kind)."""
    if kind == IDEAL:
        return 1.0
    if kind.startswith(f"{IDEAL} x"):
        return float(kind[len(IDEAL) + 2:])
    return None


def tables_config(cfg, name: str | None = None):
    """The configuration of the table runs: the ``tables`` recipe (epochs); for a table ``name``
    in ``tables.stage2``, the paper's stage 2 too (``tables.stage2_epochs`` of fine-tuning of the last
    ``tables.stage2_stages`` backbone stages, each run continuing the stage 1 run on cached
    features: ``train.warmup_on_features``). Every arm of every
    table learns from the experiment's one training set (``data.n_train`` rows)."""
    t, over = cfg.tables, {}
    if t.warmup_epochs is not None:
        over["train.warmup_epochs"] = t.warmup_epochs
    if t.finetune_epochs is not None:
        over["train.finetune_epochs"] = t.finetune_epochs
    if name is not None and name in t.stage2:
        over["train.finetune_epochs"] = t.stage2_epochs if t.stage2_epochs is not None else cfg.train.finetune_epochs
        over["train.warmup_on_features"] = True
        if t.stage2_stages is not None:
            over["train.finetune_stages"] = t.stage2_stages
    return cfg.replace(over)


def gap_only(cfg):
    """The ConvNeXt baseline of the tables: TRCGL-Net's backbone and feature stage, GAP + linear."""
    return cfg.replace({"model.channel_gate": False, "model.spatial_attention": False, "model.label_gcn": False})


GAP_ONLY = "GAP only"
WHOLE_CONVNEXT = "ConvNeXt (whole network)"
OURS = "Ours"
WHOLE_OURS = "Ours (whole network)"
OURS_ROWS = (OURS, WHOLE_OURS)          # Table 1's TRCGL-Net rows: never a baseline
#: Table 1's rows that read a whole network (where the feature stage cuts the ConvNeXt): TRCGL-Net is
#: set against them at the same depth (:func:`table1_pair`)
WHOLE_NETWORK_ROWS = (WHOLE_CONVNEXT, "ResNet", "EfficientNet", "ViT", "CLIP")
CCA = "channel-class attention"
FULL = "+ label GCN (full)"


def component_rows(cfg) -> list[Row]:
    """The classifier's components switched on one at a time, no synthetic images (chapters 3-4)."""
    return [Row(GAP_ONLY, gap_only(cfg)), Row(CCA, cfg.replace({"model.label_gcn": False})),
            Row(FULL, cfg.replace({"model.label_gcn": True}))]


def ldam_drw_epoch(cfg) -> int:
    """The epoch (0-based, whole schedule) from which Table 1's LDAM row re-weights its classes:
    ``tables.ldam_drw_at`` of the schedule's epochs, and never later than its last epoch (a schedule
    of heads only, warm-up epochs alone, included)."""
    total = cfg.train.warmup_epochs + cfg.train.finetune_epochs
    return min(int(round(cfg.tables.ldam_drw_at * total)), max(total - 1, 0))


def table1_rows(cfg) -> list[Row]:
    """Table 1 (names as in the paper). ConvNeXt rows share TRCGL-Net's backbone and feature
    stage; ResNet, EfficientNet and ViT are whole timm networks, so where the feature stage cuts
    the ConvNeXt, a whole-network ConvNeXt row and a whole-network TRCGL-Net row stand beside
    them (the same depth rule as theirs: a comparison of methods, not of feature depths; both
    TRCGL-Net rows add the same filtered synthetic set); CLIP needs local weights."""
    t = cfg.tables
    drw = ldam_drw_epoch(cfg)

    def timm(name):
        return cfg.replace({"model.arch": "timm", "model.backbone": name})

    cut = cfg.model.feature_stage != -1
    ours_depth = f"cut after stage {cfg.model.feature_stage}" if cut else "whole network"
    depth = f"{ours_depth} (as TRCGL-Net's features)" if cut else ours_depth
    rows = [Row("ConvNeXt", gap_only(cfg), meta={"model here": f"{cfg.model.backbone}, {depth}, GAP + linear"})]
    if cut:   # the timm rows read whole networks: the same depth rule beside the cut one
        rows.append(Row(WHOLE_CONVNEXT, gap_only(cfg).replace({"model.feature_stage": -1}),
                        meta={"model here": f"{cfg.model.backbone}, whole network, GAP + linear (not in the paper)"}))
    rows += [
        Row("ResNet", timm(t.resnet), meta={"model here": t.resnet}),
        Row("EfficientNet", timm(t.efficientnet), meta={"model here": t.efficientnet}),
        Row("ViT", timm(t.vit), meta={"model here": t.vit}),
    ]
    if cfg.paths.clip_image_encoder:
        rows.append(Row("CLIP", cfg.replace({"model.arch": "clip"}), meta={"model here": "CLIP image encoder (local)"}))
    else:
        rows.append(Row("CLIP", unavailable="needs pretrained CLIP weights", meta={"model here": "—"}))
    rows += [
        Row("ConvNeXt + LDAM", gap_only(cfg).replace({"model.head": "cosine", "train.loss": "ldam", "train.drw_epoch": drw}),
            meta={"model here": f"{cfg.model.backbone}, {ours_depth}, cosine head, LDAM, DRW from epoch {drw + 1}"}),
        Row("ConvNeXt + CSRA", cfg.replace({"model.arch": "csra"}),
            meta={"model here": f"{cfg.model.backbone}, {ours_depth}, CSRA head" + (
                "" if cfg.model.csra_scale is None else " with a learnt logit scale and bias")}),
        Row(OURS, cfg, extra=Extra.of(SYNTHETIC), meta={"model here": f"TRCGL-Net, {ours_depth}, + filtered synthetic "
                                                                      "tail images"}),
    ]
    if cut:
        rows.append(Row(WHOLE_OURS, cfg.replace({"model.feature_stage": -1}), extra=Extra.of(SYNTHETIC),
                        meta={"model here": "TRCGL-Net, whole network, + the same filtered synthetic tail images "
                                            "(not in the paper)"}))
    return rows


def table1_peers(ours: str, rows) -> list[str]:
    """The baselines of Table 1 at the feature depth of the TRCGL-Net row ``ours``, among a run's
    ``rows``: the whole networks for :data:`WHOLE_OURS`, the cut ConvNeXt rows for :data:`OURS`
    where the run has both depths, else every baseline."""
    rows = list(rows)
    baselines = [r for r in rows if r not in OURS_ROWS]
    if WHOLE_OURS not in rows:
        return baselines
    return [r for r in baselines if (r in WHOLE_NETWORK_ROWS) == (ours == WHOLE_OURS)]


def table1_pair(reference: str, rows) -> tuple[str, str]:
    """TRCGL-Net's row and the compared row of Table 1 at one feature depth, among a run's ``rows``:
    the ConvNeXt baseline as the paper has it (a whole network: :data:`WHOLE_CONVNEXT` where the
    run has that row), and TRCGL-Net at the compared row's depth (:data:`WHOLE_OURS` against a
    whole network where the run has it, else :data:`OURS`). The claims ledger compares these."""
    rows = list(rows)
    if reference == "ConvNeXt" and WHOLE_CONVNEXT in rows:
        reference = WHOLE_CONVNEXT
    return (WHOLE_OURS if reference in WHOLE_NETWORK_ROWS and WHOLE_OURS in rows else OURS), reference


def ablation_rows(cfg) -> list[Row]:
    """Table 3, as in the paper: its baseline is ConvNeXt + CSRA (the same numbers as Table 1's
    CSRA row), then + prompt diffusion, then channel-class attention instead of CSRA, then the GCN."""
    csra = cfg.replace({"model.arch": "csra"})
    return [Row("baseline", csra),
            Row("+ prompt diffusion", csra, extra=Extra.of(SYNTHETIC)),
            Row("+ channel-class attention", cfg.replace({"model.label_gcn": False}), extra=Extra.of(SYNTHETIC)),
            Row("+ label GCN (full)", cfg, extra=Extra.of(SYNTHETIC))]


def weight_rows(cfg) -> list[Row]:
    """Table 4: the full model with the synthetic images weighted w."""
    return [Row(f"w = {w:g}", cfg, extra=Extra.of(SYNTHETIC, weight=float(w)), meta={"paper key": float(w)})
            for w in cfg.tables.synthetic_weights]


def alpha_rows(cfg) -> list[Row]:
    """Table 5: the full model with fusion strength α."""
    return [Row(f"α = {a:g}", cfg.replace({"model.alpha": float(a)}), extra=Extra.of(SYNTHETIC),
                meta={"paper key": float(a)}) for a in cfg.tables.alphas]


NO_AUG, PROMPT, INPAINT, BOTH = "no augmentation", "prompt diffusion", "inpainting", "both"
PROMPT_BUDGET = "prompt diffusion, unfiltered (the budget)"
PROMPT_MATCHED = "prompt diffusion, as inpainting (its count, weight, PIL)"
COPIES_ROW = "control: the same images, not inpainted, + PIL"
METHOD_ROW = "+ guard + PIL (the method)"
UNGUARDED_MATCHED = "no guard, + PIL, at the guard's count"


def head_to_head_rows(cfg) -> list[Row]:
    """Inpainting chapter: no augmentation vs prompt diffusion (all at once, weight w, as in
    TRCGL-Net) vs inpainting (with PIL, as in its paper) vs both (each part scheduled as in its own
    method); prompt diffusion at its whole budget, unfiltered; and the unfiltered generated images
    at the inpainted set's count, loss weight and PIL schedule, so that one arm pair differs in the
    images alone. Every arm is the tables' ConvNeXt baseline."""
    base = gap_only(cfg)
    pil = base.replace({"train.extra_schedule": "pil"})
    return [Row(NO_AUG, base),
            Row(PROMPT, base, extra=Extra.of(SYNTHETIC)),
            Row(PROMPT_BUDGET, base, extra=Extra.of(UNFILTERED)),
            Row(PROMPT_MATCHED, pil, extra=Extra.of(UNFILTERED_AT_INPAINTED, weight=float(cfg.inpaint.weight))),
            Row(INPAINT, pil, extra=Extra.of(INPAINTED)),
            Row(BOTH, pil, extra=Extra.of(SYNTHETIC, progressive=False) + Extra.of(INPAINTED, progressive=True))]


def inpaint_ablation_rows(cfg) -> list[Row]:
    """The inpainting paper's Table 4 question (does PIL help?) crossed with the guard; the
    unguarded images cut to the guarded set's count (:func:`trcgl.controls.at_count`), so that one
    pair differs in the guard alone and not in the dose; and a control: the same images added again
    without inpainting (with PIL)."""
    base = gap_only(cfg)
    pil = base.replace({"train.extra_schedule": "pil"})
    return [Row(NO_AUG, base),
            Row("inpainting, no guard, all at once", base, extra=Extra.of(INPAINTED_UNGUARDED)),
            Row("+ guard, all at once", base, extra=Extra.of(INPAINTED)),
            Row("no guard, + PIL", pil, extra=Extra.of(INPAINTED_UNGUARDED)),
            Row(UNGUARDED_MATCHED, pil, extra=Extra.of(UNGUARDED_AT_GUARDED)),
            Row(METHOD_ROW, pil, extra=Extra.of(INPAINTED)),
            Row(COPIES_ROW, pil, extra=Extra.of(COPIES))]


BASELINE, OVERSAMPLING, METHOD, IDEAL_ROW, NULL_ROW, SHUFFLED_ROW = (
    "no extra images", "real tail rows oversampled", "prompt diffusion (the method)",
    "ideal generator (positive control)", "ideal generator, tail lesions not drawn (negative control)",
    "labels shuffled across tail classes (wrong-label control)")
BARE_ROW = "ideal generator, neither tail lesions nor tail labels (bare control)"
UNFILTERED_ROW, IDEAL_KEPT_ROW = "prompt diffusion, unfiltered", "ideal generator, the filter's count"
RETRIEVED_ROW = "the generator's pool, added directly (retrieval control)"


def _phantom_only(cfg, name: str, extra: Extra) -> Row:
    return (Row(name, cfg, extra=extra) if cfg.data.source == "phantom" else
            Row(name, unavailable="needs the phantom renderer (data.source: phantom)"))


def control_rows(cfg) -> list[Row]:
    """The synthetic-image claim against its controls at one synthetic budget per tail class
    (``diffusion.budget_multiple``, fixed before any filter), the full model in every row, the same
    real rows, seeds and loss weight: no extra images; the real tail rows repeated to the budget
    (oversampling); every generated image (unfiltered); the images the filter kept (the method);
    the budget's label sets rendered by the phantom renderer (ideal generator: the positive
    control); the kept label sets rendered likewise (the ideal generator at the filter's count,
    which separates what the filter discards from what its images lack); the ideal generator's
    images with the target lesions left out, labels kept (negative control: extra images that show
    nothing of their tail labels); those images with the tail labels removed too (bare control:
    extra images that show and claim nothing of the tail, so that negative minus bare is what the
    unshown labels do); the generated images with their labels shuffled across targets
    (wrong-label control: what drawing the wrong finding does); and where the generator first learnt
    from a disjoint pool (``diffusion.pretrain_pool``), that pool's images of the target classes
    added directly (the retrieval control: the extra real data the generator saw)."""
    rows = [Row(BASELINE, cfg), Row(OVERSAMPLING, cfg, extra=Extra.of(OVERSAMPLED)),
            Row(UNFILTERED_ROW, cfg, extra=Extra.of(UNFILTERED)), Row(METHOD, cfg, extra=Extra.of(SYNTHETIC)),
            _phantom_only(cfg, IDEAL_ROW, Extra.of(IDEAL)), _phantom_only(cfg, IDEAL_KEPT_ROW, Extra.of(IDEAL_KEPT)),
            _phantom_only(cfg, NULL_ROW, Extra.of(IDEAL_HIDDEN)), _phantom_only(cfg, BARE_ROW, Extra.of(IDEAL_BARE)),
            Row(SHUFFLED_ROW, cfg, extra=Extra.of(SHUFFLED))]
    if cfg.diffusion.pretrain_pool:
        rows.append(Row(RETRIEVED_ROW, cfg, extra=Extra.of(RETRIEVED)))
    return rows


def dose_row_name(scale: float) -> str:
    return f"ideal generator, {float(scale):g}x the budget"


def dose_rows(cfg) -> list[Row]:
    """The ideal generator's dose curve: no extra images, then the ideal generator at each
    ``tables.ideal_doses`` multiple of the synthetic budget (1x is the controls' positive control)."""
    return [Row(BASELINE, cfg)] + [_phantom_only(cfg, dose_row_name(k), Extra.of(ideal_dose(k)))
                                   for k in cfg.tables.ideal_doses]


#: The label-graph conditions: how the images are rendered (config overrides) and what they test.
GCN_CONDITIONS = {
    "normal": ({}, "labels and lesions as in the data"),
    "tail hidden": ({"phantom.hidden_classes": ["tail"]}, "tail lesions not drawn, labels kept: only co-occurrence predicts them"),
    "co-occurrence broken": ({"data.cooccurrence": "broken"}, "tail labels permuted across rows before rendering"),
}


def gcn_condition_rows(cfg) -> list[Row]:
    """Channel-class attention with and without the label GCN, in each condition of
    :data:`GCN_CONDITIONS` (the images of every split rendered under that condition); where
    co-occurrence can help, also the GCN over a shuffled graph (:data:`SHUFFLED_GRAPH`), which
    separates what the graph's edges add from what the GCN's extra parameters add."""
    rows = []
    for condition, (over, what) in GCN_CONDITIONS.items():
        if over and cfg.data.source != "phantom":
            rows += [Row(f"{condition}: {m} GCN", unavailable="needs the phantom renderer") for m in ("without", "with")]
            continue
        ccfg = cfg.replace(over)
        rows += [Row(f"{condition}: without GCN", ccfg.replace({"model.label_gcn": False}), meta={"condition": what}),
                 Row(f"{condition}: with GCN", ccfg.replace({"model.label_gcn": True}), meta={"condition": what})]
        if condition in GRAPH_CONTROL_CONDITIONS:
            rows.append(Row(f"{condition}: {SHUFFLED_GRAPH}", ccfg.replace({"model.label_gcn": True,
                                                                             "model.adjacency": "shuffled"}),
                            meta={"condition": what}))
    return rows


#: the GCN with its graph's classes permuted: its capacity without the co-occurrence it claims to use
SHUFFLED_GRAPH = "with GCN, shuffled graph"
#: the conditions whose tables also train :data:`SHUFFLED_GRAPH` (where co-occurrence can help)
GRAPH_CONTROL_CONDITIONS = ("normal", "tail hidden")


#: The channel-class attention conditions: the findings as drawn, or rare findings also subtle.
CCA_CONDITIONS = {"normal": {}, "subtle tail": {"phantom.tail_subtlety": 0.5}}
GATE_ONLY = "+ channel gate"


#: the suffix of a channel-class attention ladder on the feature stage the other tables read
TABLES_STAGE = "tables' stage"


def cca_ladders(cfg) -> dict[str, dict]:
    """The channel-class attention experiment's ladders: each of :data:`CCA_CONDITIONS` on the
    finer maps of ``tables.cca_feature_stage`` (named by the condition alone) and, where it is
    another stage, on the tables' own ``model.feature_stage`` (named "<condition>, tables' stage"):
    label -> the configuration overrides of its rows."""
    out = {}
    for condition, over in CCA_CONDITIONS.items():
        out[condition] = {**over, "model.feature_stage": cfg.tables.cca_feature_stage}
    if cfg.model.feature_stage != cfg.tables.cca_feature_stage:
        for condition, over in CCA_CONDITIONS.items():
            out[f"{condition}, {TABLES_STAGE}"] = {**over, "model.feature_stage": cfg.model.feature_stage}
    return out


def cca_rows(cfg) -> list[Row]:
    """GAP only, + the channel gate, + class-aware attention (no GCN), in each ladder of
    :func:`cca_ladders`: every condition on the finer maps of ``tables.cca_feature_stage`` and on
    the stage the other tables read."""
    rows = []
    for ladder, over in cca_ladders(cfg).items():
        ccfg = cfg.replace({**over, "model.label_gcn": False})
        rows += [Row(f"{ladder}: {GAP_ONLY}", gap_only(ccfg)),
                 Row(f"{ladder}: {GATE_ONLY}", ccfg.replace({"model.spatial_attention": False})),
                 Row(f"{ladder}: {CCA}", ccfg)]
    return rows


def released_comparison_rows(cfg) -> list[Row]:
    """The ablation chapter's text-vs-released comparison (issue 14), with the synthetic tail set."""
    return released_rows(cfg, Extra.of(SYNTHETIC))


#: table name -> (rows of a configuration, whether it runs on the tables' configuration)
TABLES: dict[str, tuple[Callable, bool]] = {
    "components": (component_rows, False),
    "table1": (table1_rows, True),
    "table3": (ablation_rows, True),
    "table4": (weight_rows, True),
    "table5": (alpha_rows, True),
    "inpaint_h2h": (head_to_head_rows, True),
    "inpaint_ablation": (inpaint_ablation_rows, True),
    "released": (released_comparison_rows, True),
    "controls": (control_rows, True),
    "controls_heads": (control_rows, True),     # the controls' stage 1 runs, where tables.stage2 fine-tunes them
    "dose": (dose_rows, True),
    "gcn_conditions": (gcn_condition_rows, True),
    "cca": (cca_rows, True),
}


def table_rows(cfg, name: str) -> list[Row]:
    """The rows of table ``name`` under ``cfg`` (the tables' configuration where the table uses it)."""
    from .errors import TrcglError

    if name not in TABLES:
        raise TrcglError(f"unknown table '{name}' (known: {', '.join(TABLES)})")
    rows, on_tables_config = TABLES[name]
    return rows(tables_config(cfg, name) if on_tables_config else cfg)
