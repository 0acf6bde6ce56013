"""The data's stages (chapter 1, and every chapter's inputs): the PadChest label table, the cohort
(class set, patient-disjoint train / selection / test split, groups), the image sets (rendered
phantoms or real images of one choice of cohort rows) and the extra training sets made of parts.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from ..cache import digest
from ..graph import Const, Request, StageError, stage
from .common import file_input, folder_input, get, resolve

# ----------------------------------------------------------------------------- labels and cohort

def _table_inputs(cfg, params):
    from ..data.padchest import read_raw, shipped_table_path

    path = Path(cfg.paths.padchest_csv or shipped_table_path())
    if not path.is_file():
        read_raw(path)      # the label table's own clear error
    return {"csv": file_input(path)}


def _load_table(ctx):
    from ..data.padchest import read_table

    return read_table(ctx.work)


@stage("label-table", reads=(), modules=("trcgl.data.padchest",), inputs=_table_inputs, load=_load_table)
def _label_table(ctx):
    """The PadChest label table, parsed (labels, localizations, report sentences)."""
    from ..data.padchest import load_table, save_table

    save_table(load_table(ctx.inputs["csv"]), ctx.work)


COHORT_READS = ("data.class_set", "data.split_seed", "data.test_fraction", "data.selection_fraction",
                "data.head_threshold", "data.tail_threshold")


def _load_cohort(ctx):
    from ..data.padchest import read_cohort

    return read_cohort(ctx.work, ctx.inputs["table"])


@stage("cohort", reads=COHORT_READS, modules=("trcgl.data.padchest", "data/class_sets.json"),
       inputs=lambda cfg, p: {"table": Request("label-table", cfg)}, load=_load_cohort)
def _cohort(ctx):
    """The class set's label vectors, the patient-disjoint train / selection / test split, the groups."""
    from ..data.padchest import build_cohort, save_cohort

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
        from ..data.datasets import split_rows

        return split_rows(cfg, cohort, split)
    return pick


def _oracle_rows(cfg, cohort):
    from ..data.datasets import split_rows
    from ..data.rows import oracle_rows

    return oracle_rows(cfg, cohort, split_rows(cfg, cohort, "train"), cfg.seed)


def _normal_rows(cfg, cohort):
    from ..data.datasets import split_rows
    from ..data.rows import normal_rows

    return normal_rows(cfg, cohort, split_rows(cfg, cohort, "train"), cfg.inpaint.n_normal, cfg.seed)


def _pool_rows(cfg, cohort):
    from ..data.datasets import split_rows
    from ..data.rows import pool_rows

    return pool_rows(cfg, cohort, split_rows(cfg, cohort, "train"), cfg.pretrain.n_pool, cfg.pretrain.seed)


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
                 "data/locations.json", "trcgl.data.rows")


def _image_reads(params) -> tuple[str, ...]:
    if params.get("rows") not in ROWS:
        raise StageError(f"image-set: unknown rows {params.get('rows')!r} (known: {', '.join(ROWS)})")
    return IMAGE_READS + ROWS[params["rows"]].reads


def _image_inputs(cfg, params):
    inputs = {"cohort": Request("cohort", cfg)}
    if cfg.data.source == "padchest":
        from ..data.padchest import padchest_root

        root = padchest_root(cfg)
        if root is None:
            from ..data.padchest import DataError

            raise DataError("data.source is 'padchest' but no image folder is set: set PADCHEST_ROOT or "
                            "paths.padchest_root (the `paper` profile reads real PadChest images)")
        if not root.is_dir():
            from ..data.images import PadChestImages

            PadChestImages(root, cfg.data.image_size)     # its own clear "folder not found"
        inputs["images"] = folder_input(root, "PadChest images (PADCHEST_ROOT)")
    return inputs


def _load_image_set(ctx):
    from ..data.datasets import load_image_set

    return load_image_set(ctx.work)


@stage("image-set", reads=_image_reads, modules=IMAGE_MODULES, inputs=_image_inputs, load=_load_image_set)
def _image_set(ctx):
    """Rendered phantoms (or real PadChest images) of one choice of cohort rows."""
    from ..data.datasets import write_image_set

    cohort = ctx.inputs["cohort"]
    index = ROWS[ctx.params["rows"]].pick(ctx.cfg, cohort)
    write_image_set(ctx.cfg, cohort, index, ctx.params["rows"], ctx.work)


# ----------------------------------------------------------------------------- derived training sets

def _load_plain_set(ctx):
    from ..data.datasets import load_image_set

    return load_image_set(ctx.work)


@stage("extra-set", reads=(), modules=("trcgl.data.datasets", "trcgl.stages.data"), load=_load_plain_set)
def _extra_set(ctx):
    """Extra training images made of parts (synthetic, inpainted, ...), each with an optional loss
    weight and PIL flag (``progressive``)."""
    import dataclasses

    from ..data.datasets import concat_sets, save_image_set

    parts = []
    for k, (weight, progressive) in enumerate(ctx.params["overrides"]):
        s = _as_image_set(ctx.inputs[f"part{k}"])
        if weight is not None:
            s = dataclasses.replace(s, weights=np.full(len(s), weight, np.float32))
        if progressive is not None:
            s = dataclasses.replace(s, rows=s.rows.assign(progressive=progressive))
        parts.append(s)
    save_image_set(concat_sets(*parts), ctx.work)


@stage("count-matched-set", reads=(), modules=("trcgl.controls", "trcgl.data.datasets"), load=_load_plain_set)
def _count_matched_set(ctx):
    """The images of ``source`` at the count of ``like`` (:func:`trcgl.controls.at_count`): two kinds
    of extra images at one dose."""
    from ..controls import at_count
    from ..data.datasets import save_image_set

    like = ctx.inputs["like"]
    n = len(_as_image_set(like).Y)
    save_image_set(at_count(_as_image_set(ctx.inputs["source"]), n, ctx.params["seed"]), ctx.work)


def _as_image_set(v):
    """The image set of an input: an ImageSet, or a stage result that carries one."""
    for attr in ("kept", "images"):
        inner = getattr(v, attr, None)
        if inner is not None and hasattr(inner, "Y"):
            return inner
    return v


# ----------------------------------------------------------------------------- requests

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


def check_data(cfg, cache=None) -> str:
    """What ``python -m trcgl check-data`` prints: the label table's parsing report, the class
    set's groups and, per split, the rows the profile uses; with ``data.source: padchest`` the
    images are read (into the cache a run then reuses) and the read / skipped counts shown.
    Every problem on the way is the same :class:`DataError` a chapter would raise, in seconds."""
    from ..data.datasets import split_rows
    from ..data.padchest import padchest_root

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
    from ..data.datasets import image_set_digest

    return Const(image_set, image_set_digest(image_set))


def const_cohort(cohort) -> Const:
    """An in-memory cohort as a stage input (tests), keyed by its labels, split, groups and rows."""
    return Const(cohort, digest(cohort.class_set.name, cohort.Y, cohort.split, list(cohort.groups),
                                cohort.frame["ImageID"].astype(str).tolist()))


def build_image_set(cfg, cohort, rows: str, cache=None):
    """The image set ``rows`` of an in-memory cohort, through the ``image-set`` stage (tests)."""
    return get(Request("image-set", cfg, rows=rows, cohort=const_cohort(cohort)), cache)
