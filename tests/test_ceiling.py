"""The learnability ceiling: fresh class-balanced renders, fresh rare-class evaluation rows, a table."""
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from trcgl import load_config
from trcgl.ceiling import (ceiling_config, ceiling_table, evaluation_set, fresh_evaluation_rows,
                           learnability_ceiling, training_rows)
from trcgl.data.datasets import build_image_set

OVERRIDES = {"data.n_train": 60, "data.n_val": 40, "data.min_train_positives": 1, "data.min_val_positives": 1,
             "data.image_size": 16, "phantom.render_size": 32, "ceiling.per_class": 4, "ceiling.epochs": 1,
             "ceiling.eval_min_positives": 3, "ceiling.batch_size": 32, "eval.bootstrap": 20}


@pytest.fixture(scope="module")
def cfg():
    return load_config("smoke", OVERRIDES)


@pytest.fixture(scope="module")
def val_set(cfg, paper_cohort, session_cache):
    return build_image_set(cfg, paper_cohort, "val", session_cache)


def test_training_rows_are_class_balanced_training_split_rows(cfg, paper_cohort):
    exclude = paper_cohort.frame.ImageID.iloc[np.flatnonzero(paper_cohort.is_train)[:50]]
    index = training_rows(cfg, paper_cohort, exclude)
    assert paper_cohort.is_train[index].all()
    assert not set(paper_cohort.frame.ImageID.iloc[index]) & set(exclude)
    assert (paper_cohort.Y[index].sum(0) >= cfg.ceiling.per_class).all()
    more = training_rows(cfg.replace({"ceiling.per_class": 8}), paper_cohort, exclude)
    assert len(more) == 2 * len(index)


def test_fresh_evaluation_rows_fill_every_class_from_the_evaluation_side(cfg, paper_cohort, val_set):
    need = 5
    index, keep = fresh_evaluation_rows(cfg, paper_cohort, val_set, need, seed=0)
    assert not paper_cohort.is_train[index].any()  # the validation side of the patient split
    have = val_set.Y.sum(0) + paper_cohort.Y[index[keep]].sum(0)
    assert (have >= need).all()
    # a row already in the evaluation set is never kept as its original rendering
    in_eval = paper_cohort.frame.ImageID.iloc[index].isin(set(val_set.rows.ImageID)).to_numpy()
    first = np.r_[True, index[1:] != index[:-1]]
    assert not (keep & in_eval & first).any()
    assert (~keep == (in_eval & first)).all()


def test_the_evaluation_set_flags_fresh_rows_and_they_are_new_images(cfg, paper_cohort, val_set, session_cache):
    scored = evaluation_set(cfg, paper_cohort, val_set, session_cache)
    fresh = scored.rows["fresh"].to_numpy(bool)
    assert not fresh[:len(val_set)].any() and fresh[len(val_set):].all() and fresh.any()
    assert (scored.Y.sum(0) >= cfg.ceiling.eval_min_positives).all()
    assert np.array_equal(scored.images[:len(val_set)], val_set.images)
    originals = {img.tobytes() for img in val_set.images}
    assert not any(img.tobytes() in originals for img in scored.images[fresh])


def test_ceiling_table_scores_match_sklearn_and_flag_few_positives():
    rng = np.random.default_rng(0)
    Y = np.zeros((200, 3), int)
    Y[:80, 0] = 1
    Y[:4, 1] = 1
    P = np.clip(Y * 0.5 + rng.random((200, 3)), 0, 1.5)
    fresh = np.zeros(200, bool)
    fresh[:2] = True
    t = ceiling_table(Y, P, ["a", "b", "c"], ["head", "tail", "tail"], fresh, [10, 2, 0], min_positives=30, n_boot=50)
    assert t.loc["a", "AUC"] == pytest.approx(roc_auc_score(Y[:, 0], P[:, 0]))
    assert t.loc["a", "low"] <= t.loc["a", "AUC"] <= t.loc["a", "high"] and t.loc["a", "note"] == ""
    assert t.loc["b", "positives"] == 4 and t.loc["b", "fresh positives"] == 2 and "only 4" in t.loc["b", "note"]
    assert np.isnan(t.loc["c", "AUC"]) and "no evaluation positives" in t.loc["c", "note"]


def test_the_ceiling_classifier_is_gap_only_and_trains_from_the_first_epoch(cfg):
    c = ceiling_config(cfg)
    assert not (c.model.channel_gate or c.model.spatial_attention or c.model.label_gcn)
    assert c.train.warmup_epochs == 0 and c.train.finetune_epochs == cfg.ceiling.epochs
    assert c.train.backbone_lr == c.train.head_lr == cfg.ceiling.lr


def test_learnability_ceiling_end_to_end(cfg, paper_cohort, val_set, session_cache):
    result = learnability_ceiling(cfg, paper_cohort, val_set, session_cache)
    assert list(result.table.index) == list(paper_cohort.class_set.classes)
    assert result.probs.shape == result.eval_set.Y.shape
    assert (result.table["positives"] >= cfg.ceiling.eval_min_positives).all()
    assert result.table["AUC"].between(0, 1).all()
    # the epoch is chosen on patients the classifier did not learn from
    assert len(result.run.history) == cfg.ceiling.epochs
    assert len(result.selection_set) and not set(result.selection_set.rows.PatientID) & set(result.train_set.rows.PatientID)
    assert result.passes() == (not result.failing() and result.mean_auc >= cfg.ceiling.min_mean_auc)
    with pytest.raises(ValueError, match="phantom"):
        learnability_ceiling(cfg.replace({"data.source": "padchest"}), paper_cohort, val_set, session_cache)
