"""Inpainting masks from Grad-CAM (inpainting paper, Eq. 1): m_I = GradCAM(C, I, c) for each head
class c of image I, thresholded and dilated; the image's mask is the union over the head classes
it erases. On phantoms the masks can be scored against the renderer's true lesion masks."""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage


def threshold_map(cam: np.ndarray, threshold: float, dilation: int = 0) -> np.ndarray:
    """Bool mask where a CAM (H, W) reaches ``threshold`` × its maximum, dilated by ``dilation``
    pixels (a 3×3 cross per pixel). An all-zero CAM gives an empty mask."""
    if not 0 < threshold <= 1:
        raise ValueError(f"the CAM threshold is a fraction of the maximum in (0, 1], got {threshold}")
    top = cam.max()
    if top <= 0:
        return np.zeros(cam.shape, dtype=bool)
    mask = cam >= threshold * top
    return ndimage.binary_dilation(mask, iterations=dilation) if dilation > 0 else mask


def cam_masks(model, images: np.ndarray, class_ids, mean: float, std: float, device, threshold: float,
              dilation: int, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM (grad-cam library) of ``class_ids[n]`` on ``images[n]`` and its thresholded mask."""
    from ..localization import grad_cam_maps

    class_ids = np.asarray(class_ids)
    maps = [grad_cam_maps(model, images[i:i + batch_size], class_ids[i:i + batch_size], mean, std, device)
            for i in range(0, len(images), batch_size)]
    maps = np.concatenate(maps) if maps else np.zeros((0,) + images.shape[1:], np.float32)
    return maps, np.stack([threshold_map(m, threshold, dilation) for m in maps]) if len(maps) else maps.astype(bool)


def mask_overlap(pred: np.ndarray, true: np.ndarray) -> dict:
    """IoU, precision (share of the mask on the lesion), recall (share of the lesion masked), and
    what a mask placed at random would score: precision = the lesion's share of the image,
    recall = the mask's share of the image."""
    pred, true = pred.astype(bool), true.astype(bool)
    inter, union = (pred & true).sum(), (pred | true).sum()
    return {"IoU": inter / union if union else np.nan,
            "precision": inter / pred.sum() if pred.sum() else np.nan,
            "recall": inter / true.sum() if true.sum() else np.nan,
            "mask area": float(pred.mean()), "lesion area": float(true.mean())}


def overlap_table(pred_masks: np.ndarray, true_masks: np.ndarray, names) -> pd.DataFrame:
    """One row per (mask, true lesion mask) pair, with the class name."""
    return pd.DataFrame([{"class": n, **mask_overlap(p, t)} for p, t, n in zip(pred_masks, true_masks, names)])
