import numpy as np
import pytest

from trcgl.data.padchest import load_class_set
from trcgl.data.phantom import LESIONS, PhantomRenderer, downsample

CLASSES = load_class_set("paper").classes
# Findings drawn as a local change (the others reshape anatomy, e.g. kyphosis crowds every rib).
FOCAL = ["infiltrates", "pleural effusion", "atelectasis", "pneumonia", "hilar enlargement",
         "costophrenic angle blunting", "pleural thickening", "nodule", "rib fracture", "bronchiectasis",
         "aortic atheromatosis", "hiatal hernia", "pulmonary fibrosis", "emphysema", "pulmonary edema",
         "pulmonary mass", "lung metastasis", "azygos lobe", "pneumothorax", "mediastinal mass",
         "subcutaneous emphysema", "pneumoperitoneo", "cardiomegaly", "aortic elongation", "scoliosis"]


@pytest.fixture(scope="module")
def renderer():
    return PhantomRenderer(CLASSES, size=128)


def test_every_class_has_a_visual_model():
    assert set(CLASSES) == set(LESIONS)


def test_deterministic_per_image_id(renderer):
    a_img, a_m = renderer.render("row-1", ["nodule", "cardiomegaly"])
    b_img, b_m = renderer.render("row-1", ["nodule", "cardiomegaly"])
    c_img, _ = renderer.render("row-2", ["nodule", "cardiomegaly"])
    assert np.array_equal(a_img, b_img) and np.array_equal(a_m, b_m)
    assert not np.allclose(a_img, c_img)
    assert a_img.dtype == np.float32 and 0 <= a_img.min() and a_img.max() <= 1


def test_masks_exist_exactly_for_the_drawn_classes(renderer):
    for name in CLASSES:
        _, masks = renderer.render(f"id-{name}", [name])
        k = CLASSES.index(name)
        others = np.delete(masks, k, axis=0)
        assert not others.any(), name
        assert masks[k].any() == (name != "normal"), name


@pytest.mark.parametrize("name", FOCAL)
def test_the_lesion_changes_the_image_inside_its_mask(renderer, name):
    """Same patient with and without the finding: the change concentrates inside the mask."""
    noise_free = PhantomRenderer(CLASSES, size=128)
    with_img, masks = noise_free.render("patient-7", [name])
    without_img, _ = noise_free.render("patient-7", [])
    mask = masks[CLASSES.index(name)]
    diff = np.abs(with_img - without_img)
    inside, outside = diff[mask].mean(), diff[~mask].mean()
    assert inside > 10 * outside, (name, inside, outside)
    assert diff[~mask].sum() < 0.4 * diff.sum(), name  # most of the change lies inside the mask


def test_label_noise_one_draws_nothing_and_difficulty_fades(renderer):
    noisy = PhantomRenderer(CLASSES, size=128, label_noise=1.0)
    _, masks = noisy.render("row-3", ["nodule", "pleural effusion"])
    assert not masks.any()
    easy = PhantomRenderer(CLASSES, size=128, difficulty=0.5)
    hard = PhantomRenderer(CLASSES, size=128, difficulty=4.0)
    base, _ = easy.render("row-4", [])
    e_img, e_m = easy.render("row-4", ["pulmonary mass"])
    h_img, h_m = hard.render("row-4", ["pulmonary mass"])
    k = CLASSES.index("pulmonary mass")
    assert np.abs(e_img - base)[e_m[k]].mean() > 2 * np.abs(h_img - base)[h_m[k]].mean()


def test_rarity_changes_nothing_by_default_and_tail_subtlety_makes_a_class_subtler():
    rarity = np.zeros(len(CLASSES))
    rarity[CLASSES.index("nodule")] = 1.0
    plain = PhantomRenderer(CLASSES, size=128)
    default = PhantomRenderer(CLASSES, size=128, rarity=rarity)  # a fair task: rarity alone changes nothing
    rare = PhantomRenderer(CLASSES, size=128, tail_subtlety=0.8, rarity=rarity)
    base, _ = plain.render("row-5", [])
    c_img, c_m = plain.render("row-5", ["nodule"])
    d_img, d_m = default.render("row-5", ["nodule"])
    r_img, _ = rare.render("row-5", ["nodule"])
    assert np.array_equal(c_img, d_img) and np.array_equal(c_m, d_m)
    assert np.abs(c_img - base).sum() > 1.5 * np.abs(r_img - base).sum()


def test_hidden_classes_are_not_drawn_and_the_others_are():
    hide = PhantomRenderer(CLASSES, size=64, hidden_classes=["cardiomegaly", "nodule"])
    show = PhantomRenderer(CLASSES, size=64)
    img, masks = hide.render("row-6", ["cardiomegaly", "nodule", "pleural effusion"])
    effusion_only, effusion_masks = show.render("row-6", ["pleural effusion"])
    # no lesion and no anatomy change (cardiomegaly's bigger heart) for a hidden class
    assert np.array_equal(img, effusion_only) and np.array_equal(masks, effusion_masks)
    assert masks[CLASSES.index("pleural effusion")].any()
    assert not masks[CLASSES.index("cardiomegaly")].any() and not masks[CLASSES.index("nodule")].any()
    with pytest.raises(ValueError, match="hidden_classes"):
        PhantomRenderer(CLASSES, hidden_classes=["Support Devices"])


def test_unknown_class_and_bad_difficulty_are_refused():
    from trcgl.errors import TrcglError

    with pytest.raises(TrcglError, match="no visual model"):
        PhantomRenderer(["Support Devices"])
    with pytest.raises(ValueError, match="difficulty"):
        PhantomRenderer(CLASSES, difficulty=0)


def test_downsample_keeps_small_masks():
    img = np.zeros((128, 128), np.float32)
    masks = np.zeros((2, 128, 128), bool)
    masks[1, 10, 10] = True  # one pixel
    small, m = downsample(img, masks, 32)
    assert small.shape == (32, 32) and m.shape == (2, 32, 32)
    assert m[1].sum() == 1 and not m[0].any()


def test_one_registry_record_per_class():
    import dataclasses

    for name, spec in LESIONS.items():
        assert spec.name == name and callable(spec.draw)
        assert spec.modifier is None or callable(spec.modifier)
        x0, y0, x1, y1 = spec.default_box
        assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1, name
    with pytest.raises(dataclasses.FrozenInstanceError):
        LESIONS["nodule"].strength = 1.0
    # sidedness comes from the record: a bilateral class without a side in the row is drawn on both
    renderer = PhantomRenderer(CLASSES, size=64)
    rng = np.random.default_rng(0)
    assert renderer.placement("pulmonary edema", [], rng).side == "B"
    assert {renderer.placement("pneumonia", [], np.random.default_rng(k)).side for k in range(20)} == {"R", "L"}
