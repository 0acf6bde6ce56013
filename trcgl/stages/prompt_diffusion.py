"""The prompt-diffusion chapter's stages (chapter 2): the VAE and the prompt-latent diffusion model,
images sampled from it, the filtered synthetic tail set, its controls (oversampled real rows, the
ideal generator with and without the tail lesions, shuffled labels) and the oracle that scores
whether samples show their pathology.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..cache import digest, load_npy, save_npy
from ..graph import Const, Request, StageError, stage
from .classifiers import classifier
from .common import _device, folder_input, get
from .data import _load_plain_set, cohort, const_set, image_set, selection_set, train_set

# ----------------------------------------------------------------------------- prompt-latent diffusion

VAE_KEYS = ("n_train", "vae_channels", "latent_channels", "vae_epochs", "vae_lr", "kl_weight", "batch_size", "amp")


def _load_vae(ctx):
    from ..diffusion.training import load_vae

    return load_vae(ctx.work, _device(ctx.cfg))


@stage("vae", reads=tuple(f"diffusion.{k}" for k in VAE_KEYS) + ("deterministic", "device"),
       modules=("trcgl.diffusion.training", "trcgl.diffusion.models", "trcgl.data.batches"), load=_load_vae,
       together=True)
def _vae(ctx):
    """The autoencoder of the latent diffusion (trained on the train split's images)."""
    from ..diffusion.training import diffusion_rows, fit_vae

    train, seed = ctx.inputs["train"], ctx.params["seed"]
    fit_vae(ctx.cfg, train.images[diffusion_rows(ctx.cfg, train, seed)], seed, _device(ctx.cfg), ctx.work)


def _diffusion_reads(params) -> tuple[str, ...]:
    from ..diffusion.training import TRAINING_KEYS

    return tuple(f"diffusion.{k}" for k in TRAINING_KEYS) + ("deterministic", "device", "paths.text_encoder")


def _diffusion_inputs(cfg, params):
    if cfg.paths.diffusion_pipeline:   # a saved pipeline replaces training
        return {"pipeline": folder_input(cfg.paths.diffusion_pipeline, "paths.diffusion_pipeline")}
    inputs = {"vae": Request("vae", cfg, seed=params["seed"], train=train_set(cfg))}
    if cfg.diffusion.pretrain_pool:     # the pool it learns from first (rows disjoint from every split)
        inputs["pool"] = image_set(cfg, "pool")
    if cfg.diffusion.text_encoder == "clip" and cfg.paths.text_encoder:
        inputs["text_encoder"] = folder_input(cfg.paths.text_encoder, "paths.text_encoder")
    return inputs


def _load_diffusion(ctx):
    from ..diffusion.training import load_diffusion

    return load_diffusion(ctx.work, _device(ctx.cfg))


@stage("prompt-diffusion", reads=_diffusion_reads,
       modules=("trcgl.diffusion.training", "trcgl.diffusion.models", "trcgl.diffusion.text",
                "trcgl.diffusion.pipeline", "trcgl.data.prompts", "trcgl.data.batches"),
       inputs=_diffusion_inputs, load=_load_diffusion, together=True)
def _prompt_diffusion(ctx):
    """The UNet and context vectors (Eq. 1-3), or a saved pipeline folder copied in."""
    if "pipeline" in ctx.inputs:
        from ..diffusion.pipeline import load_pipeline

        from ..runtime import processes

        load_pipeline(ctx.inputs["pipeline"])     # one clear error for an incomplete folder
        if processes().is_main:                   # several processes: one copies
            shutil.copytree(ctx.inputs["pipeline"], ctx.work / "pipeline", dirs_exist_ok=True)
        return
    from ..diffusion.training import fit_prompt_diffusion

    cohort = ctx.inputs["cohort"]
    fit_prompt_diffusion(ctx.cfg, cohort.class_set, ctx.inputs["train"], ctx.inputs["select"],
                         ctx.inputs["vae"], ctx.params["seed"], _device(ctx.cfg), ctx.work, groups=list(cohort.groups),
                         pool=ctx.inputs.get("pool"))


SAMPLE_READS = ("diffusion.target_groups", "diffusion.n_per_class", "diffusion.budget_multiple", "diffusion.n_sweep_per_class",
                "diffusion.sampling_steps", "diffusion.clip_latents", "device")


@dataclass
class Samples:
    plan: pd.DataFrame      # per image: target, target_id, findings, prompt (empty for unconditional)
    images: np.ndarray      # uint8 (N, H, W)


def _load_samples(ctx):
    from ..data.datasets import read_rows

    return Samples(read_rows(ctx.work / "plan.json"), load_npy(ctx.work / "images.npy"))


@stage("samples", reads=SAMPLE_READS, modules=("trcgl.diffusion.generate", "trcgl.diffusion.pipeline",
                                                "trcgl.data.prompts"), load=_load_samples)
def _samples(ctx):
    """Images sampled with DDIM + classifier-free guidance (Eq. 4-6) for a plan of prompts:
    ``synthetic`` (the budget's label sets per target class: :func:`~trcgl.diffusion.generate.synthetic_plan`),
    ``sweep`` (the first n_sweep_per_class of those) or ``unconditional``."""
    from ..data.datasets import write_rows
    from ..diffusion.generate import plan_labels, sample, synthetic_plan, target_classes

    d, kind, seed = ctx.cfg.diffusion, ctx.params["kind"], ctx.params["seed"]
    cohort, train = ctx.inputs["cohort"], ctx.inputs["train"]
    targets = target_classes(ctx.cfg, cohort.groups)
    if kind == "unconditional":
        n = max(d.n_sweep_per_class * len(targets), 8)
        plan = pd.DataFrame({"prompt": [""] * n, "target_id": [0] * n})
    else:
        plan = synthetic_plan(ctx.cfg, train, cohort.class_set, targets, seed)
        if kind == "sweep":
            plan = plan.groupby("target_id", sort=False).head(d.n_sweep_per_class).reset_index(drop=True)
        elif kind != "synthetic":
            raise StageError(f"samples: unknown kind {kind!r} (synthetic, sweep, unconditional)")
    labels = None if kind == "unconditional" else plan_labels(plan, cohort.class_set)
    images = sample(ctx.inputs["diffusion"], plan["prompt"], plan["target_id"], ctx.params["omega"], d.sampling_steps,
                    ctx.params["sample_seed"], unconditional=kind == "unconditional", clip_latents=d.clip_latents,
                    labels=labels)
    write_rows(plan, ctx.work / "plan.json")
    save_npy(ctx.work / "images.npy", images)


def _load_synthetic(ctx):
    from ..data.datasets import load_image_set, read_rows
    from ..diffusion.generate import SyntheticResult

    report = pd.read_csv(ctx.work / "report.csv", index_col=0)
    kept = load_image_set(ctx.work / "kept")
    return SyntheticResult(kept, read_rows(ctx.work / "plan.json"), ctx.inputs["samples"].images, report,
                           load_npy(ctx.work / "thresholds.npy"))


@stage("synthetic-set", reads=("diffusion.filter_negative_quantile", "diffusion.synthetic_weight", "device"),
       modules=("trcgl.diffusion.generate", "trcgl.train"), load=_load_synthetic)
def _synthetic_set(ctx):
    """The filtered synthetic tail set: kept images with loss weight w (filter calibrated on selection)."""
    from ..data.datasets import save_image_set, write_rows
    from ..diffusion.generate import filter_synthetic

    s = ctx.inputs["samples"]
    res = filter_synthetic(ctx.cfg, ctx.inputs["cohort"].class_set, s.plan, s.images, ctx.inputs["filter"],
                           ctx.inputs["select"], _device(ctx.cfg))
    if len(res.kept):
        save_image_set(res.kept, ctx.work / "kept")
    else:   # nothing kept: an explicit empty set, so the rows that use it say so
        from ..data.padchest import DataError

        raise DataError("the filter kept no synthetic image: lower diffusion.filter_negative_quantile or generate more")
    write_rows(res.plan, ctx.work / "plan.json")
    res.report.to_csv(ctx.work / "report.csv")
    save_npy(ctx.work / "thresholds.npy", res.thresholds)


# ----------------------------------------------------------------------------- controls of the synthetic claim

CONTROL_KINDS = ("oversampled", "unfiltered", "ideal-kept", "shuffled", "retrieved")
_NEEDS_RENDERER = ("phantom", "data.image_size", "data.source")


def _control_reads(params) -> tuple[str, ...]:
    if params.get("kind") not in CONTROL_KINDS:
        raise StageError(f"control-set: unknown kind {params.get('kind')!r} (known: {', '.join(CONTROL_KINDS)})")
    if params["kind"] == "retrieved":
        return ("diffusion.synthetic_weight", "diffusion.pretrain_pool")
    return _NEEDS_RENDERER if params["kind"] == "ideal-kept" else ("diffusion.synthetic_weight",)


def _renderer(ctx):
    from ..data.datasets import phantom_renderer

    if ctx.cfg.data.source != "phantom":
        raise StageError("the ideal generator renders phantoms: it needs data.source = phantom")
    return phantom_renderer(ctx.cfg, ctx.inputs["cohort"])


@stage("control-set", reads=_control_reads, modules=("trcgl.controls", "trcgl.data.datasets", "trcgl.data.phantom",
                                                      "trcgl.diffusion.generate", "trcgl.diffusion.training"),
       load=_load_plain_set)
def _control_set(ctx):
    """An arm of the synthetic claim beside the filtered set, at the synthetic budget: every image
    the generator was asked for, unfiltered; real tail rows oversampled to the budget's counts;
    the generated images with their labels shuffled across targets; the label sets the filter
    kept rendered by the phantom renderer (the ideal generator at the filter's count); or the
    images of the pool the generator pretrained on, added directly (``retrieved``)."""
    from .. import controls
    from ..data.datasets import save_image_set
    from ..diffusion.generate import as_image_set

    kind, seed, res = ctx.params["kind"], ctx.params["seed"], ctx.inputs["synthetic"]
    if kind == "ideal-kept":
        out = controls.ideal_renders(_renderer(ctx), res.kept, ctx.inputs["train"], ctx.cfg.data.image_size,
                                     f"kept{seed}")
    else:
        unfiltered = as_image_set(res.images, res.plan.drop(columns=["p_filter", "kept"], errors="ignore"),
                                  ctx.inputs["cohort"].class_set, ctx.cfg.diffusion.synthetic_weight)
        out = {"unfiltered": lambda: unfiltered,
               "oversampled": lambda: controls.oversampled(ctx.inputs["train"], unfiltered, seed),
               "shuffled": lambda: controls.shuffled_labels(unfiltered, seed),
               "retrieved": lambda: controls.retrieved(_generator_pool(ctx), unfiltered, seed)}[kind]()
    save_image_set(out, ctx.work)


def _generator_pool(ctx):
    """The pool rows the generator pretrained on (``diffusion.pretrain_pool`` of them, rarest first)."""
    from ..data.datasets import take
    from ..diffusion.training import diffusion_rows

    n = ctx.cfg.diffusion.pretrain_pool
    if not n:
        raise StageError("the retrieval control needs a generator pretrained on the pool (diffusion.pretrain_pool > 0)")
    pool = ctx.inputs["pool"]
    return take(pool, diffusion_rows(ctx.cfg, pool, ctx.params["seed"], n=n))


@stage("ideal-set", reads=("diffusion.target_groups", "diffusion.n_per_class", "diffusion.budget_multiple",
                           "diffusion.synthetic_weight") + _NEEDS_RENDERER,
       modules=("trcgl.controls", "trcgl.data.datasets", "trcgl.data.phantom", "trcgl.diffusion.generate",
                "trcgl.data.prompts"),
       load=_load_plain_set)
def _ideal_set(ctx):
    """The ideal generator (the positive control): the label sets of the synthetic budget times
    ``scale`` (at scale 1 the very rows asked of the generator) rendered by the phantom renderer on
    fresh anatomy, at the synthetic loss weight. Needs no generator. With ``lesions`` false, the
    null control: the same images without the target classes' lesions, labels unchanged."""
    from .. import controls
    from ..data.datasets import save_image_set
    from ..diffusion.generate import as_image_set, synthetic_plan, target_classes

    cfg, train, cohort = ctx.cfg, ctx.inputs["train"], ctx.inputs["cohort"]
    targets = target_classes(cfg, cohort.groups)
    plan = synthetic_plan(cfg, train, cohort.class_set, targets, ctx.params["seed"], ctx.params["scale"])
    size = cfg.data.image_size
    labelled = as_image_set(np.zeros((len(plan), size, size), np.uint8), plan, cohort.class_set,
                            cfg.diffusion.synthetic_weight)
    tag = ctx.params["seed"] if ctx.params["scale"] == 1 else f"{ctx.params['seed']}x{ctx.params['scale']:g}"
    hidden = () if ctx.params["lesions"] else [cohort.class_set.classes[c] for c in targets]
    save_image_set(controls.ideal_renders(_renderer(ctx), labelled, train, size, tag, hidden), ctx.work)


@stage("unlabelled-set", reads=("diffusion.target_groups",), modules=("trcgl.controls", "trcgl.data.datasets",
                                                                     "trcgl.diffusion.generate"),
       load=_load_plain_set)
def _unlabelled_set(ctx):
    """The bare control: the null control's lesion-free images with the target classes' labels
    removed too (:func:`trcgl.controls.without_labels`), so the images show and claim nothing of
    the tail."""
    from .. import controls
    from ..data.datasets import save_image_set
    from ..diffusion.generate import target_classes

    cohort = ctx.inputs["cohort"]
    names = [cohort.class_set.classes[c] for c in target_classes(ctx.cfg, cohort.groups)]
    save_image_set(controls.without_labels(ctx.inputs["source"], names), ctx.work)


# ----------------------------------------------------------------------------- requests

def diffusion(cfg, seed: int | None = None) -> Request:
    """The prompt-latent diffusion model (chapter 2)."""
    seed = int(cfg.seed if seed is None else seed)
    return Request("prompt-diffusion", cfg, seed=seed, train=train_set(cfg), select=selection_set(cfg),
                   cohort=cohort(cfg))


def filter_classifier(cfg) -> Request:
    """The synthetic set's filter: the GAP-only classifier trained on the real train split."""
    from ..tables import gap_only

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
    """An arm of the synthetic claim (chapters 2 and 5): ``unfiltered``, ``oversampled``,
    ``shuffled``, ``ideal-kept`` or ``retrieved`` (:data:`CONTROL_KINDS`)."""
    pool = {"pool": image_set(cfg, "pool")} if kind == "retrieved" else {}
    return Request("control-set", cfg, kind=kind, seed=int(cfg.seed), synthetic=synthetic_set(cfg),
                   train=train_set(cfg), cohort=cohort(cfg), **pool)


def ideal_set(cfg, scale: float = 1.0, lesions: bool = True) -> Request:
    """The ideal generator at ``scale`` times the synthetic budget (chapter 5's controls and dose
    curve); without ``lesions``, the null control (the same images, the target lesions not drawn)."""
    return Request("ideal-set", cfg, scale=float(scale), lesions=bool(lesions), seed=int(cfg.seed),
                   train=train_set(cfg), cohort=cohort(cfg))


def unlabelled_set(cfg) -> Request:
    """The bare control (chapter 5): the null control's images with the tail labels removed too."""
    return Request("unlabelled-set", cfg, source=ideal_set(cfg, 1.0, lesions=False), cohort=cohort(cfg))


def oracle(cfg) -> Request:
    """The oracle (chapter 2): GAP-only on fresh balanced renders."""
    from ..diffusion.oracle import oracle_config

    return classifier(oracle_config(cfg), train=image_set(cfg, "oracle"))


def vae(cfg) -> Request:
    return Request("vae", cfg, seed=int(cfg.seed), train=train_set(cfg))


# ----------------------------------------------------------------------------- in-memory inputs

@dataclass(frozen=True)
class _ClassSetOnly:
    """Stands for a cohort where a stage needs only its class set (tests on toy classes)."""

    class_set: Any
    groups: tuple = ()


def train_prompt_diffusion(cfg, class_set, train_set, select_set, seed: int | None = None, cache=None, pool=None):
    """The ``vae`` and ``prompt-diffusion`` stages on in-memory image sets (tests); ``pool``: the
    rows a model with ``diffusion.pretrain_pool`` learns from first."""
    seed = int(cfg.seed if seed is None else seed)
    train = const_set(train_set)
    cohort = Const(_ClassSetOnly(class_set, tuple(class_set.paper_groups)),
                   digest(class_set.name, list(class_set.classes), [list(s) for s in class_set.padchest_labels]))
    extra = {"pool": const_set(pool)} if pool is not None else {}
    return get(Request("prompt-diffusion", cfg, seed=seed, train=train, select=const_set(select_set), cohort=cohort,
                       vae=Request("vae", cfg, seed=seed, train=train), **extra), cache)
