"""Image augmentations of the training images (chapter 6's released reading; the text gives none).

:data:`AUGMENTATIONS` names each pipeline (``train.augment``); :func:`augment_images` draws one
epoch's augmented copy of the stored uint8 images (albumentations, one image at a time, seeded by
(seed, epoch) so that a resumed run draws the same images). Augmentations act only where the
trainer sees pixels: fine-tuning on images, never heads on cached features.

``released``: the transforms the authors' training script applies, by name (horizontal flip,
shift-scale-rotate, CLAHE, brightness/contrast, Gaussian noise, coarse dropout); their limits and
probabilities are the library's (albumentations 1.x defaults written in 2.x's parameters, the hole
and noise sizes as fractions of the image, so they scale with the image size).
"""
from __future__ import annotations

from typing import Callable

import numpy as np


def _released():
    import albumentations as A

    return [A.HorizontalFlip(p=0.5),
            A.Affine(translate_percent=(-0.0625, 0.0625), scale=(0.9, 1.1), rotate=(-45, 45), border_mode=0, fill=0,
                     p=0.5),                                    # ShiftScaleRotate's defaults (ShiftScaleRotate is deprecated)
            A.CLAHE(clip_limit=4.0, tile_grid_size=(8, 8), p=0.5),
            A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5),
            A.GaussNoise(std_range=(0.0124, 0.0277), p=0.5),   # variance 10-50 on the 0-255 scale
            A.CoarseDropout(num_holes_range=(8, 8), hole_height_range=(8 / 224, 8 / 224),
                            hole_width_range=(8 / 224, 8 / 224), fill=0, p=0.5)]   # 8 holes of 8 px at 224 px


#: ``train.augment`` -> the list of albumentations transforms (``none``: no augmentation).
AUGMENTATIONS: dict[str, Callable | None] = {"none": None, "released": _released}


def check_augment(name: str) -> None:
    if name not in AUGMENTATIONS:
        from ..config import ConfigError

        raise ConfigError(f"train.augment must be one of {', '.join(AUGMENTATIONS)}, got {name!r}")


def augment_images(name: str, images: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """One epoch's augmented copy of uint8 images (N, H, W) under pipeline ``name``; the same
    (seed, epoch) gives the same images."""
    check_augment(name)
    make = AUGMENTATIONS[name]
    if make is None:
        return images
    import albumentations as A

    state = int(np.random.SeedSequence([int(seed), int(epoch), 8117]).generate_state(1)[0])
    pipeline = A.Compose(make(), seed=state)
    out = np.empty_like(images)
    for i, img in enumerate(images):
        out[i] = pipeline(image=img)["image"].reshape(img.shape)
    return out
