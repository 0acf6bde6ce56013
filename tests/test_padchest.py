import numpy as np
import pandas as pd
import pytest

from trcgl.data import padchest
from trcgl.data.padchest import (DataError, assign_groups, cooccurrence, load_class_set,
                                 multi_hot, parse_list, parse_table, patient_split, select_rows)


def test_parse_list_strips_dedups_and_rejects_malformed():
    assert parse_list("['a', ' b ', 'a', '', 'c ']") == ["a", "b", "c"]
    assert parse_list("[['x', 'loc left '], [], ['x', 'x']]") == [["x", "loc left"], ["x"]]
    assert parse_list("[]") == []
    for bad in ("['a', 'b'", "not a list", "{'a': 1}", "42", None, float("nan")):
        assert parse_list(bad) is None


def test_parse_table_counts_what_it_drops():
    raw = pd.DataFrame({
        "ImageID": ["a.png", "b.png", "c.png", "d.png", "e.png"],
        "ImageDir": ["0", "0", "1", "1", "2"],
        "PatientID": ["123456789012345678901234567890123456789", "2", None, "4", "5"],
        "Projection": ["PA"] * 5,
        "Labels": ["['normal']", "['cardiomegaly', ' ', 'cardiomegaly']", "['normal']", "['oops'", None],
        "Localizations": ["[]", "['loc cardiac']", "[]", "[]", "[]"],
        "LabelsLocalizationsBySentence": ["[['normal']]", "broken", "[]", "[]", "[]"],
    })
    table = parse_table(raw)
    rep = table.report
    assert rep["rows_read"] == 5 and rep["rows_kept"] == 2 and rep["rows_dropped"] == 3
    assert (rep["labels_missing"], rep["labels_malformed"], rep["patient_missing"]) == (1, 1, 1)
    assert rep["sentences_malformed"] == 1
    assert table.frame["labels"].tolist() == [["normal"], ["cardiomegaly"]]
    assert table.frame["sentences"].tolist()[1] == []  # malformed: read as empty, row kept
    assert table.frame["PatientID"].iloc[0] == "123456789012345678901234567890123456789"


def test_missing_columns_and_missing_file_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="lacks the column"):
        parse_table(pd.DataFrame({"ImageID": ["x"]}))
    with pytest.raises(DataError, match="not found"):
        padchest.read_raw(tmp_path / "nope.csv.gz")
    with pytest.raises(DataError, match="unknown class set"):
        load_class_set("chexpert")


def test_multi_hot_takes_descendants_and_cooccurrence_is_YtY():
    cs = load_class_set("paper")
    Y = multi_hot([["consolidation", "cardiomegaly"], ["hydropneumothorax"], ["unrelated"]], cs)
    assert Y.shape == (3, 30)
    assert Y[0, cs.index("infiltrates")] == 1 and Y[0, cs.index("cardiomegaly")] == 1 and Y[0].sum() == 2
    # hydropneumothorax is a descendant of both pleural effusion and pneumothorax
    assert Y[1, cs.index("pleural effusion")] == 1 and Y[1, cs.index("pneumothorax")] == 1
    assert Y[2].sum() == 0
    small = np.array([[1, 1, 0], [1, 0, 1], [1, 1, 1]])
    assert cooccurrence(small).tolist() == [[3, 2, 2], [2, 2, 1], [2, 1, 2]]


def test_group_thresholds():
    assert assign_groups([5001, 5000, 500, 499, 0]) == ["head", "medium", "medium", "tail", "tail"]


def test_patient_split_never_shares_a_patient():
    pids = [str(i // 3) for i in range(3000)]  # three images per patient
    split = patient_split(pids, seed=42, test_fraction=0.2, selection_fraction=0.1)
    patients = {s: {p for p, t in zip(pids, split) if t == s} for s in ("train", "selection", "test")}
    assert not patients["train"] & patients["test"] and not patients["selection"] & patients["test"]
    assert not patients["train"] & patients["selection"]
    assert 0.17 < len(patients["test"]) / 1000 < 0.23 and 0.08 < len(patients["selection"]) / 1000 < 0.12
    with pytest.raises(DataError, match="split fractions"):
        patient_split(pids, test_fraction=0.5, selection_fraction=0.6)


def test_paper_set_gives_13_11_6_on_the_real_table(paper_cohort):
    groups = paper_cohort.groups
    assert (groups.count("head"), groups.count("medium"), groups.count("tail")) == (13, 11, 6)
    assert list(groups) == list(paper_cohort.class_set.paper_groups)  # each class in its paper group
    assert len(paper_cohort.frame) > 160_000


def test_real_split_is_disjoint_by_patient_and_counts_add_up(paper_cohort):
    frame = paper_cohort.frame
    patients = {s: set(frame.PatientID[paper_cohort.split == s]) for s in ("train", "selection", "test")}
    assert not patients["train"] & patients["test"] and not patients["selection"] & patients["test"]
    assert not patients["train"] & patients["selection"]
    total = paper_cohort.Y.sum(0)
    assert np.array_equal(sum(paper_cohort.counts(s) for s in ("train", "selection", "test")), total)
    assert np.array_equal(paper_cohort.train_counts, paper_cohort.counts("train") + paper_cohort.counts("selection"))


def test_cxrlt2026_labels_all_exist_in_the_table(real_table):
    vocabulary = {t for row in real_table.frame["labels"] for t in row}
    cs = load_class_set("cxrlt2026")
    assert len(cs) == 30
    for name, strings in zip(cs.classes, cs.padchest_labels):
        assert set(strings) & vocabulary, name
        assert set(strings) <= vocabulary, (name, set(strings) - vocabulary)


def test_select_rows_guarantees_minimum_and_stays_in_split(paper_cohort):
    idx = select_rows(paper_cohort, 500, "test", min_positives=8, seed=1)
    assert len(idx) == len(set(idx)) == 500
    assert (paper_cohort.split[idx] == "test").all()
    assert paper_cohort.frame.Projection.iloc[idx].isin(padchest.FRONTAL).all()
    assert (paper_cohort.Y[idx].sum(0) >= 8).all()
    again = select_rows(paper_cohort, 500, "test", min_positives=8, seed=1)
    assert np.array_equal(idx, again)
    with pytest.raises(DataError, match="raise data.n_test"):
        select_rows(paper_cohort, 50, "test", min_positives=8, seed=1)


def test_localization_stats_follow_the_sentences(paper_cohort):
    stats = paper_cohort.localization_stats()
    ptx = stats["pneumothorax"]
    assert ptx["n_sentences"] > 100
    assert next(iter(ptx["locations"])) in ("loc apical", "loc right", "loc left")
    assert stats["pneumoperitoneo"]["locations"]  # even the rarest class is localised


def test_vocabulary_file_is_the_shipped_tables_label_strings(real_table):
    found = {t for row in real_table.frame["labels"] for t in row}
    assert padchest.label_vocabulary() == found
    assert real_table.report["labels_unknown"] == 0 and real_table.report["unknown_label_strings"] == ""


def _raw(labels):
    n = len(labels)
    return pd.DataFrame({"ImageID": [f"{i}.png" for i in range(n)], "ImageDir": ["0"] * n,
                         "PatientID": [str(i) for i in range(n)], "Projection": ["PA"] * n, "Labels": labels})


def test_nested_labels_are_dropped_and_unknown_strings_counted_and_listed(caplog):
    import logging

    raw = _raw(["['normal']", "[['cardiomegaly'], 'normal']", "['cardiomegaly', 'cardiomegally']",
                "['foo', 'cardiomegally']"])
    with caplog.at_level(logging.WARNING):
        table = parse_table(raw)
    rep = table.report
    assert rep["labels_nested"] == 1 and rep["rows_dropped"] == 1 and rep["rows_kept"] == 3
    assert rep["labels_unknown"] == 3
    assert rep["unknown_label_strings"] == "cardiomegally (2), foo (1)"
    assert "1 nested label lists" in caplog.text and "cardiomegally (2)" in caplog.text
    cs = load_class_set("paper")
    Y = multi_hot(table.frame["labels"], cs)
    assert Y[:, cs.index("cardiomegaly")].tolist() == [0, 1, 0] and Y.sum() == 2   # normal, cardiomegaly


def test_a_table_without_required_columns_or_usable_rows_is_a_clear_error():
    with pytest.raises(DataError, match=r"lacks the column\(s\) \['Projection'\]"):
        parse_table(_raw(["['normal']"]).drop(columns="Projection"))
    with pytest.raises(DataError, match="has no usable row: 2 read, 1 without labels, 1 malformed"):
        parse_table(_raw([None, "['oops'"]))


def tiny_label_csv(path, n: int = 80, seed: int = 0, image_ids=None):
    """A small PadChest-style label CSV (one frontal image per patient, labels drawn from the paper
    class set's label strings) for tests that run the label-table, cohort and image-set stages."""
    strings = [labels[0] for labels in load_class_set("paper").padchest_labels]
    rng = np.random.default_rng(seed)
    ids = image_ids or [f"img{i:04d}.png" for i in range(n)]
    rows = [{"ImageID": ids[i], "ImageDir": str(i % 3), "PatientID": f"p{i}", "StudyID": f"s{i}", "Projection": "PA",
             "Labels": str(sorted(rng.choice(strings, size=rng.integers(1, 4), replace=False).tolist())),
             "Localizations": "[]", "LabelsLocalizationsBySentence": "[]"} for i in range(n)]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


#: a profile small enough to run the label-table, cohort and image-set stages in a second
TINY = {"data.n_train": 24, "data.n_selection": 4, "data.n_test": 4, "data.min_train_positives": 0,
        "data.min_selection_positives": 0, "data.min_test_positives": 0, "data.image_size": 16,
        "phantom.render_size": 32}


def test_a_table_that_differs_only_in_its_image_ids_gives_another_image_set(tmp_path):
    """The image-set key takes the cohort's *content* digest; a label table whose only change is
    the ImageID column gave the same labels, split and groups, so the same cohort content and the
    same image-set key: the image set made from the old ImageIDs was loaded for the new table (its
    rows named files the new table does not have). The cohort now carries its rows' digest."""
    from trcgl import load_config
    from trcgl.cache import ArtifactCache
    from trcgl.graph import Request, Runner

    a = tiny_label_csv(tmp_path / "a.csv")
    renamed = [f"renamed{i:04d}.png" for i in range(80)]
    b = tiny_label_csv(tmp_path / "b.csv", image_ids=renamed)
    runner = Runner(ArtifactCache(tmp_path / "runs"))
    sets = {}
    for name, csv in (("a", a), ("b", b)):
        cfg = load_config("smoke", {**TINY, "paths.padchest_csv": str(csv)})
        cohort = runner.resolve(Request("cohort", cfg))
        image_set = runner.resolve(Request("image-set", cfg, rows="train"))
        sets[name] = (runner.identity(Request("image-set", cfg, rows="train")), cohort, image_set)
    (ident_a, cohort_a, set_a), (ident_b, cohort_b, set_b) = sets["a"], sets["b"]
    assert set(set_b.value.rows["ImageID"]) <= set(renamed)  # the new table's rows, not the old set
    assert set_a.key != set_b.key and set_b.computed
    assert np.array_equal(set_a.value.Y, set_b.value.Y)      # the same labels, rendered for the new rows
    assert ident_a != ident_b and cohort_a.key != cohort_b.key
    assert cohort_a.digest != cohort_b.digest                # the cohort's content names its rows
