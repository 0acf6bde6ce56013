"""Erasing head-class lesions by inpainting (inpainting paper, Eq. 2: I' = DiT(m_I, I, g)).

RePaint (diffusers' ``RePaintScheduler``): the DiT, which knows only normal radiographs, denoises
the masked region of the latent while the known region is re-noised from the original at each
step; jumps back in time (``jump_length``, ``jump_n_sample``) let the two parts agree. The mask is
carried to the latent grid (a latent cell is inpainted when any of its pixels is masked), and the
decoded result replaces the original **only inside the pixel mask**, so every pixel outside it is
the original's. The new image keeps the original's labels minus the erased head classes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from diffusers import RePaintScheduler
from diffusers.utils.torch_utils import randn_tensor
from tqdm import tqdm

from ..data.datasets import ImageSet
from ..data.padchest import DataError
from ..diffusion.training import encode_latents
from .guard import erase_plan, guard_matrix
from .masks import cam_masks, overlap_table
from .normal_dit import NormalDiT, class_labels

INPAINTED = "inpainted"


def latent_mask(masks: np.ndarray, h: int, w: int) -> torch.Tensor:
    """(N, 1, h, w) float: 1 where a latent cell covers any masked pixel (max-pooling)."""
    m = torch.from_numpy(np.asarray(masks, dtype=np.float32))[:, None]
    return torch.nn.functional.adaptive_max_pool2d(m, (h, w))


def compose(original: np.ndarray, generated: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Generated pixels inside the masks, original pixels everywhere else."""
    return np.where(masks, generated, original).astype(original.dtype)


def _generators(seed: int, index) -> list[torch.Generator]:
    """One generator per image, from (seed, image index): a batch's size does not change results."""
    return [torch.Generator().manual_seed(int(seed) * 1_000_003 + int(i)) for i in index]


@torch.no_grad()
def repaint(dit: NormalDiT, images: np.ndarray, masks: np.ndarray, steps: int, jump_length: int, jump_n_sample: int,
            eta: float, seed: int, batch_size: int = 64, progress: bool = True) -> np.ndarray:
    """Inpaint ``masks`` (N, H, W bool) of ``images`` (uint8) with the normal DiT; uint8 out."""
    if len(images) == 0:
        return images.copy()
    pipe = dit.pipeline
    vae, transformer = pipe.vae, pipe.transformer
    device = transformer.device
    scheduler = RePaintScheduler.from_config(pipe.scheduler.config, eta=eta, clip_sample=False)
    z0, _ = encode_latents(vae, images, device)
    known = 1.0 - latent_mask(masks, *z0.shape[-2:])
    out = []
    for lo in tqdm(range(0, len(images), batch_size), desc="RePaint inpainting", unit="batch", disable=not progress):
        hi = min(lo + batch_size, len(images))
        gens = _generators(seed, range(lo, hi))
        z_known, m = z0[lo:hi].to(device), known[lo:hi].to(device)
        scheduler.set_timesteps(steps, jump_length, jump_n_sample, device=device)
        x = randn_tensor(z_known.shape, generator=gens, device=device)
        labels = class_labels(hi - lo, device)
        t_last = scheduler.timesteps[0] + 1
        for t in scheduler.timesteps:
            if t < t_last:   # a denoising step
                eps = transformer(x, timestep=t.expand(hi - lo), class_labels=labels).sample
                x = scheduler.step(eps, t, x, z_known, m, generator=gens).prev_sample
            else:            # a jump back in time (re-noise one step)
                x = scheduler.undo_step(x, t_last, generator=gens)
            t_last = t
        decoded = vae.decode(x / vae.config.scaling_factor).sample.float().cpu()[:, 0]
        out.append(np.round(((decoded.clamp(-1, 1) + 1) * 127.5).numpy()).astype(np.uint8))
    generated = np.concatenate(out) if out else images.copy()
    return compose(images, generated, masks)


@dataclass
class InpaintResult:
    """What the inpainting method adds to the training set, and how it got there."""

    images: ImageSet            # the inpainted images (labels minus erased classes, progressive = True)
    plan: pd.DataFrame          # per candidate image: index, head, erase, guard_kept, kept_findings, inpainted
    masks: np.ndarray           # (n, H, W) the union inpainting mask of each inpainted image
    originals: np.ndarray       # indices into the training set of the inpainted images
    cams: pd.DataFrame          # one row per (image, erased class): CAM mask vs true mask (phantoms)
    damage: pd.DataFrame        # one row per (inpainted image, kept finding): share of its true lesion masked
    report: dict


def remove_labels(Y: np.ndarray, erase) -> np.ndarray:
    """Labels after inpainting: each row's erased classes set to 0, the others unchanged."""
    out = np.array(Y, copy=True)
    for i, classes in enumerate(erase):
        out[i, list(classes)] = 0
    return out


def kept_lesion_damage(masks: np.ndarray, todo: pd.DataFrame, train_set: ImageSet) -> pd.DataFrame:
    """Per (inpainted image, kept finding): the share of that finding's true lesion pixels that
    lie inside the inpainting mask, i.e. would be painted over (phantoms only)."""
    rows = []
    for m, i, kept in zip(masks, todo["index"], todo["kept_findings"]):
        true = train_set.masks(int(i))
        for k in kept:
            area = true[k].sum()
            if area:
                rows.append({"index": int(i), "class": train_set.classes[k], "erased share": float((m & true[k]).sum() / area)})
    return pd.DataFrame(rows, columns=["index", "class", "erased share"])


def inpaint_training_set(cfg, cohort, train_set: ImageSet, dit: NormalDiT, cam_run, seed: int,
                         progress: bool = True) -> InpaintResult:
    """The inpainting augmentation of ``train_set``: plan (keep groups, guard), Grad-CAM masks from
    ``cam_run`` (a TrainResult), RePaint with the normal DiT, labels minus erased classes (the
    ``inpainted-set`` stage caches it)."""
    p = cfg.inpaint
    classes = list(train_set.classes)
    E = guard_matrix(cfg, cohort, train_set)
    plan = erase_plan(train_set.Y, classes, cohort.groups, E, p.guard_threshold, tuple(p.keep_groups))
    plan["inpainted"] = plan["erase"].map(len) > 0
    todo = plan[plan["inpainted"]].reset_index(drop=True)
    pairs = [(r, int(i), int(c)) for r, (i, cs) in enumerate(zip(todo["index"], todo["erase"])) for c in cs]
    pair_img = np.array([i for _, i, _ in pairs], dtype=np.int64)
    pair_cls = np.array([c for _, _, c in pairs], dtype=np.int64)
    device = next(cam_run.model.parameters()).device
    _, pair_masks = cam_masks(cam_run.model, train_set.images[pair_img], pair_cls, cam_run.mean, cam_run.std, device,
                              p.cam_threshold, p.mask_dilation)
    H = train_set.size
    masks = np.zeros((len(todo), H, H), dtype=bool)
    for (r, _, _), m in zip(pairs, pair_masks):
        masks[r] |= m
    cams, damage = pd.DataFrame(), pd.DataFrame()
    if train_set.masks_packed is not None:   # phantoms: score the masks against the true lesions
        true = np.stack([train_set.masks(i)[c] for i, c in zip(pair_img, pair_cls)]) if pairs else masks[:0]
        cams = overlap_table(pair_masks, true, [classes[c] for c in pair_cls])
        damage = kept_lesion_damage(masks, todo, train_set)
    index = todo["index"].to_numpy(np.int64)
    if len(index) == 0:
        raise DataError("no training image has both an erasable head finding and a finding of inpaint.keep_groups: "
                        "nothing to inpaint (use more training rows or other keep_groups)")
    images = repaint(dit, train_set.images[index], masks, p.steps, p.jump_length, p.jump_n_sample, p.eta, seed,
                     progress=progress)
    Y = remove_labels(train_set.Y[index], todo["erase"])
    rows = train_set.rows.iloc[index].reset_index(drop=True).copy()
    rows["ImageID"] = rows["ImageID"].astype(str) + "~inpainted"
    rows["erased"] = [[classes[c] for c in cs] for cs in todo["erase"]]
    rows["progressive"] = True
    inpainted = ImageSet(images=images, Y=Y, weights=np.full(len(index), p.weight, np.float32), rows=rows,
                         classes=train_set.classes, masks_packed=None, source=INPAINTED)
    report = {"candidates": int(len(plan)), "inpainted": int(len(todo)),
              "guard kept the only head finding": int((~plan["inpainted"]).sum()),
              "head findings": int(plan["head"].map(len).sum()), "erased": int(plan["erase"].map(len).sum()),
              "kept by the guard": int(plan["guard_kept"].map(len).sum()), "guard": cfg.inpaint.guard}
    return InpaintResult(inpainted, plan, masks, index, cams, damage, report)


def save_inpaint_result(result: InpaintResult, folder: Path) -> None:
    """Write an :class:`InpaintResult` (image set, plan, masks, scores, report; no pickles)."""
    from ..cache import atomic_write_json, save_npy
    from ..data.datasets import save_image_set, write_rows

    folder = Path(folder)
    save_image_set(result.images, folder / "images")
    write_rows(result.plan, folder / "plan.json")
    save_npy(folder / "masks.npy", np.packbits(result.masks, axis=-1))
    save_npy(folder / "originals.npy", result.originals)
    result.cams.to_csv(folder / "cams.csv", index=False)
    result.damage.to_csv(folder / "damage.csv", index=False)
    atomic_write_json(folder / "report.json", {**result.report, "size": int(result.masks.shape[-1])})


def load_inpaint_result(folder: Path) -> InpaintResult:
    import json

    from ..cache import load_npy
    from ..data.datasets import load_image_set, read_rows

    folder = Path(folder)
    report = json.loads((folder / "report.json").read_text())
    size = report.pop("size")
    masks = np.unpackbits(load_npy(folder / "masks.npy"), axis=-1, count=size).astype(bool)
    plan = read_rows(folder / "plan.json")

    def csv(name):
        path = folder / name
        return pd.read_csv(path) if path.stat().st_size > 1 else pd.DataFrame()

    return InpaintResult(load_image_set(folder / "images"), plan, masks, load_npy(folder / "originals.npy"),
                         csv("cams.csv"), csv("damage.csv"), report)
