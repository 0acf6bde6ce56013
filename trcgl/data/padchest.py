"""The real PadChest label table: parsing, class sets, patient-level split, groups, co-occurrence.

The table (160,861 rows) ships inside the ``torchxrayvision`` wheel; we locate the file with
``importlib.util.find_spec`` and never import the package. Everything the book says about the
data (the long tail, the head / medium / tail groups, the co-occurrence graph) is computed here
from that table (paper Sec. 4.1, Fig. 2).
"""
from __future__ import annotations

import ast
import json
import logging
import os
from dataclasses import dataclass, field
from importlib import resources
from importlib.util import find_spec
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupShuffleSplit

from ..errors import TrcglError

log = logging.getLogger(__name__)

TABLE_NAME = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz"
COLUMNS = ["ImageID", "ImageDir", "PatientID", "StudyID", "Projection", "Labels", "Localizations",
           "LabelsLocalizationsBySentence"]
#: Columns a label table must have (the others are read as empty when absent).
REQUIRED = ("ImageID", "ImageDir", "PatientID", "Projection", "Labels")
FRONTAL = ("PA", "AP", "AP_horizontal")
GROUPS = ("head", "medium", "tail")


class DataError(TrcglError, ValueError):
    """The label table or an image folder is missing or malformed."""


def shipped_table_path() -> Path:
    """The PadChest label CSV inside the installed ``torchxrayvision`` wheel."""
    spec = find_spec("torchxrayvision")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the PadChest label table ships inside the PyPI package torchxrayvision, "
                        "which is not installed: run `make install` (or pass a CSV path)")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / TABLE_NAME
    if not path.is_file():
        raise DataError(f"torchxrayvision is installed but {TABLE_NAME} is not in its data folder ({path.parent})")
    return path


def parse_list(text) -> list | None:
    """A Python-literal list in a string -> a list of stripped, non-empty, de-duplicated tokens.

    Returns ``None`` for a missing value or text that is not a list literal (a malformed row).
    Nested lists (``LabelsLocalizationsBySentence``) are cleaned one level down.
    """
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return None
    try:
        value = ast.literal_eval(str(text))
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    if not isinstance(value, (list, tuple)):
        return None
    out: list = []
    for item in value:
        if isinstance(item, (list, tuple)):
            inner = _clean_tokens(item)
            if inner:
                out.append(inner)
        else:
            token = str(item).strip()
            if token and token not in out:
                out.append(token)
    return out


def _clean_tokens(items: Sequence) -> list[str]:
    out: list[str] = []
    for item in items:
        token = str(item).strip()
        if token and token not in out:
            out.append(token)
    return out


@dataclass
class LabelTable:
    """Parsed rows: ``labels``, ``localizations`` and ``sentences`` are Python lists per row."""

    frame: pd.DataFrame
    report: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.frame)


def label_vocabulary() -> frozenset[str]:
    """PadChest's label strings (``padchest_labels.json``: every string of the shipped table)."""
    data = json.loads(resources.files("trcgl.data").joinpath("padchest_labels.json").read_text())
    return frozenset(data["labels"])


def parse_table(raw: pd.DataFrame, source: str = "the label table") -> LabelTable:
    """Parse the list columns of a raw PadChest frame; count and drop what cannot be used.

    Rows whose ``Labels`` is missing, malformed or nested (a list inside the list) are dropped
    and counted; a malformed ``Localizations`` or sentence column is counted and read as empty
    (the row keeps its labels). Label strings outside PadChest's vocabulary are counted and
    listed in the report (``labels_unknown``, ``unknown_label_strings``); no class maps them.
    A table without the :data:`REQUIRED` columns, or with no usable row, is a :class:`DataError`
    naming ``source``.
    """
    missing_cols = [c for c in REQUIRED if c not in raw.columns]
    if missing_cols:
        raise DataError(f"{source} lacks the column(s) {missing_cols} (found: {list(raw.columns)}); "
                        f"a PadChest label CSV has {', '.join(REQUIRED)}")
    if not len(raw):
        raise DataError(f"{source} has its header row only, no data rows: a PadChest label CSV needs one row "
                        "per image under its header; check that the file is complete (or set paths.padchest_csv "
                        "to another table)")
    df = raw.copy()
    for col in COLUMNS:
        if col not in df.columns:
            df[col] = None
    report = {"rows_read": int(len(df))}
    labels = df["Labels"].map(parse_list)
    nested = labels.map(lambda v: v is not None and any(isinstance(t, list) for t in v))
    report["labels_missing"] = int(df["Labels"].isna().sum())
    report["labels_malformed"] = int((labels.isna() & df["Labels"].notna()).sum())
    report["labels_nested"] = int(nested.sum())
    report["patient_missing"] = int(df["PatientID"].isna().sum())
    keep = labels.notna() & ~nested & df["PatientID"].notna()
    out = df.loc[keep, COLUMNS].copy()
    out["labels"] = labels[keep]
    for col, name in (("Localizations", "localizations"), ("LabelsLocalizationsBySentence", "sentences")):
        parsed = out[col].map(parse_list)
        report[f"{name}_malformed"] = int((parsed.isna() & out[col].notna()).sum())
        out[name] = parsed.map(lambda v: v if v is not None else [])
    out = out.drop(columns=["Labels", "Localizations", "LabelsLocalizationsBySentence"])
    out["PatientID"] = out["PatientID"].astype(str)
    out = out.reset_index(drop=True)
    report["rows_kept"] = int(len(out))
    report["rows_dropped"] = report["rows_read"] - report["rows_kept"]
    vocabulary = label_vocabulary()
    unknown = pd.Series([t for row in out["labels"] for t in row if t not in vocabulary], dtype=object)
    counts = unknown.value_counts()
    report["labels_unknown"] = int(len(unknown))
    report["unknown_label_strings"] = ", ".join(f"{k} ({v})" for k, v in counts.head(20).items()) + (
        f", ... ({len(counts) - 20} more)" if len(counts) > 20 else "")
    if report["rows_dropped"]:
        log.warning("PadChest table: dropped %d of %d rows (%d missing labels, %d malformed labels, "
                    "%d nested label lists, %d missing patient ids)", report["rows_dropped"], report["rows_read"],
                    report["labels_missing"], report["labels_malformed"], report["labels_nested"],
                    report["patient_missing"])
    if len(unknown):
        log.warning("PadChest table: %d label string(s) outside PadChest's vocabulary, which no class uses: %s",
                    len(unknown), report["unknown_label_strings"])
    if not len(out):
        raise DataError(f"{source} has no usable row: {report['rows_read']} read, {report['labels_missing']} "
                        f"without labels, {report['labels_malformed']} malformed, {report['labels_nested']} nested, "
                        f"{report['patient_missing']} without PatientID")
    return LabelTable(out, report)


def read_raw(csv_path: str | Path | None = None) -> pd.DataFrame:
    """Read the CSV with every column as a string (PatientID is a 39-digit id, never a float).

    A missing, empty, truncated, binary or otherwise unreadable file is one :class:`DataError`
    naming the file."""
    path = Path(csv_path) if csv_path else shipped_table_path()
    if not path.is_file():
        raise DataError(f"PadChest label table not found: {path} (set paths.padchest_csv to a PadChest "
                        "label CSV, .csv or .csv.gz, or leave it null for the table shipped in torchxrayvision)")
    try:
        frame = pd.read_csv(path, dtype=str, usecols=lambda c: c in COLUMNS, keep_default_na=True)
        missing = [c for c in REQUIRED if c not in frame.columns]
        if missing:
            header = ", ".join(map(str, pd.read_csv(path, nrows=0).columns[:12]))
            raise DataError(f"the label table {path} lacks the column(s) {missing} (its header: {header[:200]!r}); "
                            f"a PadChest label CSV has {', '.join(REQUIRED)}")
        return frame
    except DataError:
        raise
    except pd.errors.EmptyDataError:
        raise DataError(f"the label table {path} is empty (expected a PadChest label CSV with a header row)") from None
    except (OSError, EOFError, UnicodeDecodeError, pd.errors.ParserError, ValueError) as err:
        reason = " ".join(str(err).split())[:160] or type(err).__name__
        raise DataError(f"cannot read the label table {path}: {type(err).__name__}: {reason} "
                        "(expected a PadChest label CSV, plain or gzip-compressed; is it truncated or another format?)") from None


def load_table(csv_path: str | Path | None = None) -> LabelTable:
    """Read and parse the table (the ``label-table`` stage caches the result)."""
    path = Path(csv_path) if csv_path else shipped_table_path()
    return parse_table(read_raw(path), source=f"the label table {path}")


def save_table(table: LabelTable, folder: Path) -> None:
    """Write a parsed table as JSON (columns of strings and lists; no pickles); a full disk is one
    line naming the folder, the bytes needed and the bytes free (:func:`trcgl.cache.disk_space`)."""
    from ..cache import atomic_write_bytes, disk_space

    files = {"table.json": json.dumps(_columns(table.frame), separators=(",", ":")).encode(),
             "report.json": json.dumps(table.report, indent=1).encode()}
    with disk_space(folder, sum(map(len, files.values()))):
        for name, data in files.items():
            atomic_write_bytes(Path(folder) / name, data)


def _columns(frame: pd.DataFrame) -> dict[str, list]:
    """A table's columns as plain lists (missing values as None): what :func:`save_table` writes."""
    return {c: frame[c].astype(object).where(frame[c].notna(), None).tolist() for c in frame.columns}


def read_table(folder: Path) -> LabelTable:
    """A table written by :func:`save_table`."""
    columns = json.loads((Path(folder) / "table.json").read_text())
    frame = pd.DataFrame(columns)
    for c in ("ImageID", "ImageDir", "PatientID", "StudyID", "Projection"):
        if c in frame:
            frame[c] = frame[c].astype("string")
    return LabelTable(frame, json.loads((Path(folder) / "report.json").read_text()))


# ----------------------------------------------------------------------------- class sets

@dataclass(frozen=True)
class ClassSet:
    """Named classes, each positive when an image carries any of its PadChest label strings."""

    name: str
    classes: tuple[str, ...]
    padchest_labels: tuple[tuple[str, ...], ...]
    paper_groups: tuple[str | None, ...]

    def __len__(self) -> int:
        return len(self.classes)

    def index(self, class_name: str) -> int:
        return self.classes.index(class_name)


def _class_sets_json() -> dict:
    return json.loads(resources.files("trcgl.data").joinpath("class_sets.json").read_text())


def class_set_names() -> list[str]:
    return list(_class_sets_json()["sets"])


def load_class_set(name: str = "paper") -> ClassSet:
    """``paper``: the reconstructed 30 classes of the paper; ``cxrlt2026``: the CXR-LT 2026 list."""
    sets = _class_sets_json()["sets"]
    if name not in sets:
        raise DataError(f"unknown class set '{name}': choose one of {', '.join(sets)}")
    entries = sets[name]
    return ClassSet(
        name=name,
        classes=tuple(e["name"] for e in entries),
        padchest_labels=tuple(tuple(e["padchest_labels"]) for e in entries),
        paper_groups=tuple(e.get("group") for e in entries),
    )


def multi_hot(labels: Sequence[Sequence[str]], class_set: ClassSet) -> np.ndarray:
    """(N, C) uint8: row n, class c is 1 when any of the class's PadChest labels is in row n."""
    lookup: dict[str, list[int]] = {}
    for c, strings in enumerate(class_set.padchest_labels):
        for s in strings:
            lookup.setdefault(s, []).append(c)
    Y = np.zeros((len(labels), len(class_set)), dtype=np.uint8)
    for n, row in enumerate(labels):
        for token in row:
            for c in lookup.get(token, ()):
                Y[n, c] = 1
    return Y


# ----------------------------------------------------------------------------- split and groups

SPLITS = ("train", "selection", "test")


def patient_split(patient_ids: Sequence[str], seed: int = 42, test_fraction: float = 0.2,
                  selection_fraction: float = 0.1) -> np.ndarray:
    """Per row ``"train"``, ``"selection"`` or ``"test"``, grouped by patient (sklearn's
    ``GroupShuffleSplit``, twice): no patient has rows in two splits.

    The paper splits patients 80/20 into training and validation and reports on the validation
    split it also chose its checkpoints on. Here the 20 % is the **test** split, which chooses
    nothing, and a ``selection_fraction`` of all patients is carved out of the paper's training
    side to choose epochs, thresholds and filters on. Groups are still counted over the paper's
    whole training side (train + selection), as the paper's thresholds are.
    """
    groups = np.asarray([str(p) for p in patient_ids])
    if not 0 < test_fraction < 1 or not 0 <= selection_fraction < 1 - test_fraction:
        raise DataError(f"split fractions must satisfy 0 < test ({test_fraction}) < 1 and "
                        f"0 <= selection ({selection_fraction}) < 1 - test; fix data.test_fraction / data.selection_fraction")
    split = np.full(len(groups), "test", dtype="<U9")
    gss = GroupShuffleSplit(n_splits=1, test_size=test_fraction, random_state=seed)
    side, _ = next(gss.split(np.zeros(len(groups)), groups=groups))
    split[side] = "train"
    if selection_fraction > 0:
        inner = GroupShuffleSplit(n_splits=1, test_size=selection_fraction / (1 - test_fraction), random_state=seed + 1)
        _, sel = next(inner.split(np.zeros(len(side)), groups=groups[side]))
        split[side[sel]] = "selection"
    return split


def assign_groups(train_counts: Sequence[int], head_threshold: int = 5000, tail_threshold: int = 500) -> list[str]:
    """The paper's groups: head > 5000, medium 500-5000, tail < 500 training images."""
    return ["head" if n > head_threshold else "tail" if n < tail_threshold else "medium" for n in train_counts]


def cooccurrence(Y: np.ndarray) -> np.ndarray:
    """Q = YᵀY (Eq. 15): Q[i, j] images carrying both i and j; the diagonal is each class's count."""
    Y = np.asarray(Y, dtype=np.int64)
    return Y.T @ Y


def strongest_pairs(Q: np.ndarray, max_links: int = 90, per_class: int = 2) -> list[tuple[float, int, int]]:
    """The class pairs a co-occurrence figure draws: each class's ``per_class`` most frequent
    partners, then the most frequent pairs overall, ``max_links`` in all; ``(count, i, j)`` with
    i < j, the most frequent first."""
    off = np.asarray(Q, dtype=float).copy()
    np.fill_diagonal(off, 0)
    C = len(off)
    keep = set()
    for i in range(C):
        for j in np.argsort(-off[i])[:per_class]:
            if off[i, j] > 0:
                keep.add((min(i, j), max(int(i), int(j))))
    ranked = sorted(((off[i, j], i, j) for i in range(C) for j in range(i + 1, C) if off[i, j] > 0), reverse=True)
    for _, i, j in ranked:
        if len(keep) >= max_links:
            break
        keep.add((i, j))
    return sorted(((float(off[i, j]), int(i), int(j)) for i, j in keep), reverse=True)


def localization_stats(table: LabelTable, class_set: ClassSet) -> dict[str, dict]:
    """Per class, how often each localization token and each side accompanies it.

    Counted over the sentences of ``LabelsLocalizationsBySentence`` that carry one of the class's
    PadChest labels (the sentence-level pairing of finding and location).
    """
    owner: dict[str, list[int]] = {}
    for c, strings in enumerate(class_set.padchest_labels):
        for s in strings:
            owner.setdefault(s, []).append(c)
    loc_counts = [dict() for _ in class_set.classes]
    n_sentences = [0] * len(class_set)
    for sentences in table.frame["sentences"]:
        for sentence in sentences:
            tokens = [t for t in sentence if isinstance(t, str)]
            locs = [t for t in tokens if t.startswith("loc ")]
            hit = {c for t in tokens for c in owner.get(t, ())}
            for c in hit:
                n_sentences[c] += 1
                for loc in locs:
                    loc_counts[c][loc] = loc_counts[c].get(loc, 0) + 1
    stats = {}
    for c, name in enumerate(class_set.classes):
        counts = loc_counts[c]
        n = max(n_sentences[c], 1)
        side = {"R": _side_count(counts, "right"), "L": _side_count(counts, "left"),
                "B": _side_count(counts, "bilateral")}
        stats[name] = {
            "n_sentences": n_sentences[c],
            "locations": {k: v / n for k, v in sorted(counts.items(), key=lambda kv: -kv[1])},
            "side_fraction": {k: v / n for k, v in side.items()},
        }
    return stats


def _side_count(counts: dict, side: str) -> int:
    return sum(v for k, v in counts.items() if side in k.split())


# ----------------------------------------------------------------------------- the cohort

@dataclass
class Cohort:
    """The labelled rows of one class set, split by patient, with groups from training counts.

    ``frame`` holds every parsed row; ``split`` (train / selection / test) and the multi-hot
    ``Y`` are aligned to it. ``train_counts`` are counted over the paper's training side (train +
    selection, all projections), as the paper's thresholds are; images are later drawn from the
    frontal rows only.
    """

    table: LabelTable
    class_set: ClassSet
    Y: np.ndarray
    split: np.ndarray
    groups: list[str]

    @property
    def frame(self) -> pd.DataFrame:
        return self.table.frame

    @property
    def is_train(self) -> np.ndarray:
        """The paper's training side: train and selection rows (everything but test)."""
        return self.split != "test"

    @property
    def train_counts(self) -> np.ndarray:
        return self.Y[self.is_train].sum(0).astype(np.int64)

    def counts(self, split: str) -> np.ndarray:
        return self.Y[self.split == split].sum(0).astype(np.int64)

    def summary(self) -> pd.DataFrame:
        """One row per class: group, counts on the paper's training side and per split."""
        return pd.DataFrame({
            "class": self.class_set.classes, "group": self.groups, "train": self.train_counts,
            **{f"{s} split": self.counts(s) for s in SPLITS},
            "train_share_%": 100 * self.train_counts / max(int(self.is_train.sum()), 1),
        }).set_index("class")

    def localization_stats(self) -> dict[str, dict]:
        """:func:`localization_stats` of this cohort's table and class set (computed once)."""
        if not hasattr(self, "_loc_stats"):
            self._loc_stats = localization_stats(self.table, self.class_set)
        return self._loc_stats

    def rarity(self) -> np.ndarray:
        """0 for the most frequent class, 1 for the rarest, linear in log training count."""
        logc = np.log1p(self.train_counts.astype(float))
        span = logc.max() - logc.min()
        return (logc.max() - logc) / span if span > 0 else np.zeros_like(logc)


def build_cohort(table: LabelTable, class_set: ClassSet | str = "paper", split_seed: int = 42,
                 test_fraction: float = 0.2, selection_fraction: float = 0.1, head_threshold: int = 5000,
                 tail_threshold: int = 500) -> Cohort:
    if isinstance(class_set, str):
        class_set = load_class_set(class_set)
    Y = multi_hot(table.frame["labels"].tolist(), class_set)
    split = patient_split(table.frame["PatientID"].tolist(), split_seed, test_fraction, selection_fraction)
    groups = assign_groups(Y[split != "test"].sum(0), head_threshold, tail_threshold)
    return Cohort(table, class_set, Y, split, groups)


def save_cohort(cohort: Cohort, folder: Path) -> None:
    """The cohort's own arrays (the table is its input artifact), and the digest of the table's rows.

    The rows' digest is part of the cohort's content, so a table that differs only where the
    arrays do not show it (an ImageID, an ImageDir, a Projection, a report sentence) still changes
    the cohort's content digest, and with it the key of every stage downstream (the image sets
    render or read those rows): stage keys take their inputs' content digests."""
    from ..cache import atomic_write_bytes, atomic_write_json, digest, save_npy

    save_npy(Path(folder) / "Y.npy", cohort.Y)
    save_npy(Path(folder) / "split.npy", cohort.split)
    atomic_write_json(Path(folder) / "cohort.json", {"class_set": cohort.class_set.name, "groups": cohort.groups,
                                                     "table_rows": digest(_columns(cohort.frame))})
    # key order matters (locations by frequency): no sort_keys here
    atomic_write_bytes(Path(folder) / "localization_stats.json", json.dumps(cohort.localization_stats()).encode())


def read_cohort(folder: Path, table: LabelTable) -> Cohort:
    from ..cache import load_npy

    meta = json.loads((Path(folder) / "cohort.json").read_text())
    cohort = Cohort(table, load_class_set(meta["class_set"]), load_npy(Path(folder) / "Y.npy"),
                    load_npy(Path(folder) / "split.npy"), list(meta["groups"]))
    cohort._loc_stats = json.loads((Path(folder) / "localization_stats.json").read_text())
    return cohort


def padchest_root(cfg) -> Path | None:
    """``paths.padchest_root`` or ``$PADCHEST_ROOT``; ``None`` when neither is set."""
    value = cfg.paths.padchest_root or os.environ.get("PADCHEST_ROOT")
    return Path(value) if value else None


def select_rows(cohort: Cohort, n: int | None, split: str, min_positives: int, seed: int,
                projections: Sequence[str] = FRONTAL) -> np.ndarray:
    """Indices of the rows a profile renders (or reads) for one split.

    The rule: only frontal rows of that split; first, for each class from the rarest up, add
    random rows carrying it until it has ``min_positives`` among the chosen rows (or all it has);
    then fill up to ``n`` with rows drawn uniformly at random, which keeps the real long tail and
    co-occurrence for everything beyond the guaranteed minimum. ``n=None`` takes every row.
    """
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    frame = cohort.frame
    pool = np.flatnonzero((cohort.split == split) & frame["Projection"].isin(list(projections)).to_numpy())
    if n is None or n >= len(pool):
        return pool
    rng = np.random.default_rng(seed + SPLITS.index(split))
    chosen: list[int] = []
    taken = np.zeros(len(frame), dtype=bool)
    Y = cohort.Y
    counts = Y[pool].sum(0)
    for c in np.argsort(counts, kind="stable"):
        have = int(Y[chosen, c].sum()) if chosen else 0
        need = min(min_positives, int(counts[c])) - have
        if need <= 0:
            continue
        candidates = pool[(Y[pool, c] == 1) & ~taken[pool]]
        pick = rng.choice(candidates, size=min(need, len(candidates)), replace=False)
        chosen.extend(pick.tolist())
        taken[pick] = True
    if len(chosen) > n:
        raise DataError(f"guaranteeing {min_positives} positives per class needs {len(chosen)} rows, "
                        f"more than the {n} asked for; raise data.n_{split} or lower data.min_{split}_positives")
    rest = pool[~taken[pool]]
    fill = rng.choice(rest, size=n - len(chosen), replace=False)
    return np.sort(np.concatenate([np.asarray(chosen, dtype=np.int64), fill]))
