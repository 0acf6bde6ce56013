"""The classifiers' stages (chapters 3-7, and chapter 2's filter and oracle): the pretrained
backbone, its cached features, a classifier trained on the train split (+ extra images) with its
best epoch chosen on selection, and its predictions on an image set.
"""
from __future__ import annotations

import json

import numpy as np

from ..cache import digest, load_npy, save_npy
from ..graph import Const, Request, stage
from .common import _device, _groups, file_input, folder_input, get
from .data import _as_image_set, cohort, const_set, image_set, selection_set, train_set

# ----------------------------------------------------------------------------- classifiers

CLASSIFIER_READS = ("model", "train", "eval.f1_threshold", "eval.empty_classes", "deterministic", "device", "data.image_size",
                    "paths.clip_image_encoder")
CLASSIFIER_MODULES = ("trcgl.train", "trcgl.models", "trcgl.losses", "trcgl.metrics", "trcgl.data.datasets",
                      "trcgl.data.sampling", "trcgl.data.batches", "trcgl.data.augment", "trcgl.ema", "trcgl.inpaint.pil")


def uses_pretraining(cfg) -> bool:
    """Whether a configuration's backbone starts from the ``pretrain`` stage."""
    return bool(cfg.pretrain.enabled and not cfg.model.checkpoint and cfg.model.arch in ("trcgl", "csra", "timm"))


#: Rendering conditions of single experiments (chapters 3 and 4). The pretrained start is one
#: checkpoint per architecture, as the paper's is: it is trained on the default rendering, whatever
#: condition the experiment's own images are rendered under.
CONDITION_KEYS = ("phantom.hidden_classes", "phantom.tail_subtlety", "data.cooccurrence")


def pretrain(cfg) -> Request:
    """The pretrained backbone of ``cfg``'s architecture (``model.backbone``): one per architecture
    and image size, seeded by ``pretrain.seed`` (not the experiment's seed), on the default
    rendering (:data:`CONDITION_KEYS` at their neutral values). The request's configuration is
    the pretraining recipe (:func:`trcgl.pretraining.pretraining_config`)."""
    from ..config import neutral_values
    from ..pretraining import pretraining_config

    neutral = neutral_values()
    base = cfg.replace({k: neutral[k] for k in CONDITION_KEYS})
    return Request("pretrain", pretraining_config(base), seed=int(base.pretrain.seed), pool=image_set(base, "pool"),
                   select=selection_set(base), cohort=cohort(base))


def _classifier_inputs(cfg, params):
    inputs = {}
    if uses_pretraining(cfg):
        inputs["backbone"] = pretrain(cfg)
    if cfg.model.checkpoint:
        inputs["checkpoint"] = file_input(cfg.model.checkpoint)
    if cfg.model.arch == "clip" and cfg.paths.clip_image_encoder:
        inputs["clip"] = folder_input(cfg.paths.clip_image_encoder, "paths.clip_image_encoder")
    return inputs


def _schedule(cfg):
    from ..inpaint.pil import ProgressiveSchedule
    from ..train import ALL_AT_ONCE

    name = cfg.train.extra_schedule
    schedules = {"all": lambda: ALL_AT_ONCE, "pil": lambda: ProgressiveSchedule(cfg.train.pil_beta)}
    if name not in schedules:
        from ..config import ConfigError

        raise ConfigError(f"train.extra_schedule must be one of {', '.join(schedules)}, got {name!r}")
    return schedules[name]()


def _load_classifier(ctx):
    from ..train import counted_labels, load_classifier

    train, extra = ctx.inputs["train"], ctx.inputs.get("extra")
    labels = counted_labels(ctx.cfg, train, _as_image_set(extra) if extra is not None else None)
    return load_classifier(ctx.cfg, ctx.work, len(train.classes), labels, _device(ctx.cfg))


@stage("classifier", reads=CLASSIFIER_READS, modules=CLASSIFIER_MODULES, inputs=_classifier_inputs,
       load=_load_classifier, together=True)
def _classifier(ctx):
    """A classifier trained on the train split (+ extra images), its best epoch chosen on selection;
    from the pretrained backbone when configured, on its cached features when it stays frozen."""
    from ..train import fit_classifier

    extra = ctx.inputs.get("extra")
    cached = {k: ctx.inputs.get(f"{k}_features") for k in ("train", "select", "extra")}
    fit_classifier(ctx.cfg, ctx.inputs["train"], ctx.inputs["select"], _groups(ctx.inputs["groups"]),
                   _as_image_set(extra) if extra is not None else None, ctx.params["seed"], _device(ctx.cfg),
                   ctx.work, _schedule(ctx.cfg), checkpoint=pretrained_checkpoint(ctx),
                   features=cached if cached["train"] is not None else None)


@stage("finetune", reads=CLASSIFIER_READS, modules=CLASSIFIER_MODULES, inputs=_classifier_inputs,
       load=_load_classifier, together=True)
def _finetune(ctx):
    """Stage 2 of a classifier whose stage 1 is its own run (``train.warmup_on_features``): the
    ``start`` run's best epoch (heads on cached features), then ``train.finetune_epochs`` epochs on
    the images (augmented as configured) with the backbone, or its last ``train.finetune_stages``
    stages, learning too; the best epoch on selection, the start counted as epoch 0."""
    from ..train import fit_classifier

    extra = ctx.inputs.get("extra")
    fit_classifier(ctx.cfg.replace({"train.warmup_epochs": 0}), ctx.inputs["train"], ctx.inputs["select"],
                   _groups(ctx.inputs["groups"]), _as_image_set(extra) if extra is not None else None,
                   ctx.params["seed"], _device(ctx.cfg), ctx.work, _schedule(ctx.cfg),
                   checkpoint=pretrained_checkpoint(ctx), start=ctx.artifacts["start"].folder)


def selection_probs(artifact) -> np.ndarray:
    """A classifier artifact's probabilities on the selection split at its best epoch, read without
    loading its model (the tables choose each run's F1 thresholds from them)."""
    return load_npy(artifact.folder / "selection_probs.npy")


@stage("predictions", reads=("device",), modules=("trcgl.train", "trcgl.data.datasets", "trcgl.data.batches"),
       load=lambda ctx: load_npy(ctx.work / "probs.npy"))
def _predictions(ctx):
    """A trained classifier's probabilities on an image set (the test split, for every reported
    number), from the set's cached features when the classifier learnt from features."""
    from ..train import predict, predict_features

    run, device = ctx.inputs["model"], _device(ctx.cfg)
    if ctx.inputs.get("features") is not None:
        P = predict_features(run.model, ctx.inputs["features"], device)
    else:
        P = predict(run.model, ctx.inputs["images"], run.mean, run.std, device)
    save_npy(ctx.work / "probs.npy", P)


# ----------------------------------------------------------------------------- the pretrained backbone and its features

def _pretrain_reads(params) -> tuple[str, ...]:
    from ..pretraining import READS

    return READS


def _load_pretrain(ctx):
    """The pretraining's summary, with its per-epoch ``history`` (selection mAP on the head classes)."""
    import pandas as pd

    return {**json.loads((ctx.work / "pretrain.json").read_text()),
            "history": pd.read_csv(ctx.work / "training" / "history.csv")}


@stage("pretrain", reads=_pretrain_reads, modules=("trcgl.pretraining", "trcgl.train", "trcgl.models", "trcgl.losses",
                                                   "trcgl.metrics", "trcgl.data.datasets", "trcgl.data.sampling",
                                                   "trcgl.data.batches", "trcgl.data.augment", "trcgl.ema"),
       load=_load_pretrain, together=True)
def _pretrain(ctx):
    """A backbone pretrained on a pool of train-split rows disjoint from the experiment's, with
    only the head classes in the loss (no medium or tail label is ever seen): the analogue of the
    paper's PadChest-pretrained start."""
    from ..pretraining import pretrain_backbone

    pretrain_backbone(ctx.cfg, ctx.inputs["pool"], ctx.inputs["select"], _groups(ctx.inputs["cohort"]),
                      ctx.params["seed"], _device(ctx.cfg), ctx.work)


def pretrained_checkpoint(ctx, name: str = "backbone") -> str | None:
    """The weights file of a stage's pretrained-backbone input (None when it has none)."""
    art = ctx.artifacts.get(name)
    return None if art is None else str(art.folder / "backbone.pth")


def _feature_reads(params) -> tuple[str, ...]:
    """The backbone's own keys (:data:`trcgl.models.BACKBONE_KEYS`, which build_backbone reads),
    imported when a key is made, so that importing the stages does not import torch."""
    from ..models import BACKBONE_KEYS

    return BACKBONE_KEYS + ("device",)


@stage("features", reads=_feature_reads,
       modules=("trcgl.features", "trcgl.models"), load=lambda ctx: load_npy(ctx.work / "features.npy"))
def _features(ctx):
    """A frozen backbone's outputs for every image of a set (normalised as the training set is)."""
    from ..features import compute_features, feature_normalisation
    from ..models import build_backbone

    backbone = build_backbone(ctx.cfg, checkpoint=pretrained_checkpoint(ctx))
    mean, std = feature_normalisation(ctx.inputs["norm"])
    save_npy(ctx.work / "features.npy", compute_features(backbone, _as_image_set(ctx.inputs["images"]), mean, std,
                                                         _device(ctx.cfg)))


def uses_features(cfg) -> bool:
    """Whether a recipe never trains the backbone, so its heads can learn from cached features."""
    return cfg.train.finetune_epochs == 0 and not cfg.train.hflip and cfg.model.arch in ("trcgl", "csra", "timm")


def features(cfg, images: Request, train: Request | None = None) -> Request:
    """The cached features of ``images`` under ``cfg``'s backbone (pretrained when configured)."""
    extra = {"backbone": pretrain(cfg)} if uses_pretraining(cfg) else {}
    if cfg.model.checkpoint:
        extra["checkpoint"] = file_input(cfg.model.checkpoint)
    return Request("features", cfg, images=images, norm=train or train_set(cfg), **extra)


# ----------------------------------------------------------------------------- requests

def stage1_config(cfg):
    """The stage 1 run of a recipe whose stage 2 continues it (:func:`warmup_on_features`): the
    same recipe without fine-tuning, so the same run as a heads-only table's row of that recipe."""
    return cfg.replace({"train.finetune_epochs": 0, "train.warmup_on_features": False, "train.finetune_stages": None})


def warmup_on_features(cfg) -> bool:
    """Whether a recipe's stage 1 is its own run on cached features and stage 2 a ``finetune``
    run that continues it (``train.warmup_on_features`` with fine-tuning epochs, a backbone whose
    features can be cached)."""
    return bool(cfg.train.warmup_on_features and cfg.train.finetune_epochs > 0 and uses_features(stage1_config(cfg)))


def classifier(cfg, seed: int | None = None, extra: Request | None = None, train: Request | None = None) -> Request:
    """A classifier of ``cfg`` (chapters 3-7): trained on ``train`` (default: the train split) and
    ``extra``, best epoch on the selection split; on cached features of its frozen (pretrained)
    backbone when the recipe never trains the backbone (:func:`uses_features`); with
    ``train.warmup_on_features``, stage 2 as a ``finetune`` run that continues that stage 1 run."""
    train = train or train_set(cfg)
    select = selection_set(cfg)
    if warmup_on_features(cfg):
        return Request("finetune", cfg, seed=int(cfg.seed if seed is None else seed), groups=cohort(cfg),
                       train=train, select=select, extra=extra,
                       start=classifier(stage1_config(cfg), seed=seed, extra=extra, train=train))
    cached = {}
    if uses_features(cfg):
        cached = {"train_features": features(cfg, train, train), "select_features": features(cfg, select, train)}
        if extra is not None:
            cached["extra_features"] = features(cfg, extra, train)
    return Request("classifier", cfg, seed=int(cfg.seed if seed is None else seed), groups=cohort(cfg),
                   train=train, select=select, extra=extra, **cached)


def predictions(model: Request, images: Request) -> Request:
    """A classifier's probabilities on an image set (from its cached features in features mode)."""
    cached = {"features": features(model.cfg, images, model.params["train"])} if "train_features" in model.params else {}
    return Request("predictions", model.cfg, model=model, images=images, **cached)


# ----------------------------------------------------------------------------- in-memory inputs

def train_classifier(cfg, train_set, select_set, groups, extra=None, seed: int | None = None, cache=None):
    """Train (or load from the cache) a classifier on in-memory image sets through the stage graph
    (the ``classifier`` stage with constant inputs: tests and interactive use)."""
    req = Request("classifier", cfg, seed=int(cfg.seed if seed is None else seed),
                  groups=Const(list(groups), digest(list(groups))), train=const_set(train_set),
                  select=const_set(select_set), extra=const_set(extra) if extra is not None else None)
    return get(req, cache)
