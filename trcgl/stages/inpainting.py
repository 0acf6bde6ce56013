"""The inpainting chapter's stages (chapter 7, the second paper): a DiT trained on normal
radiographs only, the training images with head lesions erased inside Grad-CAM masks (RePaint),
and the control that adds the very same images again without inpainting.
"""
from __future__ import annotations

from ..graph import Const, Request, stage
from .classifiers import classifier
from .common import _device, get, module_weights_digest
from .data import _load_plain_set, cohort, const_set, image_set, train_set
from .prompt_diffusion import vae

# ----------------------------------------------------------------------------- the normal DiT and the inpainted set

DIT_READS = tuple(f"inpaint.{k}" for k in ("n_normal", "dit_layers", "dit_heads", "dit_head_dim", "dit_patch", "epochs",
                                            "lr", "batch_size", "ema_decay")) + \
    ("diffusion.train_timesteps", "diffusion.beta_schedule", "diffusion.amp", "deterministic", "device")


def _load_dit(ctx):
    from ..inpaint.normal_dit import load_normal_dit

    return load_normal_dit(ctx.work, _device(ctx.cfg))


@stage("normal-dit", reads=DIT_READS,
       modules=("trcgl.inpaint.normal_dit", "trcgl.diffusion.training", "trcgl.data.batches"),
       load=_load_dit, together=True)
def _normal_dit(ctx):
    """A DiT trained on normal radiographs only, in the diffusion VAE's latent space."""
    from ..inpaint.normal_dit import fit_normal_dit

    fit_normal_dit(ctx.cfg, ctx.inputs["normals"].images, ctx.inputs["vae"], ctx.params["seed"], _device(ctx.cfg),
                   ctx.work)


INPAINT_READS = tuple(f"inpaint.{k}" for k in ("cam_threshold", "mask_dilation", "keep_groups", "guard",
                                                "guard_threshold", "steps", "jump_length", "jump_n_sample", "eta",
                                                "weight")) + ("device",)


def _load_inpainted(ctx):
    from ..inpaint.repaint import load_inpaint_result

    return load_inpaint_result(ctx.work)


@stage("inpainted-set", reads=INPAINT_READS,
       modules=("trcgl.inpaint.repaint", "trcgl.inpaint.guard", "trcgl.inpaint.masks", "trcgl.localization"),
       load=_load_inpainted)
def _inpainted_set(ctx):
    """Head lesions erased by RePaint with the normal DiT inside Grad-CAM masks; labels minus erased."""
    from ..inpaint.repaint import inpaint_training_set, save_inpaint_result

    res = inpaint_training_set(ctx.cfg, ctx.inputs["cohort"], ctx.inputs["train"], ctx.inputs["dit"],
                               ctx.inputs["cam"], ctx.params["seed"])
    save_inpaint_result(res, ctx.work)


# ----------------------------------------------------------------------------- the control: the same images, not inpainted

@stage("copies-set", reads=(), modules=("trcgl.inpaint.experiment", "trcgl.data.datasets"), load=_load_plain_set)
def _copies_set(ctx):
    """The inpainting control: the very images that were inpainted, unchanged, all labels kept."""
    from ..data.datasets import save_image_set
    from ..inpaint.experiment import originals_control

    save_image_set(originals_control(ctx.inputs["train"], ctx.inputs["inpainted"]), ctx.work)


# ----------------------------------------------------------------------------- requests

def normal_dit(cfg) -> Request:
    """The normal-image DiT (chapter 7)."""
    return Request("normal-dit", cfg, seed=int(cfg.seed), normals=image_set(cfg, "normal"), vae=vae(cfg))


def cam_classifier(cfg) -> Request:
    """The classifier whose Grad-CAM gives the inpainting masks: GAP-only on the tables' train set."""
    from ..tables import gap_only, tables_config

    return classifier(gap_only(tables_config(cfg)))


def inpainted_set(cfg, guard: str | None = None) -> Request:
    """The inpainted training images (chapter 7), on the tables' train set."""
    from ..tables import tables_config

    icfg = cfg.replace({"inpaint.guard": guard}) if guard is not None else cfg
    return Request("inpainted-set", icfg, seed=int(cfg.seed), dit=normal_dit(cfg), train=train_set(tables_config(cfg)),
                   cam=cam_classifier(cfg), cohort=cohort(cfg))


# ----------------------------------------------------------------------------- in-memory inputs

def train_normal_dit(cfg, normal_set, vae, seed: int | None = None, cache=None):
    """The ``normal-dit`` stage on in-memory normal images and an in-memory VAE (tests)."""
    return get(Request("normal-dit", cfg, seed=int(cfg.seed if seed is None else seed), normals=const_set(normal_set),
                       vae=Const(vae, module_weights_digest(vae))), cache)
