"""The inpainting paper's pieces: PIL (Eq. 3), CAM masks, the entanglement guard, label removal,
RePaint with a normal DiT that changes only pixels inside the mask, and the DiT's save/load."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

from trcgl import load_config
from trcgl.cache import ArtifactCache
from trcgl.data.datasets import ImageSet, concat_sets
from trcgl.inpaint.guard import entanglement, erase_plan, priors_from_statistics
from trcgl.inpaint.masks import mask_overlap, threshold_map
from trcgl.inpaint.pil import pil_count, pil_fraction, pil_subset
from trcgl.inpaint.repaint import compose, latent_mask, remove_labels, repaint
from trcgl.graph import key_config
from trcgl.train import epoch_rows

CLASSES = ("h1", "h2", "t1")


def tiny_set(n, seed=0, size=16, progressive=None):
    rng = np.random.default_rng(seed)
    rows = pd.DataFrame({"ImageID": [f"x{seed}-{i}" for i in range(n)]})
    if progressive is not None:
        rows["progressive"] = progressive
    return ImageSet((rng.random((n, size, size)) * 255).astype(np.uint8), (rng.random((n, 3)) < 0.5).astype(np.uint8),
                    np.ones(n, np.float32), rows, CLASSES)


# ----------------------------------------------------------------------------- PIL

def test_pil_fraction_by_hand():
    assert pil_fraction(0, 0.5) == 0.0
    assert math.isclose(pil_fraction(1, 0.5), 1 - math.exp(-0.5))          # 0.3935
    assert math.isclose(pil_fraction(4, 0.25), 1 - math.exp(-1.0))         # 0.6321
    assert pil_count(100, 1, 0.5) == 39 and pil_count(100, 3, 0.5) == 78 and pil_count(100, 0, 0.5) == 0
    with pytest.raises(ValueError, match="beta"):
        pil_fraction(1, -0.1)


def test_pil_subsets_grow_nested_and_keep_non_progressive_rows():
    extra = tiny_set(20, progressive=[True] * 15 + [False] * 5)
    prev = set()
    for epoch in range(6):
        part = pil_subset(extra, epoch, 0.5, seed=3)
        ids = set(part.rows["ImageID"])
        assert {f"x0-{i}" for i in range(15, 20)} <= ids                 # never scheduled: always in
        assert len(ids) == 5 + pil_count(15, epoch + 1, 0.5)
        assert prev <= ids                                               # images join, never leave
        prev = ids


def test_trainer_epoch_data_follows_pil_and_all_is_the_neutral_default():
    cfg = load_config("smoke", {"train.warmup_epochs": 1, "train.finetune_epochs": 3}, device="cpu")
    real, extra = tiny_set(30, 1), tiny_set(40, 2)
    from trcgl.config import ConfigError
    from trcgl.stages.classifiers import _schedule

    assert [len(d) for d in epoch_rows(cfg, real, extra, 0, 4, _schedule(cfg))] == [70] * 4
    pil = cfg.replace({"train.extra_schedule": "pil", "train.pil_beta": 0.5})
    epochs = epoch_rows(pil, real, extra, 0, 4, _schedule(pil))
    assert [len(d) for d in epochs] == [30 + pil_count(40, n, 0.5) for n in (1, 2, 3, 4)]
    for epoch, d in enumerate(epochs):      # the stored extra rows (after the 30 real ones) are PIL's subset
        part = pil_subset(extra, epoch, 0.5, seed=0)
        assert extra.rows["ImageID"].iloc[d.members[30:] - 30].tolist() == part.rows["ImageID"].tolist()
    assert "train.extra_schedule" not in key_config(cfg, ("train",))    # neutral: out of the key
    assert key_config(pil, ("train",))["train.extra_schedule"] == "pil"
    with pytest.raises(ConfigError, match="extra_schedule"):
        _schedule(cfg.replace({"train.extra_schedule": "later"}))


# ----------------------------------------------------------------------------- masks, labels

def test_threshold_map_and_overlap_by_hand():
    cam = np.zeros((6, 6))
    cam[2, 2], cam[2, 3], cam[4, 4] = 1.0, 0.5, 0.3
    assert threshold_map(cam, 0.5).sum() == 2 and threshold_map(cam, 0.25).sum() == 3
    dil = threshold_map(cam, 0.9, dilation=1)
    assert dil.sum() == 5 and dil[1, 2] and dil[2, 1] and not dil[1, 1]      # a 3x3 cross
    assert not threshold_map(np.zeros((4, 4)), 0.5).any()
    pred, true = np.zeros((4, 4), bool), np.zeros((4, 4), bool)
    pred[0, :2], true[0, 1:4] = True, True
    o = mask_overlap(pred, true)
    assert o["IoU"] == 1 / 4 and o["precision"] == 1 / 2 and o["recall"] == 1 / 3 and o["mask area"] == 2 / 16 and o["lesion area"] == 3 / 16


def test_remove_labels_erases_only_the_named_classes():
    Y = np.array([[1, 1, 1], [1, 0, 1], [0, 1, 0]], np.uint8)
    out = remove_labels(Y, [[0], [0], []])
    assert out.tolist() == [[0, 1, 1], [0, 0, 1], [0, 1, 0]]
    assert Y.tolist() == [[1, 1, 1], [1, 0, 1], [0, 1, 0]]                   # input untouched


def test_compose_and_latent_mask():
    a, b = np.zeros((1, 8, 8), np.uint8), np.full((1, 8, 8), 200, np.uint8)
    m = np.zeros((1, 8, 8), bool)
    m[0, 0, 0] = True
    out = compose(a, b, m)
    assert out[0, 0, 0] == 200 and (out[0][~m[0]] == 0).all()
    lm = latent_mask(m, 2, 2)
    assert lm.shape == (1, 1, 2, 2) and lm[0, 0].tolist() == [[1.0, 0.0], [0.0, 0.0]]


# ----------------------------------------------------------------------------- the guard

def test_entanglement_of_planted_priors():
    a = np.zeros((4, 4))
    a[:2] = 1 / 8                               # top half
    b = np.zeros((4, 4))
    b[2:] = 1 / 8                               # bottom half
    c = np.full((4, 4), 1 / 16)                 # everywhere
    E = entanglement(np.stack([a, b, c]))
    assert np.allclose(np.diag(E), 1) and E[0, 1] == 0 and np.isclose(E[0, 2], 0.5)


def test_priors_from_statistics_use_location_boxes():
    stats = {"h1": {"locations": {"loc apical": 1.0}, "side_fraction": {}},
             "h2": {"locations": {"loc basal": 1.0}, "side_fraction": {}},
             "t1": {"locations": {"loc basal": 0.5}, "side_fraction": {"R": 1.0}}}
    E = entanglement(priors_from_statistics(stats, CLASSES, grid=20))
    assert E[0, 2] == 0                        # apex vs base: disjoint
    assert 0.45 < E[1, 2] < 0.55               # the base vs its right half (the image's left)


def test_guard_keeps_the_most_entangled_head_class_and_erases_the_rest():
    classes, groups = ["normal", "h1", "h2", "t1"], ["head", "head", "head", "tail"]
    E = np.eye(4)
    E[1, 3] = E[3, 1] = 0.9                    # h1 overlies the tail lesion
    E[2, 3] = E[3, 2] = 0.1
    Y = np.array([[0, 1, 1, 1],                # both heads + tail: keep h1, erase h2
                  [0, 0, 1, 1],                # h2 + tail: erase h2
                  [0, 1, 0, 1],                # only h1 (entangled): nothing to erase
                  [1, 0, 0, 1],                # 'normal' is not a lesion: not a candidate
                  [0, 1, 1, 0]], np.uint8)     # no kept finding: not a candidate
    plan = erase_plan(Y, classes, groups, E, threshold=0.5, keep_groups=("tail",)).set_index("index")
    assert list(plan.index) == [0, 1, 2]
    assert plan.loc[0, "erase"] == [2] and plan.loc[0, "guard_kept"] == [1]
    assert plan.loc[1, "erase"] == [2] and plan.loc[1, "guard_kept"] == []
    assert plan.loc[2, "erase"] == [] and plan.loc[2, "guard_kept"] == [1]
    off = erase_plan(Y, classes, groups, None, 0.5, ("tail",)).set_index("index")
    assert off.loc[0, "erase"] == [1, 2] and off.loc[2, "erase"] == [1]
    higher = erase_plan(Y, classes, groups, E, threshold=0.95, keep_groups=("tail",)).set_index("index")
    assert higher.loc[0, "erase"] == [1, 2]    # below τ the guard keeps nothing


# ----------------------------------------------------------------------------- DiT + RePaint

def _tiny_dit_run(tmp_path, epochs=2):
    from trcgl.diffusion.models import build_vae
    from trcgl.stages import train_normal_dit

    torch.manual_seed(0)
    vae = build_vae(1, 4, (8, 8)).eval()                     # 16 px -> 8x8 latents
    cfg = load_config("smoke", {"inpaint.epochs": epochs, "inpaint.batch_size": 16, "inpaint.dit_layers": 1,
                                "diffusion.train_timesteps": 100}, device="cpu")
    normals = tiny_set(48, 5)
    return cfg, vae, normals, train_normal_dit(cfg, normals, vae, cache=ArtifactCache(tmp_path))


def test_repaint_changes_only_pixels_inside_the_mask(tmp_path):
    cfg, vae, _, dit = _tiny_dit_run(tmp_path)
    images = tiny_set(5, 9).images
    masks = np.zeros(images.shape, bool)
    masks[:, 4:10, 3:12] = True
    masks[4] = False                                          # an empty mask leaves the image as it was
    out = repaint(dit, images, masks, steps=4, jump_length=2, jump_n_sample=2, eta=1.0, seed=0, progress=False)
    assert out.dtype == np.uint8 and out.shape == images.shape
    assert (out[~masks] == images[~masks]).all()
    assert (out[:4][masks[:4]] != images[:4][masks[:4]]).mean() > 0.5
    assert (out[4] == images[4]).all()
    again = repaint(dit, images[:2], masks[:2], steps=4, jump_length=2, jump_n_sample=2, eta=1.0, seed=0,
                    batch_size=1, progress=False)
    assert (again == out[:2]).all()                           # per-image noise: batch size does not matter
    none = repaint(dit, images[:0], masks[:0], steps=4, jump_length=2, jump_n_sample=1, eta=1.0, seed=0, progress=False)
    assert none.shape == (0, 16, 16)


def test_normal_dit_is_cached_and_saved_as_a_dit_pipeline(tmp_path):
    from diffusers import DiTPipeline

    from trcgl.inpaint.normal_dit import sample_normals

    cfg, vae, normals, dit = _tiny_dit_run(tmp_path, epochs=3)
    assert len(dit.history) == 3 and dit.history.loss.iloc[-1] < dit.history.loss.iloc[0]
    assert isinstance(DiTPipeline.from_pretrained(dit.folder / "pipeline"), DiTPipeline)
    cache = ArtifactCache(tmp_path)          # a fresh cache object on the same folder (a new process)
    from trcgl.graph import Runner

    runner = Runner(cache)
    from trcgl.graph import Const, Request
    from trcgl.stages import const_set, module_weights_digest

    again = runner.value(Request("normal-dit", cfg, seed=int(cfg.seed), normals=const_set(normals),
                                 vae=Const(vae, module_weights_digest(vae))))
    assert cache.misses == 0 and again.folder == dit.folder
    s = sample_normals(dit, 3, 4, seed=1)
    assert s.shape == (3, 16, 16) and s.dtype == np.uint8 and (s == sample_normals(again, 3, 4, seed=1)).all()


def test_concat_sets_refuses_mismatched_sets():
    a = tiny_set(3)
    b = concat_sets(a, tiny_set(2, 1))
    assert len(b) == 5 and b.rows["ImageID"].tolist()[-1] == "x1-1"
    from trcgl.data.padchest import DataError

    with pytest.raises(DataError, match="differ"):
        concat_sets(a, tiny_set(2, 1, size=8))


def test_the_control_adds_the_same_images_unchanged_with_all_labels():
    from types import SimpleNamespace

    from trcgl.inpaint.experiment import originals_control

    train = tiny_set(10, 3)
    inpainted = tiny_set(3, 4)
    inpainted.weights[:] = 0.7
    control = originals_control(train, SimpleNamespace(originals=np.array([1, 4, 7]), images=inpainted))
    assert (control.images == train.images[[1, 4, 7]]).all() and (control.Y == train.Y[[1, 4, 7]]).all()
    assert control.rows["progressive"].all() and (control.weights == 0.7).all()
    assert control.rows["ImageID"].tolist() == ["x3-1~copy", "x3-4~copy", "x3-7~copy"]


def test_the_count_matched_arms_differ_from_their_pair_in_the_images_alone(tmp_path):
    """Chapter 7's two count-matched arms: the generated images at the inpainted set's count (vs
    inpainting) and the unguarded inpainted images at the guarded set's count (vs the method) train
    under their comparator's configuration and weight, and each asks for a ``count-matched-set``
    of its source at the count of the guarded inpainted set."""
    from trcgl import stages as S
    from trcgl.graph import Runner
    from trcgl.tables import (INPAINT, METHOD_ROW, PROMPT_MATCHED, UNGUARDED_MATCHED, head_to_head_rows,
                              inpaint_ablation_rows)

    cfg = load_config("smoke", device="cpu")
    ident = Runner(ArtifactCache(tmp_path), dry=True).identity
    arms = ((head_to_head_rows(cfg), PROMPT_MATCHED, INPAINT, S.control_set(cfg, "unfiltered")),
            (inpaint_ablation_rows(cfg), UNGUARDED_MATCHED, METHOD_ROW, S.inpainted_set(cfg, guard="off")))
    for rows, matched, pair, source in arms:
        by_name = {r.name: r for r in rows}
        a, b = by_name[matched], by_name[pair]
        assert ident(S.classifier(a.cfg, seed=0)) == ident(S.classifier(b.cfg, seed=0))
        weight = lambda w: float(cfg.inpaint.weight) if w is None else w     # noqa: E731 (None: the inpainted set's own)
        assert [(weight(w), p) for _, w, p in a.extra.parts] == [(weight(w), p) for _, w, p in b.extra.parts]
        req = S.extra_request(cfg, a.extra)
        if req.stage == "extra-set":                        # a weight set on the row: the set is its one part
            assert req.params["overrides"] == [[a.extra.parts[0][1], a.extra.parts[0][2]]]
            req = req.params["part0"]
        assert req.stage == "count-matched-set"
        assert ident(req.params["source"]) == ident(source) != ident(S.extra_request(cfg, b.extra))
        assert ident(req.params["like"]) == ident(S.inpainted_set(cfg))
