"""Image sets for training and validation, cached per configuration, and torch datasets.

An :class:`ImageSet` holds the pixels (uint8), the multi-hot labels, the lesion masks (phantom
source only), a per-sample loss weight (1 for real images; synthetic images added later carry
their own) and the label rows they came from. :func:`build_image_set` renders (phantom) or reads
(PadChest) the rows a profile selects and caches the result; rendering is chunked, so an
interrupted build resumes at the last finished chunk.
"""
from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset
from tqdm import tqdm

from ..cache import ArtifactCache, atomic_write_bytes
from .padchest import Cohort, DataError, padchest_root, select_rows
from .phantom import PhantomRenderer, downsample

log = logging.getLogger(__name__)

CHUNK = 256
META_COLUMNS = ["ImageID", "ImageDir", "PatientID", "Projection"]


@dataclass
class ImageSet:
    images: np.ndarray          # (N, H, W) uint8
    Y: np.ndarray               # (N, C) uint8
    weights: np.ndarray         # (N,) float32 per-sample loss weight
    rows: pd.DataFrame          # ImageID, ImageDir, PatientID, Projection, labels, sentences
    classes: tuple[str, ...]
    masks_packed: np.ndarray | None = None  # (N, C, H*W/8) packbits of the lesion masks
    source: str = "phantom"

    def __len__(self) -> int:
        return len(self.images)

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])

    def masks(self, index) -> np.ndarray:
        """Lesion masks (C, H, W) bool of one image (phantom source only)."""
        if self.masks_packed is None:
            raise DataError(f"the {self.source} source has no lesion masks")
        bits = np.unpackbits(self.masks_packed[index], axis=-1, count=self.size * self.size)
        return bits.reshape(len(self.classes), self.size, self.size).astype(bool)

    def positives(self) -> np.ndarray:
        return self.Y.sum(0)


def take(image_set: ImageSet, index) -> ImageSet:
    """The rows ``index`` of an image set (pixels, labels, weights, rows and masks)."""
    import dataclasses

    index = np.asarray(index, dtype=np.int64)
    masks = image_set.masks_packed[index] if image_set.masks_packed is not None else None
    return dataclasses.replace(image_set, images=image_set.images[index], Y=image_set.Y[index],
                               weights=image_set.weights[index], rows=image_set.rows.iloc[index].reset_index(drop=True),
                               masks_packed=masks)


def concat_sets(*sets: ImageSet) -> ImageSet:
    """One image set from several with the same classes and size (masks kept only if all have them)."""
    import dataclasses

    first = sets[0]
    for s in sets[1:]:
        if s.classes != first.classes or s.size != first.size:
            raise DataError("concat_sets: the image sets differ in classes or image size")
    masks = (np.concatenate([s.masks_packed for s in sets]) if all(s.masks_packed is not None for s in sets) else None)
    return dataclasses.replace(first, images=np.concatenate([s.images for s in sets]), Y=np.concatenate([s.Y for s in sets]),
                               weights=np.concatenate([s.weights for s in sets]),
                               rows=pd.concat([s.rows for s in sets], ignore_index=True), masks_packed=masks,
                               source="+".join(dict.fromkeys(s.source for s in sets)))


def phantom_renderer(cfg, cohort: Cohort) -> PhantomRenderer:
    """The renderer a configuration describes, with rarity and localization statistics from the cohort."""
    p = cfg.phantom
    labels_by_class = dict(zip(cohort.class_set.classes, cohort.class_set.padchest_labels))
    return PhantomRenderer(
        cohort.class_set.classes, size=p.render_size, difficulty=p.difficulty,
        tail_subtlety=p.tail_subtlety, label_noise=p.label_noise, rarity=cohort.rarity(),
        class_stats=cohort.localization_stats(), labels_by_class=labels_by_class,
        out_size=cfg.data.image_size, hidden_classes=p.hidden_classes,
    )


def image_set_params(cfg, cohort: Cohort, split: str, index: np.ndarray) -> dict:
    """Everything the pixels of one split depend on (the cache key)."""
    d = cfg.data
    ids = cohort.frame["ImageID"].to_numpy()[index]
    params = {
        "stage": "image-set-v1", "split": split, "source": d.source, "class_set": cohort.class_set.name,
        "image_size": d.image_size, "rows": _digest(ids), "n": int(len(index)),
        "train_counts": cohort.train_counts.tolist(),
    }
    if d.source == "phantom":
        params["phantom"] = cfg.phantom.to_dict()
    else:
        params["padchest_root"] = str(padchest_root(cfg))
        params["on_missing"] = d.on_missing
    return params


def _digest(ids) -> str:
    import hashlib

    return hashlib.sha256("\n".join(map(str, ids)).encode()).hexdigest()[:16]


def split_rows(cfg, cohort: Cohort, split: str) -> np.ndarray:
    """Indices (into the cohort's frame) of the rows one split of this profile uses."""
    d = cfg.data
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    train = split == "train"
    return select_rows(cohort, d.n_train if train else d.n_val, train=train,
                       min_positives=d.min_train_positives if train else d.min_val_positives,
                       seed=d.split_seed, projections=d.projections)


def build_image_set(cfg, cohort: Cohort, split: str, cache: ArtifactCache | None = None,
                    index: np.ndarray | None = None) -> ImageSet:
    """Render or read the images of one split (or of the cohort rows ``index``, named ``split``),
    cached by configuration."""
    cache = cache or ArtifactCache()
    index = split_rows(cfg, cohort, split) if index is None else np.asarray(index, dtype=np.int64)
    params = image_set_params(cfg, cohort, split, index)
    folder = cache.get_or_compute("image-set", params, lambda work: _build(cfg, cohort, index, split, work))
    return load_image_set(folder, cohort.class_set.classes)


def _build(cfg, cohort: Cohort, index: np.ndarray, split: str, work: Path) -> None:
    frame = cohort.frame.iloc[index]
    size = cfg.data.image_size
    if cfg.data.source == "phantom":
        renderer = phantom_renderer(cfg, cohort)
        names = np.asarray(cohort.class_set.classes)
        render_ids = repeat_ids(frame["ImageID"].tolist())
        n_chunks = (len(index) + CHUNK - 1) // CHUNK
        with tqdm(total=len(index), desc=f"rendering {split} phantoms", unit="img") as bar:
            for k in range(n_chunks):
                path = work / f"chunk{k:04d}.npz"
                lo, hi = k * CHUNK, min((k + 1) * CHUNK, len(index))
                if path.exists():  # finished before an interruption
                    bar.update(hi - lo)
                    continue
                imgs, masks = [], []
                for j in range(lo, hi):
                    row = frame.iloc[j]
                    present = names[cohort.Y[index[j]] == 1]
                    img, m = renderer.render(render_ids[j], present, row["sentences"], row["labels"])
                    img, m = downsample(img, m, size)
                    imgs.append(np.round(img * 255).astype(np.uint8))
                    masks.append(np.packbits(m.reshape(len(names), -1), axis=-1))
                    bar.update(1)
                buffer = io.BytesIO()
                np.savez(buffer, images=np.stack(imgs), masks=np.stack(masks))
                atomic_write_bytes(path, buffer.getvalue())
        chunks = [np.load(work / f"chunk{k:04d}.npz") for k in range(n_chunks)]
        np.save(work / "images.npy", np.concatenate([c["images"] for c in chunks]))
        np.save(work / "masks.npy", np.concatenate([c["masks"] for c in chunks]))
        for k in range(n_chunks):
            (work / f"chunk{k:04d}.npz").unlink()
        kept = np.ones(len(index), dtype=bool)
        report = {"read": int(len(index)), "skipped": 0}
    else:
        from .images import PadChestImages

        root = padchest_root(cfg)
        if root is None:
            raise DataError("data.source is 'padchest' but no image folder is set: set PADCHEST_ROOT or "
                            "paths.padchest_root (the `paper` profile reads real PadChest images)")
        reader = PadChestImages(root, size, on_missing=cfg.data.on_missing)
        rows = list(zip(frame["ImageDir"], frame["ImageID"]))
        imgs, kept, rep = reader.read_many(tqdm(rows, desc=f"reading {split} images", unit="img"))
        np.save(work / "images.npy", np.round(imgs * 255).astype(np.uint8))
        report = {"read": rep.read, "skipped": rep.skipped, "missing": rep.missing[:20], "unreadable": rep.unreadable[:20]}
    keep_index = index[kept]
    np.save(work / "Y.npy", cohort.Y[keep_index])
    rows = cohort.frame.iloc[keep_index][META_COLUMNS + ["labels", "sentences"]].reset_index(drop=True)
    rows.to_pickle(work / "rows.pkl")
    (work / "report.json").write_text(json.dumps(report))


def repeat_ids(ids) -> list[str]:
    """Render ids: a row's k-th repeat (k ≥ 1) renders as ``ID~k``, i.e. the same labels and
    findings on a new patient's anatomy (used to draw more phantoms of rare classes)."""
    seen: dict[str, int] = {}
    out = []
    for i in ids:
        k = seen.get(i, 0)
        seen[i] = k + 1
        out.append(i if k == 0 else f"{i}~{k}")
    return out


def load_image_set(folder: Path, classes) -> ImageSet:
    folder = Path(folder)
    images = np.load(folder / "images.npy")
    masks = np.load(folder / "masks.npy") if (folder / "masks.npy").exists() else None
    return ImageSet(images=images, Y=np.load(folder / "Y.npy"), weights=np.ones(len(images), np.float32),
                    rows=pd.read_pickle(folder / "rows.pkl"), classes=tuple(classes), masks_packed=masks,
                    source="phantom" if masks is not None else "padchest")


# ----------------------------------------------------------------------------- torch side

class XrayDataset(Dataset):
    """(image 1×H×W normalised, label vector C, loss weight) triples from an :class:`ImageSet`."""

    def __init__(self, image_set: ImageSet, mean: float, std: float, hflip: bool = False, seed: int = 0):
        self.set = image_set
        self.mean, self.std = float(mean), float(std)
        self.hflip = hflip
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Augmentation draws depend on (seed, epoch, index) only, so a resumed run repeats them."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.set)

    def __getitem__(self, i: int):
        x = torch.from_numpy(self.set.images[i].astype(np.float32) / 255.0)
        x = ((x - self.mean) / self.std)[None]
        if self.hflip and np.random.default_rng([self.seed, self.epoch, i]).random() < 0.5:
            x = torch.flip(x, dims=[-1])
        y = torch.from_numpy(self.set.Y[i].astype(np.float32))
        return x, y, torch.tensor(float(self.set.weights[i]))


def normalisation(train: ImageSet) -> tuple[float, float]:
    """Mean and standard deviation of the training pixels (in [0, 1])."""
    px = train.images.astype(np.float32) / 255.0
    return float(px.mean()), float(px.std() + 1e-6)


def training_dataset(real: ImageSet, extra: ImageSet | None = None, hflip: bool = False, seed: int = 0,
                     norm: tuple[float, float] | None = None) -> Dataset:
    """The real training set, optionally with an extra source (e.g. weighted synthetic images),
    normalised by the real pixels' mean and std (``norm``, computed when not given)."""
    mean, std = norm or normalisation(real)
    ds: Dataset = XrayDataset(real, mean, std, hflip, seed)
    if extra is not None:
        if extra.classes != real.classes:
            raise DataError("the extra image set has other classes than the training set")
        if extra.size != real.size:
            raise DataError(f"the extra image set is {extra.size}px, the training set {real.size}px")
        ds = ConcatDataset([ds, XrayDataset(extra, mean, std, hflip, seed + 1)])
    return ds


def make_loader(ds: Dataset, batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
    """A single-process loader (``num_workers=0``) whose shuffling is seeded."""
    g = torch.Generator()
    g.manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, num_workers=0, generator=g)


def load_splits(cfg, cache: ArtifactCache | None = None):
    """The cohort and its two image sets for a configuration: ``(cohort, train_set, val_set)``."""
    from .padchest import cohort_from_config

    cache = cache or ArtifactCache()
    cohort = cohort_from_config(cfg, cache=cache)
    return cohort, build_image_set(cfg, cohort, "train", cache), build_image_set(cfg, cohort, "val", cache)
