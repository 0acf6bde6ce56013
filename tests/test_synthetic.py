"""The synthetic tail set: label sets, filter, oracle rows, consistency and distances, by hand."""
import dataclasses

import numpy as np
import pandas as pd
import pytest

from trcgl import load_config
from trcgl.data.datasets import ImageSet
from trcgl.data.padchest import load_class_set
from trcgl.diffusion.generate import (as_image_set, budget_counts, draw_label_sets, filter_thresholds, keep_mask,
                                      plan_labels, real_pass_rates, synthetic_plan, target_classes)
from trcgl.data.rows import oracle_rows
from trcgl.diffusion.oracle import bootstrap_difference, consistency_table, frechet_distance, mean_pairwise_distance


@pytest.fixture(scope="module")
def class_set():
    return load_class_set("paper")


def small_train_set(class_set):
    names = class_set.classes
    C = len(names)
    Y = np.zeros((6, C), np.uint8)
    a, b, c, n = names.index("pneumothorax"), names.index("pleural effusion"), names.index("cardiomegaly"), names.index("normal")
    Y[0, [a, b, c]] = 1
    Y[1, a] = 1
    Y[2, n] = 1
    Y[3, b] = 1
    Y[4, [b, c]] = 1
    Y[5, [a, n]] = 1                 # an odd row: normal with a finding
    rows = pd.DataFrame({"ImageID": [f"r{i}" for i in range(6)], "sentences": [[] for _ in range(6)]})
    return ImageSet(np.zeros((6, 8, 8), np.uint8), Y, np.ones(6, np.float32), rows, names), (a, b, c, n)


def test_label_sets_come_from_rows_with_the_target_and_match_their_prompts(class_set):
    train, (a, b, c, n) = small_train_set(class_set)
    plan = draw_label_sets(train, class_set, [a], n_per_class=20, seed=0, max_findings=2)
    assert set(plan.source_row) <= {0, 1, 5} and len(plan) == 20
    assert all(f[0] == "pneumothorax" and len(f) <= 2 and "normal" not in f for f in plan.findings)
    Y = plan_labels(plan, class_set)
    assert (Y[:, a] == 1).all() and (Y.sum(1) == plan.findings.map(len)).all()
    for prompt, findings in zip(plan.prompt, plan.findings):
        assert all(f in prompt for f in findings), prompt
    # row 0 has three findings: with max_findings = 2 the label keeps the target and the first other
    from_row0 = plan[plan.source_row == 0]
    assert all(f == ["pneumothorax", class_set.classes[min(b, c)]] for f in from_row0.findings)
    s = as_image_set(np.zeros((20, 8, 8), np.uint8), plan, class_set, 0.5)
    assert np.array_equal(s.Y, Y) and np.allclose(s.weights, 0.5) and s.source == "synthetic"
    empty = int(np.flatnonzero(train.Y.sum(0) == 0)[0])
    with pytest.raises(ValueError, match="no training row"):
        draw_label_sets(train, class_set, [empty], 3)


def test_the_synthetic_budget_is_a_multiple_of_each_classs_real_positives(class_set):
    train, (a, b, c, n) = small_train_set(class_set)       # positives: a 3, b 3, c 2
    cfg = load_config("smoke", {"diffusion.budget_multiple": 2.5})
    assert budget_counts(cfg, train, [a, b, c]) == [8, 8, 5]            # round(2.5 * 3) = 8, round(2.5 * 2) = 5
    assert budget_counts(cfg, train, [a, c], scale=0.5) == [4, 2]       # round(3.75), round(2.5): numpy's even rounding
    assert budget_counts(cfg, train, [c], scale=0.01) == [1]            # never less than one image a class
    fixed = cfg.replace({"diffusion.budget_multiple": None, "diffusion.n_per_class": 7})
    assert budget_counts(fixed, train, [a, b, c]) == [7, 7, 7] and budget_counts(fixed, train, [a], 2.0) == [14]
    plan = synthetic_plan(cfg, train, class_set, [a, c], seed=3)
    assert plan.groupby("target_id", sort=False).size().to_dict() == {a: 8, c: 5}
    assert plan.equals(synthetic_plan(cfg, train, class_set, [a, c], seed=3))    # the generator's and the ideal's rows
    assert not plan.equals(synthetic_plan(cfg, train, class_set, [a, c], seed=4))
    with pytest.raises(ValueError, match="2 counts for 1 target"):
        draw_label_sets(train, class_set, [a], [3, 4])


def test_shuffled_labels_give_every_image_another_targets_labels(class_set):
    from trcgl.controls import shuffled_labels

    train, (a, b, c, n) = small_train_set(class_set)
    plan = draw_label_sets(train, class_set, [a, b, c], [5, 4, 3], seed=0)
    s = as_image_set(np.arange(12, dtype=np.uint8)[:, None, None] * np.ones((1, 8, 8), np.uint8), plan, class_set, 0.5)
    out = shuffled_labels(s, seed=1)
    assert np.array_equal(out.images, s.images) and np.allclose(out.weights, 0.5)
    assert (out.rows["target_id"].to_numpy() != s.rows["target_id"].to_numpy()).all()   # no image keeps its target
    assert sorted(map(tuple, out.Y.tolist())) == sorted(map(tuple, s.Y.tolist()))       # the same label vectors
    one = pd.DataFrame({"target": ["pneumothorax"] * 4, "target_id": [a] * 4, "source_row": [0, 1, 5, 0],
                        "findings": [["pneumothorax"], ["pneumothorax", class_set.classes[b]],
                                     ["pneumothorax", class_set.classes[c]],
                                     ["pneumothorax", class_set.classes[b], class_set.classes[c]]],
                        "prompt": ["p"] * 4, "ImageID": [f"s{i}" for i in range(4)]})
    single = as_image_set(np.zeros((4, 8, 8), np.uint8), one, class_set, 0.5)
    moved = shuffled_labels(single, seed=0)                 # one target: a derangement of four distinct label sets
    assert all(not np.array_equal(moved.Y[i], single.Y[i]) for i in range(4))
    assert sorted(map(tuple, moved.Y.tolist())) == sorted(map(tuple, single.Y.tolist()))


def test_at_count_cuts_a_set_to_a_dose_keeping_its_classes_in_proportion(class_set):
    """``at_count``: n images of the set, seeded, each target class given its share by largest
    remainders (hand-computed below), without repeats until a class must cycle; labels and weights
    of each picked image unchanged; the same seed the same images."""
    from trcgl.controls import at_count

    train, (a, b, c, n) = small_train_set(class_set)
    plan = draw_label_sets(train, class_set, [a, b, c], [6, 3, 1], seed=0)
    s = as_image_set(np.arange(10, dtype=np.uint8)[:, None, None] * np.ones((1, 8, 8), np.uint8), plan, class_set, 0.5)
    per_target = lambda out: out.rows["target_id"].value_counts().to_dict()      # noqa: E731
    half = at_count(s, 5, seed=0)
    # shares 3.0, 1.5, 0.5: floors 3, 1, 0; the remaining image goes to the tied remainder (0.5) of the
    # lower class index
    low = min(b, c)
    assert per_target(half) == {a: 3, b: 1 + (low == b), c: int(low == c)} and len(set(half.images[:, 0, 0])) == 5
    for k in range(5):
        i = int(half.images[k, 0, 0])                       # the pixel value is the source index
        assert np.array_equal(half.Y[k], s.Y[i]) and half.weights[k] == s.weights[i]
    assert np.array_equal(at_count(s, 5, seed=0).images, half.images)
    double = at_count(s, 20, seed=1)                        # more than the set: each class cycles through its images
    assert per_target(double) == {a: 12, b: 6, c: 2} and len(set(double.images[:, 0, 0])) == 10
    assert len(at_count(s, 0, seed=0)) == 0
    with pytest.raises(ValueError, match="cannot take"):
        at_count(s, -1, seed=0)


def test_without_labels_removes_the_named_classes_and_nothing_else(class_set):
    """``without_labels`` (the bare control): the named classes' label columns set to 0 and their
    names dropped from the rows' findings, every other label, image and weight unchanged; an
    unknown class is refused."""
    from trcgl.controls import without_labels

    train, (a, b, c, n) = small_train_set(class_set)
    plan = draw_label_sets(train, class_set, [a, b, c], [3, 2, 1], seed=0)
    s = as_image_set(np.arange(6, dtype=np.uint8)[:, None, None] * np.ones((1, 8, 8), np.uint8), plan, class_set, 0.5)
    name_a, name_b = class_set.classes[a], class_set.classes[b]
    out = without_labels(s, [name_a, name_b])
    assert out.Y[:, [a, b]].sum() == 0 and s.Y[:, a].sum() >= 3 and s.Y[:, b].sum() >= 2
    keep = [k for k in range(len(class_set.classes)) if k not in (a, b)]
    assert np.array_equal(out.Y[:, keep], s.Y[:, keep]) and out.Y[:, c].sum() >= 1
    assert np.array_equal(out.images, s.images) and np.array_equal(out.weights, s.weights)
    for before, after in zip(s.rows["findings"], out.rows["findings"]):
        assert list(after) == [f for f in before if f not in (name_a, name_b)]
    assert s.Y[:, a].sum() >= 3                              # the input is not changed
    with pytest.raises(ValueError, match="not in the image set"):
        without_labels(s, ["no such finding"])


def test_the_null_control_is_the_ideal_image_without_its_target_lesions(class_set):
    """``ideal_renders(..., hidden=targets)``: the same label sets and weights as the ideal
    generator, no mask (nothing drawn) for a hidden class while the other findings keep theirs;
    an image with no hidden finding is the ideal image pixel for pixel, one with a hidden finding
    differs from it; an unknown hidden class is refused."""
    from trcgl.controls import ideal_renders
    from trcgl.data.phantom import PhantomRenderer

    train, (a, b, c, n) = small_train_set(class_set)
    train = dataclasses.replace(train, rows=train.rows.assign(labels=[[] for _ in range(len(train))]))
    plan = draw_label_sets(train, class_set, [a, b], [2, 2], seed=0)
    budget = as_image_set(np.zeros((4, 16, 16), np.uint8), plan, class_set, 0.5)
    renderer = PhantomRenderer(class_set.classes, size=64)
    ideal = ideal_renders(renderer, budget, train, 16, 0)
    null = ideal_renders(renderer, budget, train, 16, 0, hidden=[class_set.classes[a]])
    assert np.array_equal(null.Y, ideal.Y) and np.array_equal(null.weights, ideal.weights)
    assert null.rows["ImageID"].tolist() != ideal.rows["ImageID"].tolist()   # told apart in any union
    masks = lambda s: np.unpackbits(s.masks_packed, axis=-1)            # noqa: E731
    assert masks(null)[:, a].sum() == 0
    has_a = null.Y[:, a] == 1
    assert has_a.any() and (~has_a).any()
    assert masks(ideal)[has_a, a].sum() > 0
    for k in range(len(null)):
        same = np.array_equal(null.images[k], ideal.images[k])
        assert same != bool(has_a[k]), k
        others = [j for j in np.flatnonzero(null.Y[k]) if j != a]
        assert np.array_equal(masks(null)[k, others], masks(ideal)[k, others]) or has_a[k], k
    with pytest.raises(ValueError, match="not in the image set"):
        ideal_renders(renderer, budget, train, 16, 0, hidden=["no such class"])


def test_the_retrieval_control_takes_the_pools_own_images_of_each_target_at_the_budget(class_set):
    """``retrieved``: per target class as many pool images *with* that class as the budget asked
    (cycled where the pool has fewer), each with its own labels and pixels and the budget's loss
    weight; the controls table has the row only when the generator pretrains on the pool."""
    from trcgl.controls import retrieved
    from trcgl.tables import RETRIEVED_ROW, control_rows

    pool, (a, b, c, n) = small_train_set(class_set)
    pool = dataclasses.replace(pool, images=np.arange(6, dtype=np.uint8)[:, None, None] * np.ones((1, 8, 8), np.uint8))
    plan = draw_label_sets(pool, class_set, [a, c], [5, 2], seed=0)
    budget = as_image_set(np.zeros((7, 8, 8), np.uint8), plan, class_set, 0.5)
    out = retrieved(pool, budget, seed=0)
    assert len(out) == 7 and np.allclose(out.weights, 0.5) and out.source == "retrieved"
    idx = out.images[:, 0, 0].astype(int)                   # which pool row each image is
    assert np.array_equal(out.Y, pool.Y[idx])              # the pool rows' own labels
    blocks = {a: 5, c: 2}
    start = 0
    for target in sorted(blocks):                           # by target id, each its budget's count
        taken = idx[start:start + blocks[target]]
        assert (pool.Y[taken, target] == 1).all()
        start += blocks[target]
    assert sorted(set(idx[:5] if a < c else idx[2:])) == [0, 1, 5]    # every pneumothorax row, cycled to 5
    assert out.rows["ImageID"].is_unique
    cfg = load_config("smoke")
    assert RETRIEVED_ROW not in [r.name for r in control_rows(cfg)]
    on = cfg.replace({"diffusion.pretrain_pool": 100})
    assert [r.name for r in control_rows(on)][-1] == RETRIEVED_ROW


def test_filter_thresholds_are_quantiles_of_real_negatives():
    P = np.array([[0.1, 0.9], [0.2, 0.8], [0.3, 0.1], [0.9, 0.2], [0.5, 0.3]])
    Y = np.array([[0, 1], [0, 1], [0, 0], [1, 0], [0, 0]])
    t = filter_thresholds(P, Y, 0.5)
    assert np.allclose(t, [np.median([0.1, 0.2, 0.3, 0.5]), np.median([0.1, 0.2, 0.3])])
    assert list(keep_mask(np.array([0.3, 0.2, 0.21]), np.array([0, 0, 1]), t)) == [True, False, True]
    with pytest.raises(ValueError):
        filter_thresholds(P, Y, 1.0)
    # the real positives that pass (hand count): class 0 has one positive, 0.9 > 0.25; class 1 two,
    # 0.9 and 0.8 > 0.2; a class without positives is NaN
    rates = real_pass_rates(P, Y, t)
    assert np.allclose(rates, [1.0, 1.0])
    rates = real_pass_rates(P, Y, np.array([0.95, 0.85]))
    assert np.allclose(rates, [0.0, 0.5])
    assert np.isnan(real_pass_rates(P[:, :1], np.zeros((5, 1)), t[:1])[0])


def test_frechet_distance_matches_the_closed_form():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (4000, 1))
    b = rng.normal(2, 3, (4000, 1))
    ma, mb, sa, sb = a.mean(), b.mean(), a.std(ddof=1), b.std(ddof=1)
    assert np.isclose(frechet_distance(a, b), (ma - mb) ** 2 + (sa - sb) ** 2, rtol=1e-6)
    x = rng.normal(size=(50, 3))
    assert abs(frechet_distance(x, x)) < 1e-6
    assert np.isclose(mean_pairwise_distance(np.array([[0, 0], [3, 4], [0, 8]])), (5 + 8 + 5) / 3)


def test_consistency_table_compares_synthetic_with_unconditional_and_real():
    classes = ["x", "y", "z"]
    P_s = np.array([[0.9, 0.1, 0.0], [0.8, 0.2, 0.0], [0.1, 0.3, 0.0], [0.1, 0.2, 0.0]])
    targets_s = [0, 0, 1, 1]
    P_u = np.array([[0.1, 0.25, 0.0], [0.2, 0.25, 0.0], [0.1, 0.25, 0.0]])
    P_r = np.array([[0.7, 0.1, 0.0], [0.1, 0.9, 0.0]])
    Y_r = np.array([[1, 0, 0], [0, 1, 0]])
    t = consistency_table(classes, [0, 1], P_s, targets_s, P_u, P_r, Y_r, n_boot=200)
    assert np.isclose(t.loc["x", "synthetic"], 0.85) and np.isclose(t.loc["x", "unconditional"], 0.4 / 3)
    assert np.isclose(t.loc["x", "synthetic > 0.5"], 1.0) and np.isclose(t.loc["y", "real with class"], 0.9)
    assert t.loc["x", "above baseline"] and not t.loc["y", "above baseline"]
    d, lo, hi = bootstrap_difference(np.array([1.0, 1.0]), np.array([0.0, 0.0]))
    assert (d, lo, hi) == (1.0, 1.0, 1.0)


def test_target_groups_and_oracle_rows(paper_cohort):
    cfg = load_config("smoke", {"diffusion.oracle_per_class": 5})
    tails = target_classes(cfg, paper_cohort.groups)
    assert len(tails) == 6 and all(paper_cohort.groups[i] == "tail" for i in tails)
    both = target_classes(cfg.replace({"diffusion.target_groups": ["tail", "medium"]}), paper_cohort.groups)
    assert len(both) == 17
    with pytest.raises(ValueError, match="unknown diffusion.target_groups item .rare."):
        target_classes(cfg.replace({"diffusion.target_groups": ["rare"]}), paper_cohort.groups)
    exclude = np.flatnonzero(paper_cohort.split == "train")[:5000]
    idx = oracle_rows(cfg, paper_cohort, exclude, seed=0)
    assert (paper_cohort.split[idx] == "train").all() and not set(idx) & set(exclude)
    per_class = paper_cohort.Y[idx].sum(0)
    assert (per_class >= 5).all() and len(idx) == 5 * paper_cohort.Y.shape[1]


def test_library_versions_equal_the_hand_written_formulas_they_replace():
    """pdist and scipy.stats.bootstrap give what the removed hand-written code gave."""
    rng = np.random.default_rng(3)
    f = rng.normal(size=(40, 7))
    d = np.sqrt(((f[:, None] - f[None]) ** 2).sum(-1))           # the old N x N x D formula
    assert np.isclose(mean_pairwise_distance(f), d[np.triu_indices(len(f), 1)].mean(), rtol=1e-12)
    a, b = rng.random(23), rng.random(31) * 0.5
    for seed, n, level in ((0, 1000, 0.95), (7, 200, 0.9)):
        old = np.random.default_rng(seed)                          # the old percentile bootstrap
        diffs = a[old.integers(0, len(a), (n, len(a)))].mean(1) - b[old.integers(0, len(b), (n, len(b)))].mean(1)
        lo, hi = np.quantile(diffs, [(1 - level) / 2, (1 + level) / 2])
        got = bootstrap_difference(a, b, n=n, seed=seed, level=level)
        assert np.allclose(got, (a.mean() - b.mean(), lo, hi), rtol=1e-12, atol=0)
    assert np.isnan(bootstrap_difference(np.array([0.5]), b)[1])   # one value: no interval


def test_the_oracle_view_scores_and_pools_in_one_pass_and_remembers_each_set():
    """oracle_view's probabilities are predict()'s, its features the backbone's pooled maps through
    the data loader's own normalisation; a set shown again is not scored again."""
    from types import SimpleNamespace

    import torch

    from trcgl.data.datasets import XrayDataset, make_loader
    from trcgl.diffusion import oracle as O
    from trcgl.diffusion.generate import image_set_of
    from trcgl.models import build_model
    from trcgl.tables import gap_only
    from trcgl.train import predict

    classes = ["a", "b", "c"]
    cfg = gap_only(load_config("smoke"))
    torch.manual_seed(0)
    model = build_model(cfg, 3, np.eye(3, dtype=np.uint8).repeat(4, 0)).eval()
    run = SimpleNamespace(model=model, mean=0.4, std=0.2)
    images = np.random.default_rng(0).integers(0, 256, (150, 64, 64), dtype=np.uint8)
    P, F = O.oracle_view(run, images, classes, torch.device("cpu"))
    s = image_set_of(images, classes)
    assert np.allclose(P, predict(model, s, 0.4, 0.2, torch.device("cpu")), atol=1e-6)
    with torch.no_grad():
        ref = torch.cat([model.backbone(x).mean(dim=(2, 3)) for x, _, _ in
                         make_loader(XrayDataset(s, 0.4, 0.2), 64, shuffle=False)]).numpy()
    assert F.shape == ref.shape and np.allclose(F, ref, atol=1e-5)
    calls = []
    hook = model.backbone.register_forward_hook(lambda *_: calls.append(1))
    try:
        P2, _ = O.oracle_view(run, images.copy(), classes, torch.device("cpu"))       # same content: remembered
        assert P2 is P and not calls
        O.oracle_view(run, images[::-1].copy(), classes, torch.device("cpu"))        # other content: scored
        assert calls
    finally:
        hook.remove()
    assert not P.flags.writeable
