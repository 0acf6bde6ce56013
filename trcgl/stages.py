"""Every expensive step of the book, declared once: the stage graph.

Read top to bottom, this file is the flow of the book::

    label table -> cohort (train / selection / test, patient-disjoint)
      cohort -> image sets: train, selection, test, oracle (fresh balanced renders), normal
      train -> vae -> prompt-diffusion -> samples -> synthetic-set (filter calibrated on selection)
      normal + vae -> normal-dit;  train + normal-dit + CAM classifier -> inpainted-set
      oracle image set -> oracle classifier
      train (+ one extra set) -> classifier (best epoch on selection) -> predictions (test)
      predictions of every (row, seed) -> table -> results store

Each declaration names the config keys the stage reads, its inputs and the package modules whose
code it runs; :mod:`trcgl.graph` derives the cache key from exactly those. The functions at the
end (:func:`train_set`, :func:`classifier`, :func:`table`, ...) build the requests the chapters
and the command line resolve (``python -m trcgl run STAGE``).
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from .cache import atomic_write_json, digest, file_sha256, load_npy, save_npy
from .graph import Const, Request, StageError, stage
from .graph import resolve as _resolve
from .graph import value as _value

# ----------------------------------------------------------------------------- external inputs


_FILE_DIGESTS: dict = {}


def file_input(path: str | Path) -> Const:
    """A file outside the cache as an input: keyed by its content, not its path (hashed once per
    process and file state: path, size, modification time)."""
    path = Path(path)
    if not path.is_file():
        raise StageError(f"input file not found: {path}")
    info = path.stat()
    state = (str(path.resolve()), info.st_size, info.st_mtime_ns)
    if state not in _FILE_DIGESTS:
        _FILE_DIGESTS[state] = file_sha256(path)[:16]
    return Const(path, _FILE_DIGESTS[state])


_FOLDER_DIGESTS: dict = {}


def folder_input(path: str | Path, what: str) -> Const:
    """A folder outside the cache (saved weights, a pipeline, an image folder) as an input, keyed
    by its files (names, sizes, modification times; computed once per process and folder state)."""
    path = Path(path)
    if not path.is_dir():
        raise StageError(f"{what}: no folder at {path}")
    state = (str(path.resolve()), path.stat().st_mtime_ns)
    if state not in _FOLDER_DIGESTS:
        files = sorted((f.relative_to(path).as_posix(), f.stat().st_size, f.stat().st_mtime_ns)
                       for f in path.rglob("*") if f.is_file())
        _FOLDER_DIGESTS[state] = digest(files)
    return Const(path, _FOLDER_DIGESTS[state])


def _device(cfg):
    from .runtime import select_device

    return select_device(cfg.device)


# ----------------------------------------------------------------------------- labels and cohort

def _table_inputs(cfg, params):
    from .data.padchest import read_raw, shipped_table_path

    path = Path(cfg.paths.padchest_csv or shipped_table_path())
    if not path.is_file():
        read_raw(path)      # the label table's own clear error
    return {"csv": file_input(path)}


def _load_table(ctx):
    from .data.padchest import read_table

    return read_table(ctx.work)


@stage("label-table", reads=(), modules=("trcgl.data.padchest",), inputs=_table_inputs, load=_load_table)
def _label_table(ctx):
    """The PadChest label table, parsed (labels, localizations, report sentences)."""
    from .data.padchest import load_table, save_table

    save_table(load_table(ctx.inputs["csv"]), ctx.work)


COHORT_READS = ("data.class_set", "data.split_seed", "data.test_fraction", "data.selection_fraction",
                "data.head_threshold", "data.tail_threshold")


def _load_cohort(ctx):
    from .data.padchest import read_cohort

    return read_cohort(ctx.work, ctx.inputs["table"])


@stage("cohort", reads=COHORT_READS, modules=("trcgl.data.padchest", "data/class_sets.json"),
       inputs=lambda cfg, p: {"table": Request("label-table", cfg)}, load=_load_cohort)
def _cohort(ctx):
    """The class set's label vectors, the patient-disjoint train / selection / test split, the groups."""
    from .data.padchest import build_cohort, save_cohort

    d = ctx.cfg.data
    save_cohort(build_cohort(ctx.inputs["table"], d.class_set, d.split_seed, d.test_fraction, d.selection_fraction,
                             d.head_threshold, d.tail_threshold), ctx.work)


# ----------------------------------------------------------------------------- image sets

@dataclass(frozen=True)
class Rows:
    """A named choice of cohort rows for an image set: the keys it reads and how it picks."""

    reads: tuple[str, ...]
    pick: Callable[[Any, Any], np.ndarray]


def _split_reads(split: str) -> tuple[str, ...]:
    return (f"data.n_{split}", f"data.min_{split}_positives", "data.split_seed", "data.projections")


def _split_rows(split: str) -> Callable:
    def pick(cfg, cohort):
        from .data.datasets import split_rows

        return split_rows(cfg, cohort, split)
    return pick


def _oracle_rows(cfg, cohort):
    from .data.datasets import split_rows
    from .diffusion.oracle import oracle_rows

    return oracle_rows(cfg, cohort, split_rows(cfg, cohort, "train"), cfg.seed)


def _normal_rows(cfg, cohort):
    from .data.datasets import split_rows
    from .inpaint.normal_dit import normal_rows

    return normal_rows(cfg, cohort, split_rows(cfg, cohort, "train"), cfg.inpaint.n_normal, cfg.seed)


def _pool_rows(cfg, cohort):
    from .data.datasets import split_rows

    allowed = (cohort.split == "train") & cohort.frame["Projection"].isin(list(cfg.data.projections)).to_numpy()
    allowed[split_rows(cfg, cohort, "train")] = False
    pool = np.flatnonzero(allowed)
    rng = np.random.default_rng([cfg.pretrain.seed, 5171])
    return np.sort(rng.choice(pool, size=min(cfg.pretrain.n_pool, len(pool)), replace=False))


ROWS: dict[str, Rows] = {
    "train": Rows(_split_reads("train"), _split_rows("train")),
    "selection": Rows(_split_reads("selection"), _split_rows("selection")),
    "test": Rows(_split_reads("test") + ("data.test_repeats",), _split_rows("test")),
    # fresh, class-balanced renders of train-split rows the experiment does not train on
    "oracle": Rows(_split_reads("train") + ("diffusion.oracle_per_class", "seed"), _oracle_rows),
    # train-split rows the experiment does not train on: the pretraining pool
    "pool": Rows(_split_reads("train") + ("pretrain.n_pool", "pretrain.seed"), _pool_rows),
    # rows labelled exactly 'normal' that the experiment does not train on (the DiT's data)
    "normal": Rows(_split_reads("train") + ("inpaint.n_normal", "seed"), _normal_rows),
}

IMAGE_READS = ("data.source", "data.image_size", "data.on_missing", "data.cooccurrence", "phantom",
               "paths.padchest_root")
IMAGE_MODULES = ("trcgl.data.datasets", "trcgl.data.render", "trcgl.data.phantom", "trcgl.data.images", "trcgl.data.padchest",
                 "data/locations.json", "trcgl.diffusion.oracle", "trcgl.inpaint.normal_dit")


def _image_reads(params) -> tuple[str, ...]:
    if params.get("rows") not in ROWS:
        raise StageError(f"image-set: unknown rows {params.get('rows')!r} (known: {', '.join(ROWS)})")
    return IMAGE_READS + ROWS[params["rows"]].reads


def _image_inputs(cfg, params):
    inputs = {"cohort": Request("cohort", cfg)}
    if cfg.data.source == "padchest":
        from .data.padchest import padchest_root

        root = padchest_root(cfg)
        if root is None:
            from .data.padchest import DataError

            raise DataError("data.source is 'padchest' but no image folder is set: set PADCHEST_ROOT or "
                            "paths.padchest_root (the `paper` profile reads real PadChest images)")
        if not root.is_dir():
            from .data.images import PadChestImages

            PadChestImages(root, cfg.data.image_size)     # its own clear "folder not found"
        inputs["images"] = folder_input(root, "PadChest images (PADCHEST_ROOT)")
    return inputs


def _load_image_set(ctx):
    from .data.datasets import load_image_set

    return load_image_set(ctx.work)


@stage("image-set", reads=_image_reads, modules=IMAGE_MODULES, inputs=_image_inputs, load=_load_image_set)
def _image_set(ctx):
    """Rendered phantoms (or real PadChest images) of one choice of cohort rows."""
    from .data.datasets import write_image_set

    cohort = ctx.inputs["cohort"]
    index = ROWS[ctx.params["rows"]].pick(ctx.cfg, cohort)
    write_image_set(ctx.cfg, cohort, index, ctx.params["rows"], ctx.work)


# ----------------------------------------------------------------------------- derived training sets

def _load_plain_set(ctx):
    from .data.datasets import load_image_set

    return load_image_set(ctx.work)


@stage("extra-set", reads=(), modules=("trcgl.data.datasets", "trcgl.stages"), load=_load_plain_set)
def _extra_set(ctx):
    """Extra training images made of parts (synthetic, inpainted, ...), each with an optional loss
    weight and PIL flag (``progressive``)."""
    import dataclasses

    from .data.datasets import concat_sets, save_image_set

    parts = []
    for k, (weight, progressive) in enumerate(ctx.params["overrides"]):
        s = _as_image_set(ctx.inputs[f"part{k}"])
        if weight is not None:
            s = dataclasses.replace(s, weights=np.full(len(s), weight, np.float32))
        if progressive is not None:
            s = dataclasses.replace(s, rows=s.rows.assign(progressive=progressive))
        parts.append(s)
    save_image_set(concat_sets(*parts), ctx.work)


def _as_image_set(v):
    """The image set of an input: an ImageSet, or a stage result that carries one."""
    for attr in ("kept", "images"):
        inner = getattr(v, attr, None)
        if inner is not None and hasattr(inner, "Y"):
            return inner
    return v


@stage("copies-set", reads=(), modules=("trcgl.inpaint.experiment", "trcgl.data.datasets"), load=_load_plain_set)
def _copies_set(ctx):
    """The inpainting control: the very images that were inpainted, unchanged, all labels kept."""
    from .data.datasets import save_image_set
    from .inpaint.experiment import originals_control

    save_image_set(originals_control(ctx.inputs["train"], ctx.inputs["inpainted"]), ctx.work)


# ----------------------------------------------------------------------------- classifiers

CLASSIFIER_READS = ("model", "train", "eval.f1_threshold", "eval.empty_classes", "deterministic", "device", "data.image_size",
                    "paths.clip_image_encoder")
CLASSIFIER_MODULES = ("trcgl.train", "trcgl.models", "trcgl.losses", "trcgl.metrics", "trcgl.data.datasets",
                      "trcgl.data.sampling", "trcgl.data.batches", "trcgl.ema", "trcgl.inpaint.pil")


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
    rendering (:data:`CONDITION_KEYS` at their neutral values)."""
    from .config import neutral_values

    neutral = neutral_values()
    base = cfg.replace({k: neutral[k] for k in CONDITION_KEYS})
    return Request("pretrain", base, seed=int(base.pretrain.seed), pool=image_set(base, "pool"),
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
    from .inpaint.pil import ProgressiveSchedule
    from .train import ALL_AT_ONCE

    name = cfg.train.extra_schedule
    schedules = {"all": lambda: ALL_AT_ONCE, "pil": lambda: ProgressiveSchedule(cfg.train.pil_beta)}
    if name not in schedules:
        from .config import ConfigError

        raise ConfigError(f"train.extra_schedule must be one of {', '.join(schedules)}, got {name!r}")
    return schedules[name]()


def _groups(value) -> list[str]:
    """The class groups of an input: a cohort's, or a list given directly (tests)."""
    return list(getattr(value, "groups", value))


def _load_classifier(ctx):
    from .train import counted_labels, load_classifier

    train, extra = ctx.inputs["train"], ctx.inputs.get("extra")
    labels = counted_labels(ctx.cfg, train, _as_image_set(extra) if extra is not None else None)
    return load_classifier(ctx.cfg, ctx.work, len(train.classes), labels, _device(ctx.cfg))


@stage("classifier", reads=CLASSIFIER_READS, modules=CLASSIFIER_MODULES, inputs=_classifier_inputs,
       load=_load_classifier, together=True)
def _classifier(ctx):
    """A classifier trained on the train split (+ extra images), its best epoch chosen on selection;
    from the pretrained backbone when configured, on its cached features when it stays frozen."""
    from .train import fit_classifier

    extra = ctx.inputs.get("extra")
    cached = {k: ctx.inputs.get(f"{k}_features") for k in ("train", "select", "extra")}
    fit_classifier(ctx.cfg, ctx.inputs["train"], ctx.inputs["select"], _groups(ctx.inputs["groups"]),
                   _as_image_set(extra) if extra is not None else None, ctx.params["seed"], _device(ctx.cfg),
                   ctx.work, _schedule(ctx.cfg), checkpoint=pretrained_checkpoint(ctx),
                   features=cached if cached["train"] is not None else None)


@stage("predictions", reads=("device",), modules=("trcgl.train", "trcgl.data.datasets", "trcgl.data.batches"),
       load=lambda ctx: load_npy(ctx.work / "probs.npy"))
def _predictions(ctx):
    """A trained classifier's probabilities on an image set (the test split, for every reported
    number), from the set's cached features when the classifier learnt from features."""
    from .train import predict, predict_features

    run, device = ctx.inputs["model"], _device(ctx.cfg)
    if ctx.inputs.get("features") is not None:
        P = predict_features(run.model, ctx.inputs["features"], device)
    else:
        P = predict(run.model, ctx.inputs["images"], run.mean, run.std, device)
    save_npy(ctx.work / "probs.npy", P)


# ----------------------------------------------------------------------------- the pretrained backbone and its features

PRETRAIN_READS = ("model.backbone", "pretrain", "data.image_size", "deterministic", "device")


def _load_pretrain(ctx):
    return json.loads((ctx.work / "pretrain.json").read_text())


@stage("pretrain", reads=PRETRAIN_READS, modules=("trcgl.pretraining", "trcgl.train", "trcgl.models",
                                                   "trcgl.losses", "trcgl.metrics", "configs/defaults.yaml"),
       load=_load_pretrain, together=True)
def _pretrain(ctx):
    """A backbone pretrained on a pool of train-split rows disjoint from the experiment's, with
    only the head classes in the loss (no medium or tail label is ever seen): the analogue of the
    paper's PadChest-pretrained start."""
    from .pretraining import pretrain_backbone

    pretrain_backbone(ctx.cfg, ctx.inputs["pool"], ctx.inputs["select"], _groups(ctx.inputs["cohort"]),
                      ctx.params["seed"], _device(ctx.cfg), ctx.work)


def pretrained_checkpoint(ctx, name: str = "backbone") -> str | None:
    """The weights file of a stage's pretrained-backbone input (None when it has none)."""
    art = ctx.artifacts.get(name)
    return None if art is None else str(art.folder / "backbone.pth")


@stage("features", reads=("model.arch", "model.backbone", "model.feature_stage", "model.final_norm",
                           "model.feature_batchnorm", "model.checkpoint", "data.image_size", "device"),
       modules=("trcgl.features", "trcgl.models"), load=lambda ctx: load_npy(ctx.work / "features.npy"))
def _features(ctx):
    """A frozen backbone's outputs for every image of a set (normalised as the training set is)."""
    from .features import compute_features, feature_normalisation
    from .models import build_backbone

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


# ----------------------------------------------------------------------------- prompt-latent diffusion

VAE_KEYS = ("n_train", "vae_channels", "latent_channels", "vae_epochs", "vae_lr", "kl_weight", "batch_size", "amp")


def _load_vae(ctx):
    from .diffusion.training import load_vae

    return load_vae(ctx.work, _device(ctx.cfg))


@stage("vae", reads=tuple(f"diffusion.{k}" for k in VAE_KEYS) + ("deterministic", "device"),
       modules=("trcgl.diffusion.training", "trcgl.diffusion.models", "trcgl.data.batches"), load=_load_vae,
       together=True)
def _vae(ctx):
    """The autoencoder of the latent diffusion (trained on the train split's images)."""
    from .diffusion.training import diffusion_rows, fit_vae

    train, seed = ctx.inputs["train"], ctx.params["seed"]
    fit_vae(ctx.cfg, train.images[diffusion_rows(ctx.cfg, train, seed)], seed, _device(ctx.cfg), ctx.work)


def _diffusion_reads(params) -> tuple[str, ...]:
    from .diffusion.training import TRAINING_KEYS

    return tuple(f"diffusion.{k}" for k in TRAINING_KEYS) + ("deterministic", "device", "paths.text_encoder")


def _diffusion_inputs(cfg, params):
    if cfg.paths.diffusion_pipeline:   # a saved pipeline replaces training
        return {"pipeline": folder_input(cfg.paths.diffusion_pipeline, "paths.diffusion_pipeline")}
    inputs = {"vae": Request("vae", cfg, seed=params["seed"], train=train_set(cfg))}
    if cfg.diffusion.text_encoder == "clip" and cfg.paths.text_encoder:
        inputs["text_encoder"] = folder_input(cfg.paths.text_encoder, "paths.text_encoder")
    return inputs


def _load_diffusion(ctx):
    from .diffusion.training import load_diffusion

    return load_diffusion(ctx.work, _device(ctx.cfg))


@stage("prompt-diffusion", reads=_diffusion_reads,
       modules=("trcgl.diffusion.training", "trcgl.diffusion.models", "trcgl.diffusion.text",
                "trcgl.diffusion.pipeline", "trcgl.data.prompts", "trcgl.data.batches"),
       inputs=_diffusion_inputs, load=_load_diffusion, together=True)
def _prompt_diffusion(ctx):
    """The UNet and context vectors (Eq. 1-3), or a saved pipeline folder copied in."""
    if "pipeline" in ctx.inputs:
        from .diffusion.pipeline import load_pipeline

        from .runtime import processes

        load_pipeline(ctx.inputs["pipeline"])     # one clear error for an incomplete folder
        if processes().is_main:                   # several processes: one copies
            shutil.copytree(ctx.inputs["pipeline"], ctx.work / "pipeline", dirs_exist_ok=True)
        return
    from .diffusion.training import fit_prompt_diffusion

    fit_prompt_diffusion(ctx.cfg, ctx.inputs["cohort"].class_set, ctx.inputs["train"], ctx.inputs["select"],
                         ctx.inputs["vae"], ctx.params["seed"], _device(ctx.cfg), ctx.work)


SAMPLE_READS = ("diffusion.target_groups", "diffusion.n_per_class", "diffusion.n_sweep_per_class",
                "diffusion.sampling_steps", "diffusion.clip_latents", "device")


@dataclass
class Samples:
    plan: pd.DataFrame      # per image: target, target_id, findings, prompt (empty for unconditional)
    images: np.ndarray      # uint8 (N, H, W)


def _load_samples(ctx):
    from .data.datasets import read_rows

    return Samples(read_rows(ctx.work / "plan.json"), load_npy(ctx.work / "images.npy"))


@stage("samples", reads=SAMPLE_READS, modules=("trcgl.diffusion.generate", "trcgl.diffusion.pipeline",
                                                "trcgl.data.prompts"), load=_load_samples)
def _samples(ctx):
    """Images sampled with DDIM + classifier-free guidance (Eq. 4-6) for a plan of prompts:
    ``synthetic`` (n_per_class label sets per target class), ``sweep`` (the first n_sweep_per_class
    of those) or ``unconditional``."""
    from .data.datasets import write_rows
    from .diffusion.generate import draw_label_sets, sample, target_classes

    d, kind, seed = ctx.cfg.diffusion, ctx.params["kind"], ctx.params["seed"]
    cohort, train = ctx.inputs["cohort"], ctx.inputs["train"]
    targets = target_classes(ctx.cfg, cohort.groups)
    if kind == "unconditional":
        n = max(d.n_sweep_per_class * len(targets), 8)
        plan = pd.DataFrame({"prompt": [""] * n, "target_id": [0] * n})
    else:
        plan = draw_label_sets(train, cohort.class_set, targets, d.n_per_class, seed)
        if kind == "sweep":
            plan = plan.groupby("target_id", sort=False).head(d.n_sweep_per_class).reset_index(drop=True)
        elif kind != "synthetic":
            raise StageError(f"samples: unknown kind {kind!r} (synthetic, sweep, unconditional)")
    images = sample(ctx.inputs["diffusion"], plan["prompt"], plan["target_id"], ctx.params["omega"], d.sampling_steps,
                    ctx.params["sample_seed"], unconditional=kind == "unconditional", clip_latents=d.clip_latents)
    write_rows(plan, ctx.work / "plan.json")
    save_npy(ctx.work / "images.npy", images)


def _load_synthetic(ctx):
    from .data.datasets import load_image_set, read_rows
    from .diffusion.generate import SyntheticResult

    report = pd.read_csv(ctx.work / "report.csv", index_col=0)
    kept = load_image_set(ctx.work / "kept")
    return SyntheticResult(kept, read_rows(ctx.work / "plan.json"), ctx.inputs["samples"].images, report,
                           load_npy(ctx.work / "thresholds.npy"))


@stage("synthetic-set", reads=("diffusion.filter_negative_quantile", "diffusion.synthetic_weight", "device"),
       modules=("trcgl.diffusion.generate", "trcgl.train"), load=_load_synthetic)
def _synthetic_set(ctx):
    """The filtered synthetic tail set: kept images with loss weight w (filter calibrated on selection)."""
    from .data.datasets import save_image_set, write_rows
    from .diffusion.generate import filter_synthetic

    s = ctx.inputs["samples"]
    res = filter_synthetic(ctx.cfg, ctx.inputs["cohort"].class_set, s.plan, s.images, ctx.inputs["filter"],
                           ctx.inputs["select"], _device(ctx.cfg))
    if len(res.kept):
        save_image_set(res.kept, ctx.work / "kept")
    else:   # nothing kept: an explicit empty set, so the rows that use it say so
        from .data.padchest import DataError

        raise DataError("the filter kept no synthetic image: lower diffusion.filter_negative_quantile or generate more")
    write_rows(res.plan, ctx.work / "plan.json")
    res.report.to_csv(ctx.work / "report.csv")
    save_npy(ctx.work / "thresholds.npy", res.thresholds)


# ----------------------------------------------------------------------------- controls of the synthetic claim

CONTROL_KINDS = ("oversampled", "ideal", "shuffled")


def _control_reads(params) -> tuple[str, ...]:
    if params.get("kind") not in CONTROL_KINDS:
        raise StageError(f"control-set: unknown kind {params.get('kind')!r} (known: {', '.join(CONTROL_KINDS)})")
    return ("phantom", "data.image_size", "data.source") if params["kind"] == "ideal" else ()


@stage("control-set", reads=_control_reads, modules=("trcgl.controls", "trcgl.data.datasets", "trcgl.data.phantom"),
       load=_load_plain_set)
def _control_set(ctx):
    """A control of the synthetic tail set: real tail rows oversampled to its count and weight, its
    label sets rendered by the phantom renderer (ideal generator), or its labels shuffled."""
    from . import controls
    from .data.datasets import phantom_renderer, save_image_set

    kind, seed = ctx.params["kind"], ctx.params["seed"]
    synthetic, train = ctx.inputs["synthetic"].kept, ctx.inputs["train"]
    if kind == "oversampled":
        out = controls.oversampled(train, synthetic, seed)
    elif kind == "shuffled":
        out = controls.shuffled_labels(synthetic, seed)
    else:
        if ctx.cfg.data.source != "phantom":
            raise StageError("the ideal generator renders phantoms: it needs data.source = phantom")
        renderer = phantom_renderer(ctx.cfg, ctx.inputs["cohort"])
        out = controls.ideal_renders(renderer, synthetic, train, ctx.cfg.data.image_size, seed)
    save_image_set(out, ctx.work)


# ----------------------------------------------------------------------------- the inpainting paper

DIT_READS = tuple(f"inpaint.{k}" for k in ("n_normal", "dit_layers", "dit_heads", "dit_head_dim", "dit_patch", "epochs",
                                            "lr", "batch_size", "ema_decay")) + \
    ("diffusion.train_timesteps", "diffusion.beta_schedule", "diffusion.amp", "deterministic", "device")


def _load_dit(ctx):
    from .inpaint.normal_dit import load_normal_dit

    return load_normal_dit(ctx.work, _device(ctx.cfg))


@stage("normal-dit", reads=DIT_READS,
       modules=("trcgl.inpaint.normal_dit", "trcgl.diffusion.training", "trcgl.data.batches"),
       load=_load_dit, together=True)
def _normal_dit(ctx):
    """A DiT trained on normal radiographs only, in the diffusion VAE's latent space."""
    from .inpaint.normal_dit import fit_normal_dit

    fit_normal_dit(ctx.cfg, ctx.inputs["normals"].images, ctx.inputs["vae"], ctx.params["seed"], _device(ctx.cfg),
                   ctx.work)


INPAINT_READS = tuple(f"inpaint.{k}" for k in ("cam_threshold", "mask_dilation", "keep_groups", "guard",
                                                "guard_threshold", "steps", "jump_length", "jump_n_sample", "eta",
                                                "weight")) + ("device",)


def _load_inpainted(ctx):
    from .inpaint.repaint import load_inpaint_result

    return load_inpaint_result(ctx.work)


@stage("inpainted-set", reads=INPAINT_READS,
       modules=("trcgl.inpaint.repaint", "trcgl.inpaint.guard", "trcgl.inpaint.masks", "trcgl.localization"),
       load=_load_inpainted)
def _inpainted_set(ctx):
    """Head lesions erased by RePaint with the normal DiT inside Grad-CAM masks; labels minus erased."""
    from .inpaint.repaint import inpaint_training_set, save_inpaint_result

    res = inpaint_training_set(ctx.cfg, ctx.inputs["cohort"], ctx.inputs["train"], ctx.inputs["dit"],
                               ctx.inputs["cam"], ctx.params["seed"])
    save_inpaint_result(res, ctx.work)


# ----------------------------------------------------------------------------- tables

TABLE_READS = ("eval.f1_threshold", "eval.empty_classes", "eval.bootstrap")
INTERVAL_METRICS = ("mAP", "mAUC", "mAP head", "mAP medium", "mAP tail", "mAUC head", "mAUC medium", "mAUC tail")


@dataclass
class TableResult:
    name: str
    records: list[dict]                 # per (row, seed, metric) values, intervals, differences, chance; test split
    rows: list[dict]                    # name, meta, unavailable
    seeds: list[int]
    probs: dict                         # (row, seed) -> test probabilities (N, C)
    runs: dict                          # (row, seed) -> classifier Request (resolve for the model)


def _load_table_result(ctx):
    meta = json.loads((ctx.work / "table.json").read_text())
    with np.load(ctx.work / "probs.npz", allow_pickle=False) as z:
        probs = {tuple(k.split("|", 1)): z[k] for k in z.files}
    probs = {(r, int(s)): v for (r, s), v in probs.items()}
    return TableResult(meta["name"], meta["records"], meta["rows"], meta["seeds"], probs, {})


@stage("table", reads=TABLE_READS, modules=("trcgl.metrics", "trcgl.seedtables", "trcgl.tables"),
       load=_load_table_result)
def _table(ctx):
    """Every (row, seed) of a table scored on the test split: per-seed values, intervals that
    resample seeds and test label rows together, paired differences, and the chance levels."""
    import io

    from .cache import atomic_write_bytes
    from .metrics import evaluate
    from .seedtables import METRICS, bootstrap_records, chance_levels

    test = ctx.inputs["test"]
    groups = _groups(ctx.inputs["cohort"])
    e = ctx.cfg.eval
    seeds = ctx.params["seeds"]
    records, probs = [], {}
    names = [row["name"] for row in ctx.params["rows"] if not row["unavailable"]]
    for name in names:
        for seed in seeds:
            P = ctx.inputs[f"run|{name}|{seed}"]
            ev = evaluate(test.Y, P, test.classes, groups, e.f1_threshold, empty=e.empty_classes)
            for metric in METRICS:
                records.append({"row": name, "metric": metric, "value": float(ev.means[metric]), "seed": int(seed),
                                "group": None, "split": "test", "kind": "seed"})
            probs[(name, seed)] = P.astype(np.float32)
    records += [{**r, "group": None, "split": "test"} for r in
                bootstrap_records(test.Y, probs, test.rows["ImageID"].to_numpy(), groups, names, seeds,
                                  INTERVAL_METRICS, n=e.bootstrap, seed=0)]
    chance = chance_levels(test.Y, groups)
    records += [{"row": "chance (random scores)", "metric": m, "value": float(chance[m]), "seed": None, "group": None,
                 "split": "test", "kind": "chance"} for m in INTERVAL_METRICS]
    buffer = io.BytesIO()
    np.savez(buffer, **{f"{r}|{s}": P for (r, s), P in probs.items()})
    atomic_write_bytes(ctx.work / "probs.npz", buffer.getvalue())
    atomic_write_json(ctx.work / "table.json", {"name": ctx.params["name"], "records": records,
                                                "rows": ctx.params["rows"], "seeds": seeds})


# ============================================================================= requests
# The functions below build the requests the book resolves. Each says which chapter uses it.

def get(req: Request, cache=None) -> Any:
    """The loaded value of a request (computed, with its inputs, when not cached)."""
    return _value(req, cache)


def resolve(req: Request, cache=None):
    """The :class:`~trcgl.graph.Artifact` of a request (folder, key, digest, value)."""
    return _resolve(req, cache)


def cohort(cfg) -> Request:
    """Chapters 1-7."""
    return Request("cohort", cfg)


def image_set(cfg, rows: str) -> Request:
    return Request("image-set", cfg, rows=rows)


def train_set(cfg) -> Request:
    return image_set(cfg, "train")


def selection_set(cfg) -> Request:
    return image_set(cfg, "selection")


def test_set(cfg) -> Request:
    return image_set(cfg, "test")


def classifier(cfg, seed: int | None = None, extra: Request | None = None, train: Request | None = None) -> Request:
    """A classifier of ``cfg`` (chapters 3-7): trained on ``train`` (default: the train split) and
    ``extra``, best epoch on the selection split; on cached features of its frozen (pretrained)
    backbone when the recipe never trains the backbone (:func:`uses_features`)."""
    train = train or train_set(cfg)
    select = selection_set(cfg)
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


def diffusion(cfg, seed: int | None = None) -> Request:
    """The prompt-latent diffusion model (chapter 2)."""
    seed = int(cfg.seed if seed is None else seed)
    return Request("prompt-diffusion", cfg, seed=seed, train=train_set(cfg), select=selection_set(cfg),
                   cohort=cohort(cfg))


def filter_classifier(cfg) -> Request:
    """The synthetic set's filter: the GAP-only classifier trained on the real train split."""
    from .tables import gap_only

    return classifier(gap_only(cfg))


def samples(cfg, kind: str = "synthetic", omega: float | None = None, model: Request | None = None,
            sample_seed: int | None = None) -> Request:
    """Sampled images (chapter 2): ``synthetic`` at ω = guidance_scale by default."""
    omega = float(cfg.diffusion.guidance_scale if omega is None else omega)
    seed = int(cfg.seed)
    return Request("samples", cfg, kind=kind, omega=omega, seed=seed,
                   sample_seed=int(seed + (1 if kind == "unconditional" else 0) if sample_seed is None else sample_seed),
                   diffusion=model or diffusion(cfg), train=train_set(cfg), cohort=cohort(cfg))


def synthetic_set(cfg) -> Request:
    """The filtered synthetic tail set (chapters 2, 5, 6, 7)."""
    return Request("synthetic-set", cfg, samples=samples(cfg), filter=filter_classifier(cfg),
                   select=selection_set(cfg), cohort=cohort(cfg))


def control_set(cfg, kind: str) -> Request:
    """A control of the synthetic set (chapters 2 and 5): ``oversampled``, ``ideal`` or ``shuffled``."""
    return Request("control-set", cfg, kind=kind, seed=int(cfg.seed), synthetic=synthetic_set(cfg),
                   train=train_set(cfg), cohort=cohort(cfg))


def oracle(cfg) -> Request:
    """The oracle (chapter 2): GAP-only on fresh balanced renders."""
    from .diffusion.oracle import oracle_config

    return classifier(oracle_config(cfg), train=image_set(cfg, "oracle"))


def vae(cfg) -> Request:
    return Request("vae", cfg, seed=int(cfg.seed), train=train_set(cfg))


def normal_dit(cfg) -> Request:
    """The normal-image DiT (chapter 7)."""
    return Request("normal-dit", cfg, seed=int(cfg.seed), normals=image_set(cfg, "normal"), vae=vae(cfg))


def cam_classifier(cfg) -> Request:
    """The classifier whose Grad-CAM gives the inpainting masks: GAP-only on the tables' train set."""
    from .tables import gap_only, tables_config

    return classifier(gap_only(tables_config(cfg)))


def inpainted_set(cfg, guard: str | None = None) -> Request:
    """The inpainted training images (chapter 7), on the tables' train set."""
    from .tables import tables_config

    icfg = cfg.replace({"inpaint.guard": guard}) if guard is not None else cfg
    return Request("inpainted-set", icfg, seed=int(cfg.seed), dit=normal_dit(cfg), train=train_set(tables_config(cfg)),
                   cam=cam_classifier(cfg), cohort=cohort(cfg))


def extra_request(cfg, extra) -> Request | None:
    """The stage request of a table row's :class:`~trcgl.tables.Extra`."""
    from .tables import COPIES, INPAINTED, INPAINTED_UNGUARDED, SYNTHETIC, tables_config

    if extra is None:
        return None
    kinds = {SYNTHETIC: lambda: synthetic_set(cfg), INPAINTED: lambda: inpainted_set(cfg),
             INPAINTED_UNGUARDED: lambda: inpainted_set(cfg, guard="off"),
             **{kind: (lambda k: lambda: control_set(cfg, k))(kind) for kind in CONTROL_KINDS},
             COPIES: lambda: Request("copies-set", cfg, train=train_set(tables_config(cfg)),
                                     inpainted=inpainted_set(cfg))}
    parts = []
    for kind, weight, progressive in extra.parts:
        if kind not in kinds:
            raise StageError(f"unknown extra images {kind!r} (known: {', '.join(kinds)})")
        parts.append((kinds[kind](), weight, progressive))
    if len(parts) == 1 and parts[0][1] is None and parts[0][2] is None:
        return parts[0][0]
    return Request("extra-set", cfg, overrides=[[w, p] for _, w, p in parts],
                   **{f"part{k}": r for k, (r, _, _) in enumerate(parts)})


def row_run(cfg, row, seed: int) -> Request:
    """The classifier request of one (row, seed) of a table."""
    return classifier(row.cfg, seed=seed, extra=extra_request(cfg, row.extra))


def table(cfg, name: str, seeds=None) -> Request:
    """Every (row, seed) run of a table, scored on the test split (chapters 3-7)."""
    from .tables import table_rows

    rows = table_rows(cfg, name)
    seeds = [int(s) for s in (cfg.seeds if seeds is None else seeds)]
    if not seeds:
        raise StageError("a table needs at least one seed (config key 'seeds')")
    runs = {}
    for row in rows:
        if row.unavailable:
            continue
        for s in seeds:
            model = row_run(cfg, row, s)
            runs[f"run|{row.name}|{s}"] = predictions(model, test_set(row.cfg))
    row_meta = [{"name": r.name, "meta": r.meta, "unavailable": r.unavailable} for r in rows]
    return Request("table", cfg, name=name, seeds=seeds, rows=row_meta, cohort=cohort(cfg), test=test_set(cfg), **runs)


def table_result(cfg, name: str, seeds=None, cache=None) -> TableResult:
    """A table's results, published into the profile's results store (chapters 3-7)."""
    from .seedtables import publish, results_store
    from .tables import table_rows

    req = table(cfg, name, seeds)
    result = get(req, cache)
    rows = {r.name: r for r in table_rows(cfg, name)}
    result.runs = {(r, s): row_run(cfg, rows[r], s) for (r, s) in result.probs}
    publish(results_store(cfg), name, result.records)
    return result


# ----------------------------------------------------------------------------- named targets

#: What ``python -m trcgl run NAME`` resolves (``all``: every target).
TARGETS: dict[str, Callable] = {
    "cohort": lambda cfg: [cohort(cfg)],
    "image-sets": lambda cfg: [train_set(cfg), selection_set(cfg), test_set(cfg)],
    "diffusion": lambda cfg: [diffusion(cfg), diffusion(cfg.replace({"diffusion.context_vectors": 0}))],
    "synthetic": lambda cfg: [synthetic_set(cfg)],
    "oracle": lambda cfg: [oracle(cfg)] if cfg.data.source == "phantom" else [],
    "dit": lambda cfg: [normal_dit(cfg)],
    "inpainted": lambda cfg: [inpainted_set(cfg), inpainted_set(cfg, guard="off")],
    **{name: (lambda n: lambda cfg: [table(cfg, n)])(name)
       for name in ("table1", "table3", "table4", "table5", "inpaint_h2h", "inpaint_ablation", "released", "controls",
                    "gcn_conditions", "cca")},
    "components": lambda cfg: [table(cfg, "components", seeds=[cfg.seed])],
}


def target_requests(cfg, name: str) -> list[Request]:
    if name not in TARGETS:
        raise StageError(f"unknown target '{name}' (known: all, a chapter name, {', '.join(TARGETS)})")
    return TARGETS[name](cfg)



def check_data(cfg, cache=None) -> str:
    """What ``python -m trcgl check-data`` prints: the label table's parsing report, the class
    set's groups and, per split, the rows the profile uses; with ``data.source: padchest`` the
    images are read (into the cache a run then reuses) and the read / skipped counts shown.
    Every problem on the way is the same :class:`DataError` a chapter would raise, in seconds."""
    from .data.datasets import split_rows
    from .data.padchest import padchest_root

    co = get(cohort(cfg), cache)
    lines = [f"label table: {cfg.paths.padchest_csv or 'the PadChest table shipped in torchxrayvision'}"]
    lines += [f"  {key}: {value}" for key, value in co.table.report.items() if value != ""]
    groups = pd.Series(co.groups).value_counts().reindex(["head", "medium", "tail"]).fillna(0).astype(int)
    lines.append(f"class set {co.class_set.name}: {len(co.class_set)} classes "
                 f"({', '.join(f'{n} {g}' for g, n in groups.items())})")
    for split in ("train", "selection", "test"):
        line = f"{split}: {len(split_rows(cfg, co, split))} rows"
        if cfg.data.source == "padchest":
            rep = json.loads((resolve(image_set(cfg, split), cache).folder / "report.json").read_text())
            line += (f", {rep['read']} images read from {padchest_root(cfg)}, {rep['skipped']} skipped "
                     f"({len(rep.get('missing', []))} missing, {len(rep.get('unreadable', []))} unreadable listed)")
        else:
            line += " (phantom source: rendered by the stages, nothing to read)"
        lines.append(line)
    return "\n".join(lines)


# ----------------------------------------------------------------------------- in-memory inputs

def const_set(image_set) -> Const:
    """An in-memory image set as a stage input, keyed by its content."""
    from .data.datasets import image_set_digest

    return Const(image_set, image_set_digest(image_set))


def train_classifier(cfg, train_set, select_set, groups, extra=None, seed: int | None = None, cache=None):
    """Train (or load from the cache) a classifier on in-memory image sets through the stage graph
    (the ``classifier`` stage with constant inputs: tests and interactive use)."""
    req = Request("classifier", cfg, seed=int(cfg.seed if seed is None else seed),
                  groups=Const(list(groups), digest(list(groups))), train=const_set(train_set),
                  select=const_set(select_set), extra=const_set(extra) if extra is not None else None)
    return get(req, cache)


def const_cohort(cohort) -> Const:
    """An in-memory cohort as a stage input (tests), keyed by its labels, split, groups and rows."""
    return Const(cohort, digest(cohort.class_set.name, cohort.Y, cohort.split, list(cohort.groups),
                                cohort.frame["ImageID"].astype(str).tolist()))


def build_image_set(cfg, cohort, rows: str, cache=None):
    """The image set ``rows`` of an in-memory cohort, through the ``image-set`` stage (tests)."""
    return get(Request("image-set", cfg, rows=rows, cohort=const_cohort(cohort)), cache)


def module_weights_digest(module) -> str:
    """The content digest of a torch module's weights (an in-memory model as an input)."""
    state = module.state_dict()
    return digest(*[k for k in sorted(state)], *[state[k].detach().cpu().float().numpy() for k in sorted(state)])


def train_normal_dit(cfg, normal_set, vae, seed: int | None = None, cache=None):
    """The ``normal-dit`` stage on in-memory normal images and an in-memory VAE (tests)."""
    return get(Request("normal-dit", cfg, seed=int(cfg.seed if seed is None else seed), normals=const_set(normal_set),
                       vae=Const(vae, module_weights_digest(vae))), cache)


@dataclass(frozen=True)
class _ClassSetOnly:
    """Stands for a cohort where a stage needs only its class set (tests on toy classes)."""

    class_set: Any
    groups: tuple = ()


def train_prompt_diffusion(cfg, class_set, train_set, select_set, seed: int | None = None, cache=None):
    """The ``vae`` and ``prompt-diffusion`` stages on in-memory image sets (tests)."""
    seed = int(cfg.seed if seed is None else seed)
    train = const_set(train_set)
    cohort = Const(_ClassSetOnly(class_set, tuple(class_set.paper_groups)),
                   digest(class_set.name, list(class_set.classes), [list(s) for s in class_set.padchest_labels]))
    return get(Request("prompt-diffusion", cfg, seed=seed, train=train, select=const_set(select_set), cohort=cohort,
                       vae=Request("vae", cfg, seed=seed, train=train)), cache)
