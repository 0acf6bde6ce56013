"""A fair task: every lesion is wide enough to be seen at the training resolution.

Measured at the `cpu` profile's sizes (the renderer draws at ``phantom.render_size`` and the
classifier sees ``data.image_size``), over several patients per class:

* the *visible* lesion, i.e. the pixels where the image with the finding differs from the same
  patient without it by at least half the largest difference (the lesion's full width at half
  maximum), is mostly at least 1.5 training pixels wide: at least half of it survives a
  morphological opening with a disc 1.5 training pixels across, and some of it does in every
  render. A line thinner than that (the old azygos fissure or subcutaneous streaks, under a pixel
  at 64 px) is removed by the opening and fails.
* the stored mask, max-pooled to the training resolution, is at least 2 pixels wide somewhere.

Findings that reshape anatomy (modifier classes: a bigger heart, a curved spine, hyperinflated
lungs, ...) change contours rather than draw a lesion; their finding is the organ itself, whose
mask (heart, spine, knob, lungs) is checked instead.
"""
import numpy as np
import pytest
from scipy import ndimage

from trcgl import load_config
from trcgl.data.padchest import load_class_set
from trcgl.data.phantom import LESIONS, PhantomRenderer, downsample

CLASSES = load_class_set("paper").classes
CPU = load_config("cpu")
RENDER, OUT = CPU.phantom.render_size, CPU.data.image_size
PATIENTS = [f"width-{k}" for k in range(6)]
DRAWN = [c for c in CLASSES if c != "normal" and LESIONS[c].modifier is None]
MODIFIED = [c for c in CLASSES if LESIONS[c].modifier is not None]


def disc(diameter: float) -> np.ndarray:
    r = diameter / 2
    n = int(np.ceil(r))
    yy, xx = np.mgrid[-n:n + 1, -n:n + 1]
    return xx ** 2 + yy ** 2 <= r ** 2 + 1e-9


def wide_part(region: np.ndarray, diameter: float) -> np.ndarray:
    """The part of a binary region at least ``diameter`` pixels wide (opening with a disc)."""
    return ndimage.binary_opening(region, disc(diameter))


@pytest.fixture(scope="module")
def renderer():
    return PhantomRenderer(CLASSES, size=RENDER, out_size=OUT)


def test_the_measure_fails_a_thin_line_and_passes_a_wide_one():
    line = np.zeros((RENDER, RENDER), bool)
    line[40:42, 10:100] = True  # 2 render px = 1 training px wide
    band = np.zeros((RENDER, RENDER), bool)
    band[40:44, 10:100] = True  # 4 render px = 2 training px wide
    d = 1.5 * RENDER / OUT
    assert not wide_part(line, d).any()
    assert wide_part(band, d).sum() == band.sum()


@pytest.mark.parametrize("name", DRAWN)
def test_every_lesion_is_at_least_one_and_a_half_training_pixels_wide(renderer, name):
    d = 1.5 * RENDER / OUT
    total = wide = 0
    for patient in PATIENTS:
        with_img, masks = renderer.render(patient, [name])
        without_img, _ = renderer.render(patient, [])
        diff = np.abs(with_img - without_img)
        visible = diff >= 0.5 * diff.max()
        kept = wide_part(visible, d)
        assert kept.any(), (name, patient, "no part of the lesion is 1.5 training px wide")
        total, wide = total + visible.sum(), wide + kept.sum()
        _, small = downsample(with_img, masks, OUT)
        assert ndimage.binary_erosion(small[CLASSES.index(name)], np.ones((2, 2), bool)).any(), (name, patient)
    assert wide / total >= 0.5, (name, wide / total)


@pytest.mark.parametrize("name", MODIFIED)
def test_anatomy_findings_have_wide_masks(renderer, name):
    for patient in PATIENTS[:3]:
        img, masks = renderer.render(patient, [name])
        _, small = downsample(img, masks, OUT)
        m = small[CLASSES.index(name)]
        assert ndimage.binary_erosion(m, disc(3)).sum() >= 4, (name, patient)


def test_thin_lesions_scale_with_the_training_resolution():
    """The same azygos fissure line is drawn thicker (in canvas pixels) for a coarser training image."""
    fine = PhantomRenderer(CLASSES, size=RENDER, out_size=RENDER)
    coarse = PhantomRenderer(CLASSES, size=RENDER, out_size=OUT // 2)
    base, _ = fine.render("width-azygos", [])
    area = []
    for r in (fine, coarse):
        img, _ = r.render("width-azygos", ["azygos lobe"])
        diff = np.abs(img - base)
        area.append((diff >= 0.5 * diff.max()).sum())
    assert area[1] > 2 * area[0]
