"""Image sets (pixels, labels, masks, weights, label rows) and torch datasets.

An :class:`ImageSet` holds the pixels (uint8), the multi-hot labels, the lesion masks (phantom
source only), a per-sample loss weight (1 for real images; synthetic images added later carry
their own) and the label rows they came from. :func:`write_image_set` renders (phantom) or reads
(PadChest) cohort rows into a folder; the ``image-set`` stage of :mod:`trcgl.stages` caches it.
Rendering is chunked (by a pool of processes for large sets, :mod:`trcgl.data.render`), so an
interrupted build resumes at the chunks still missing.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset
from tqdm import tqdm

from ..cache import atomic_write_bytes
from ..checkpoints import first_line, set_aside
from .padchest import Cohort, DataError, padchest_root, select_rows
from .phantom import PhantomRenderer

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
        out_size=cfg.data.image_size, hidden_classes=hidden_classes(p.hidden_classes, cohort),
    )


def hidden_classes(names, cohort: Cohort) -> list[str]:
    """``phantom.hidden_classes`` with group names (``head``, ``medium``, ``tail``) expanded to the
    cohort's classes of that group (chapter 4's "tail hidden" condition)."""
    out: list[str] = []
    for name in names:
        if name in ("head", "medium", "tail"):
            out += [c for c, g in zip(cohort.class_set.classes, cohort.groups) if g == name]
        else:
            out.append(name)
    return list(dict.fromkeys(out))


def split_rows(cfg, cohort: Cohort, split: str) -> np.ndarray:
    """Indices (into the cohort's frame) of the rows one split of this profile uses
    (``data.n_<split>`` rows with at least ``data.min_<split>_positives`` per class)."""
    d = cfg.data
    index = select_rows(cohort, d[f"n_{split}"], split, d[f"min_{split}_positives"], d.split_seed, d.projections)
    if split == "test" and d.source == "phantom" and d.test_repeats > 1:
        index = with_repeats(cohort, index, d.min_test_positives, d.test_repeats)
    if not len(index):
        found = sorted(cohort.frame["Projection"].dropna().astype(str).unique())[:10]
        raise DataError(f"the {split} split has no row with Projection in {list(d.projections)} "
                        f"(the label table's projections: {found}); check data.projections and the table")
    return index


def labels_as_rendered(cfg, cohort: Cohort, index: np.ndarray, name: str) -> np.ndarray:
    """The label vectors an image set is rendered from: the rows' own, or with
    ``data.cooccurrence: broken`` every tail class's column permuted across the set's rows (seeded
    by the split seed and the set's name), so a tail label keeps its prevalence but no longer goes
    with the findings it co-occurs with in the data (chapter 4's control of the label graph)."""
    Y = cohort.Y[index].copy()
    if cfg.data.cooccurrence == "broken":
        from ..cache import digest

        rng = np.random.default_rng(int(digest(cfg.data.split_seed, name), 16) % 2**63)
        for c in [c for c, g in enumerate(cohort.groups) if g == "tail"]:
            Y[:, c] = Y[rng.permutation(len(Y)), c]
    return Y


def with_repeats(cohort: Cohort, index: np.ndarray, min_positives: int, max_renders: int) -> np.ndarray:
    """``index`` plus repeats of rare classes' rows until every class has ``min_positives``
    positives, each row rendered at most ``max_renders`` times: a repeat is the same label row on a
    fresh patient anatomy (:func:`repeat_ids`), so a class with few test rows can still be scored.
    Repeats are not independent label rows: intervals resample label rows (``ImageID``), not images."""
    Y = cohort.Y
    out = [int(i) for i in index]
    have = Y[index].sum(0).astype(int)
    for c in np.argsort(have, kind="stable"):
        rows = [int(i) for i in index if Y[i, c]]
        need = min_positives - int(have[c])
        if need <= 0 or not rows:
            continue
        extra = (rows * (max_renders - 1))[:need]
        out += extra
        have += Y[extra].sum(0).astype(int)
    return np.asarray(out, dtype=np.int64)


def image_set_bytes(source: str, rows: int, size: int, n_classes: int) -> dict[str, int]:
    """Roughly the peak memory and disk space of building an image set (:func:`write_image_set`).

    Phantoms: the chunks' images (uint8), then their packed masks, are loaded, concatenated and
    serialised (three copies of the larger of the two in memory); on disk the chunks and the
    assembled arrays coexist until the chunks go. PadChest: every image is read as float32 and
    stacked (two float32 copies), then stored as uint8."""
    pixels = rows * size * size
    if source == "phantom":
        masks = rows * n_classes * -(-size * size // 8)
        return {"memory": 3 * max(pixels, masks), "disk": 2 * (pixels + masks) + rows * n_classes}
    return {"memory": 9 * pixels, "disk": pixels + rows * n_classes}


def available_memory() -> int:
    """The bytes of memory this machine can give a process now (psutil, a dependency of accelerate)."""
    import psutil

    return int(psutil.virtual_memory().available)


def check_memory(name: str, rows: int, size: int, needed: int) -> None:
    """Refuse, as one line, an image set whose arrays would not fit in the memory available now
    (instead of an allocator traceback after minutes of rendering)."""
    from ..cache import human_bytes

    available = available_memory()
    if needed > available:
        raise DataError(f"the image set '{name}' needs about {human_bytes(needed)} of memory to build ({rows} rows "
                        f"of {size}x{size} px), more than the {human_bytes(available)} this machine has available: "
                        "lower data.image_size or the number of rows (data.n_*), or use a machine with more memory")


def write_image_set(cfg, cohort: Cohort, index: np.ndarray, name: str, work: Path,
                    processes: int | None = None) -> None:
    """Render (phantom) or read (PadChest) the cohort rows ``index`` into ``work`` (the
    ``image-set`` stage). Rendering is chunked and, for large sets, spread over ``processes``
    (default ``$TRCGL_RENDER_PROCESSES`` or every CPU; :mod:`trcgl.data.render`): an interrupted
    build resumes at the chunks still missing, and the pixels do not depend on the process count.
    A row repeated in ``index`` is rendered on a new patient's anatomy (:func:`repeat_ids`).

    A set that would not fit in the memory available, or on the disk of ``work``, is refused
    first; a disk that fills up meanwhile is one line too (:func:`trcgl.cache.disk_space`), and the
    chunks written so far are kept for the next run."""
    from ..cache import disk_space

    index = np.asarray(index, dtype=np.int64)
    if len(index) == 0:
        raise DataError(f"the image set '{name}' selects no rows: check data.n_* and the split settings")
    size = cfg.data.image_size
    need = image_set_bytes(cfg.data.source, len(index), size, len(cohort.class_set))
    check_memory(name, len(index), size, need["memory"])
    with disk_space(work, need["disk"]):
        _write_image_set(cfg, cohort, index, name, Path(work), processes)


def _write_image_set(cfg, cohort: Cohort, index: np.ndarray, name: str, work: Path, processes: int | None) -> None:
    from ..cache import atomic_write_json, save_npy
    from .render import ChunkJob, render_chunks

    frame = cohort.frame.iloc[index]
    size = cfg.data.image_size
    render_ids = repeat_ids(frame["ImageID"].tolist())
    Y = labels_as_rendered(cfg, cohort, index, name)
    if cfg.data.source == "phantom":
        renderer = phantom_renderer(cfg, cohort)
        names = np.asarray(cohort.class_set.classes)
        n_chunks = (len(index) + CHUNK - 1) // CHUNK
        sentences, labels = frame["sentences"].tolist(), frame["labels"].tolist()
        jobs = []
        for k in range(n_chunks):
            lo, hi = k * CHUNK, min((k + 1) * CHUNK, len(index))
            jobs.append(ChunkJob(work / f"chunk{k:04d}.npz", tuple(render_ids[lo:hi]),
                                 tuple(tuple(names[Y[j] == 1]) for j in range(lo, hi)),
                                 tuple(sentences[lo:hi]), tuple(labels[lo:hi])))
        set_aside_bad_chunks(jobs, size, len(names))
        with tqdm(total=len(index), desc=f"rendering {name} phantoms", unit="img") as bar:
            used = render_chunks(renderer, size, jobs, processes, bar.update)
        if used > 1:
            log.info("rendered the %s set (%d images) with %d processes", name, len(index), used)
        chunks = [np.load(job.path, allow_pickle=False) for job in jobs]
        save_npy(work / "images.npy", np.concatenate([c["images"] for c in chunks]))
        save_npy(work / "masks.npy", np.concatenate([c["masks"] for c in chunks]))
        for job in jobs:
            job.path.unlink()
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
        imgs, kept, rep = reader.read_many(tqdm(rows, desc=f"reading {name} images", unit="img"))
        kept = np.asarray(kept, dtype=bool)
        if int(kept.sum()) == 0:
            raise DataError(f"no image of the '{name}' set could be read under {root} "
                            f"({rep.skipped} skipped): check PADCHEST_ROOT")
        imgs *= 255                                 # in place: a set of float32 images can be large
        save_npy(work / "images.npy", np.round(imgs, out=imgs).astype(np.uint8))
        report = {"read": rep.read, "skipped": rep.skipped, "missing": rep.missing[:20], "unreadable": rep.unreadable[:20]}
    keep_index = index[kept]
    save_npy(work / "Y.npy", Y[kept])
    rows = cohort.frame.iloc[keep_index][META_COLUMNS + ["labels", "sentences"]].reset_index(drop=True)
    rows["render_id"] = [r for r, k in zip(render_ids, kept) if k]
    write_rows(rows, work / "rows.json")
    atomic_write_json(work / "source.json", {"source": cfg.data.source, "classes": list(cohort.class_set.classes)})
    atomic_write_json(work / "report.json", report)


def chunk_fault(path: Path, rows: int, size: int, n_classes: int) -> str | None:
    """Why a rendered chunk file cannot be used (None when it can): unreadable (truncated, garbled:
    the zip's checksums), or not ``rows`` images of ``size``² pixels with their packed masks."""
    want = {"images": (rows, size, size), "masks": (rows, n_classes, (size * size + 7) // 8)}
    try:
        with np.load(path, allow_pickle=False) as z:
            got = {k: z[k] for k in want}
    except Exception as err:  # noqa: BLE001 -- np.load / zipfile raise many types for a bad file
        return f"cannot be read: {type(err).__name__}: {first_line(err)}"
    for k, shape in want.items():
        if got[k].shape != shape or got[k].dtype != np.uint8:
            return f"{k} is {got[k].dtype} {got[k].shape}, not uint8 {shape}"
    return None


def set_aside_bad_chunks(jobs, size: int, n_classes: int) -> None:
    """Before an interrupted build resumes, move every rendered chunk it left that cannot be used
    out of the ``.partial`` folder (with a warning, :func:`trcgl.checkpoints.set_aside`): those
    chunks are rendered again, the others are kept."""
    for job in jobs:
        if job.path.exists():
            why = chunk_fault(job.path, len(job), size, n_classes)
            if why is not None:
                set_aside(job.path, why, what="rendered chunk", then="rendering it again")


def write_rows(rows: pd.DataFrame, path: Path) -> None:
    """An image set's label rows as JSON (strings, numbers and lists; no pickles)."""
    columns = {c: rows[c].astype(object).where(rows[c].notna(), None).tolist() for c in rows.columns}
    atomic_write_bytes(path, json.dumps(columns, separators=(",", ":"), default=_jsonable).encode())


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} into an image set's rows")


def read_rows(path: Path) -> pd.DataFrame:
    frame = pd.DataFrame(json.loads(Path(path).read_text()))
    for c in META_COLUMNS:
        if c in frame:
            frame[c] = frame[c].astype(str)
    return frame


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


def load_image_set(folder: Path) -> ImageSet:
    """An image set written by :func:`write_image_set` or :func:`save_image_set`."""
    from ..cache import load_npy

    folder = Path(folder)
    images = load_npy(folder / "images.npy")
    masks = load_npy(folder / "masks.npy") if (folder / "masks.npy").exists() else None
    weights = load_npy(folder / "weights.npy") if (folder / "weights.npy").exists() else np.ones(len(images), np.float32)
    info = json.loads((folder / "source.json").read_text())
    return ImageSet(images=images, Y=load_npy(folder / "Y.npy"), weights=weights, rows=read_rows(folder / "rows.json"),
                    classes=tuple(info["classes"]), masks_packed=masks, source=info["source"])


def save_image_set(image_set: ImageSet, folder: Path) -> None:
    """Write any image set (a derived or synthetic one) so that :func:`load_image_set` reads it."""
    from ..cache import atomic_write_json, save_npy

    folder = Path(folder)
    if len(image_set) == 0:
        raise DataError("refusing to save an empty image set")
    save_npy(folder / "images.npy", image_set.images)
    save_npy(folder / "Y.npy", image_set.Y)
    save_npy(folder / "weights.npy", image_set.weights.astype(np.float32))
    if image_set.masks_packed is not None:
        save_npy(folder / "masks.npy", image_set.masks_packed)
    write_rows(image_set.rows, folder / "rows.json")
    atomic_write_json(folder / "source.json", {"source": image_set.source, "classes": list(image_set.classes)})


def image_set_digest(image_set: ImageSet) -> str:
    """The content digest of an in-memory image set (pixels, labels, weights, rows, classes)."""
    from ..cache import digest

    return digest(image_set.images, image_set.Y, image_set.weights.astype(np.float32),
                  image_set.rows.astype(str).to_dict(orient="list"), list(image_set.classes))


# ----------------------------------------------------------------------------- torch side

class XrayDataset(Dataset):
    """(image 1×H×W normalised, label vector C, loss weight) triples from an :class:`ImageSet`,
    one sample at a time (for a few images; the trainers and ``predict`` batch whole stored
    tensors on the device instead, :mod:`trcgl.data.batches`)."""

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
