"""A procedural frontal chest radiograph renderer: the embedded default image source.

PadChest's pixels cannot be shipped; its labels can. For each real label row the renderer
draws a synthetic posteroanterior radiograph: soft tissue, two lung fields with vascular
markings, heart, mediastinum and aortic knob, spine, ribs, clavicles, diaphragm domes with
costophrenic angles, film grain and exposure variation. Anatomy varies per patient and is
seeded by the image id, so an image is the same every time it is rendered.

Every class of the ``paper`` set has one record in the registry ``LESIONS`` (a
:class:`LesionSpec`: strength, lesion model, default region, anatomy modifier, sidedness), drawn
where that row's own sentence-level localizations put it (falling back to the class's localization statistics from
the real table). Because the renderer draws each finding it also returns its mask, which later
chapters use to score attention maps against ground truth.

Conventions: coordinates are fractions of the image, x to the right, y down; the patient's
right is the image's left (radiographic convention), so side ``"R"`` means small x.
Intensities are a density map (bright = dense), mapped to [0, 1] at the end.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Callable, Mapping, Sequence

import numpy as np
from scipy.ndimage import distance_transform_edt, gaussian_filter

from ..errors import TrcglError


class PhantomError(TrcglError, ValueError):
    """A renderer setting that cannot be drawn (unknown class, bad difficulty or size)."""


def _location_boxes() -> dict[str, dict]:
    return json.loads(resources.files("trcgl.data").joinpath("locations.json").read_text())["locations"]


def stable_seed(text: str, salt: str = "") -> int:
    """A 63-bit seed from a string (same on every machine and Python run)."""
    return int.from_bytes(hashlib.sha256(f"{salt}|{text}".encode()).digest()[:8], "little") >> 1


#: Smallest half-width of a drawn lesion (lines, rims, walls, small round opacities), in pixels of
#: the training resolution: thin findings scale with the output so none is thinner than ~2 pixels.
MIN_HALF_WIDTH = 1.0


@dataclass
class Placement:
    """Where one finding goes: a side (R = image left, L = image right, B = both) and a box."""

    side: str
    box: tuple[float, float, float, float] | None
    tokens: tuple[str, ...] = ()


@dataclass
class Anatomy:
    """Per-patient anatomy parameters; some findings (cardiomegaly, scoliosis...) modify them."""

    body_half_width: float
    body_cx: float
    apex_y: float
    dome_y: dict  # side -> y of the dome's top
    dome_drop: float  # how far the lateral costophrenic angle lies below the dome's top
    lung_cx: dict
    lung_rx: float
    heart_ctr: float  # cardiothoracic ratio
    knob_r: float
    knob_xy: tuple[float, float]
    spine_amp: float = 0.0
    spine_arcs: int = 1
    rib_spacing: float = 1.0
    spine_density: float = 0.18
    hyperinflation: float = 0.0
    mediastinal_shift: float = 0.0


@dataclass
class Canvas:
    """The grid and the layers a lesion model may read or change."""

    size: int
    X: np.ndarray
    Y: np.ndarray
    rng: np.random.Generator
    anatomy: Anatomy
    lungs: dict = field(default_factory=dict)  # side -> soft mask
    markings: np.ndarray | None = None
    ribs: np.ndarray | None = None
    out_size: int | None = None  # the training resolution the image is downsampled to (None: size)

    @property
    def px(self) -> float:
        return 1.0 / self.size

    @property
    def out_px(self) -> float:
        """One pixel of the training resolution, as a fraction of the image."""
        return 1.0 / (self.out_size or self.size)

    def at_least(self, value: float, out_pixels: float = MIN_HALF_WIDTH) -> float:
        """``value`` (a fraction of the image), raised to ``out_pixels`` pixels of the training
        resolution: a half-thickness or radius no lesion model may go below, so that every lesion
        stays at least ``2 * MIN_HALF_WIDTH`` pixels wide in the images the classifier sees."""
        return max(value, out_pixels * self.out_px)

    def lung(self, side: str = "B") -> np.ndarray:
        if side == "B":
            return np.maximum(self.lungs["R"], self.lungs["L"])
        return self.lungs[side]


# ----------------------------------------------------------------------------- primitives

def _soft(v: np.ndarray, width: float) -> np.ndarray:
    """A smooth-enough step: 0 below -width, 1 above +width, linear between (cheaper than tanh)."""
    return np.clip(v * (0.5 / max(width, 1e-6)) + 0.5, 0.0, 1.0)


def ellipse(cv: Canvas, cx, cy, rx, ry, edge_px: float = 1.5) -> np.ndarray:
    """Soft-edged ellipse mask in [0, 1]."""
    d = np.sqrt(((cv.X - cx) / rx) ** 2 + ((cv.Y - cy) / ry) ** 2)
    return _soft(1.0 - d, edge_px * cv.px / max(min(rx, ry), 1e-6))


def blob(cv: Canvas, cx, cy, r, irregularity: float = 0.25, edge_px: float = 2.0) -> np.ndarray:
    """A round opacity with a lobulated border (a few random angular harmonics)."""
    ang = np.arctan2(cv.Y - cy, cv.X - cx)
    rr = np.full_like(ang, r)
    for k in (2, 3, 5):
        rr = rr * (1 + irregularity / k * np.sin(k * ang + cv.rng.uniform(0, 2 * np.pi)))
    d = np.hypot(cv.X - cx, cv.Y - cy) / rr
    return _soft(1.0 - d, edge_px * cv.px / max(r, 1e-6))


def curve_band(cv: Canvas, fy: Callable[[np.ndarray], np.ndarray], x0, x1, half_thickness, edge_px=1.0) -> np.ndarray:
    """Soft band of half-thickness around the curve y = fy(x) for x in [x0, x1] (thickness measured
    across the curve: the vertical distance is divided by sqrt(1 + fy'^2), so steep parts keep it)."""
    inside_x = _soft(cv.X - x0, edge_px * cv.px) * _soft(x1 - cv.X, edge_px * cv.px)
    h = 0.5 * cv.px
    slope = (fy(cv.X + h) - fy(cv.X - h)) / (2 * h)
    return inside_x * _soft(half_thickness - np.abs(cv.Y - fy(cv.X)) / np.sqrt(1 + slope ** 2), edge_px * cv.px)


def segment(cv: Canvas, p0, p1, half_thickness, edge_px=1.0) -> np.ndarray:
    """Soft line segment from p0 to p1."""
    (x0, y0), (x1, y1) = p0, p1
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((cv.X - x0) * dx + (cv.Y - y0) * dy) / max(dx * dx + dy * dy, 1e-12), 0, 1)
    d = np.hypot(cv.X - (x0 + t * dx), cv.Y - (y0 + t * dy))
    return _soft(half_thickness - d, edge_px * cv.px)


def smooth_noise(cv: Canvas, sigma_frac: float) -> np.ndarray:
    """Gaussian-filtered white noise scaled to unit standard deviation."""
    n = gaussian_filter(cv.rng.standard_normal((cv.size, cv.size)), sigma_frac * cv.size)
    return n / (n.std() + 1e-8)


def point_in(cv: Canvas, box, weight: np.ndarray | None = None) -> tuple[float, float]:
    """A random point in a box, preferring pixels where ``weight`` (e.g. a lung mask) is high."""
    x0, y0, x1, y1 = box
    for _ in range(40):
        x, y = cv.rng.uniform(x0, x1), cv.rng.uniform(y0, y1)
        if weight is None:
            return x, y
        i, j = min(int(y * cv.size), cv.size - 1), min(int(x * cv.size), cv.size - 1)
        if weight[i, j] > 0.7:
            return x, y
    if weight is not None:  # the box misses the region: take any pixel of the region
        ii, jj = np.nonzero(weight > 0.7)
        if len(ii):
            k = cv.rng.integers(len(ii))
            return (jj[k] + 0.5) / cv.size, (ii[k] + 0.5) / cv.size
    return (x0 + x1) / 2, (y0 + y1) / 2


def side_box(box, side: str):
    """Restrict a box to the image half of one side (R = image left)."""
    x0, y0, x1, y1 = box
    if side == "R":
        return (x0, y0, min(x1, 0.5), y1) if x0 < 0.5 else box
    if side == "L":
        return (max(x0, 0.5), y0, x1, y1) if x1 > 0.5 else box
    return box


def sides_of(side: str) -> list[str]:
    return ["R", "L"] if side == "B" else [side]


# ----------------------------------------------------------------------------- anatomy

def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    dome_r = rng.uniform(0.69, 0.73)
    return Anatomy(
        body_half_width=rng.uniform(0.41, 0.47), body_cx=0.5 + rng.normal(0, 0.008),
        apex_y=rng.uniform(0.11, 0.15), dome_y={"R": dome_r, "L": dome_r + rng.uniform(0.01, 0.04)},
        dome_drop=rng.uniform(0.05, 0.08), lung_cx={"R": 0.3 + rng.normal(0, 0.01), "L": 0.7 + rng.normal(0, 0.01)},
        lung_rx=rng.uniform(0.17, 0.19), heart_ctr=rng.uniform(0.38, 0.5),
        knob_r=rng.uniform(0.026, 0.04), knob_xy=(0.565 + rng.normal(0, 0.006), 0.30 + rng.normal(0, 0.01)),
        spine_arcs=int(rng.integers(1, 3)), rib_spacing=rng.uniform(0.95, 1.05),
    )


def spine_x(a: Anatomy, y: np.ndarray) -> np.ndarray:
    """The spine's centre line: straight, or a C (one arc) or S (two arcs) curve between y 0.1 and 0.8."""
    t = np.clip((y - 0.1) / 0.7, 0, 1)
    return a.body_cx + a.mediastinal_shift + a.spine_amp * np.sin(np.pi * t * a.spine_arcs)


def dome_line(a: Anatomy, side: str, x: np.ndarray, lung_cx: float, rx: float) -> np.ndarray:
    """y of the diaphragm under one lung: highest mid-lung, dropping to the costophrenic angle."""
    top = a.dome_y[side] + 0.05 * a.hyperinflation
    drop = a.dome_drop * (1 - 0.6 * a.hyperinflation)
    u = np.clip((x - lung_cx) / rx, -1.3, 1.3)
    lateral = -u if side == "R" else u  # +1 at the lateral wall
    return top + drop * (0.5 * (lateral + 1)) ** 2 - 0.01 * (1 - u ** 2)


def heart_geometry(a: Anatomy) -> tuple[float, float, float, float]:
    width = a.heart_ctr * 2 * a.body_half_width * 0.92
    cx = a.body_cx + a.mediastinal_shift + 0.16 * width
    ry = 0.1 + 0.12 * width
    return cx, a.dome_y["L"] + 0.03 * a.hyperinflation + 0.035 - ry, width / 2, ry


def build_anatomy(cv: Canvas) -> tuple[np.ndarray, dict]:
    """Density of the normal chest for this patient, and the layers lesions use."""
    a, X, Y = cv.anatomy, cv.X, cv.Y
    body = ellipse(cv, a.body_cx, 0.55, a.body_half_width, 0.62, edge_px=4)
    neck = ellipse(cv, a.body_cx, 0.0, 0.09, 0.16, edge_px=3)
    shoulders = ellipse(cv, a.body_cx, 0.2, a.body_half_width + 0.05, 0.12, edge_px=4)
    tissue = np.maximum.reduce([body, neck, shoulders])
    density = 0.5 * tissue

    hx, hy, hrx, hry = heart_geometry(a)
    heart = ellipse(cv, hx, hy, hrx, hry, edge_px=2)
    med_half = 0.055 + 0.01 * (Y > 0.35)
    mediastinum = _soft(med_half - np.abs(X - (a.body_cx + a.mediastinal_shift)), 2 * cv.px) * _soft(hy - Y, 3 * cv.px) * _soft(Y - 0.05, 3 * cv.px)
    knob = ellipse(cv, *a.knob_xy, a.knob_r, a.knob_r * 1.1)

    for side in ("R", "L"):
        cx, rx = a.lung_cx[side], a.lung_rx * (1 + 0.08 * a.hyperinflation)
        bottom = a.dome_y[side] + a.dome_drop + 0.05 + 0.05 * a.hyperinflation
        cy, ry = (a.apex_y + bottom) / 2, (bottom - a.apex_y) / 2
        shape = ellipse(cv, cx, cy, rx, ry, edge_px=2)
        above_dome = _soft(dome_line(a, side, X, cx, rx) - Y, 1.5 * cv.px)
        below_apex = _soft(Y - a.apex_y, 2 * cv.px)
        cv.lungs[side] = shape * above_dome * below_apex * (1 - heart) * (1 - mediastinum) * (1 - knob)
    lungs = cv.lung("B")
    density -= (0.4 + 0.05 * a.hyperinflation) * lungs

    # vascular markings: branching-looking texture that fades from the hila to the periphery
    hila_dist = np.minimum(np.hypot(X - (a.body_cx - 0.12), Y - 0.43), np.hypot(X - (a.body_cx + 0.12), Y - 0.43))
    fade = np.exp(-hila_dist / 0.16)
    veins = np.abs(smooth_noise(cv, 0.006))
    cv.markings = (0.05 * fade + 0.012) * np.clip(1.6 - veins, 0, None) * lungs
    density += cv.markings

    density += 0.2 * heart + 0.14 * mediastinum + 0.16 * knob
    trachea = segment(cv, (a.body_cx + a.mediastinal_shift, 0.0), (a.body_cx + a.mediastinal_shift + 0.005, 0.33), 0.016, 2)
    for sgn in (-1, 1):
        trachea = np.maximum(trachea, segment(cv, (a.body_cx + 0.005, 0.33), (a.body_cx + sgn * 0.06, 0.4), 0.009, 2))
    density -= 0.12 * trachea
    # abdomen below the domes
    for side, xs in (("R", X < a.body_cx), ("L", X >= a.body_cx)):
        below = _soft(Y - dome_line(a, side, X, a.lung_cx[side], a.lung_rx), 1.5 * cv.px)
        density += 0.1 * below * body * xs

    # spine with vertebral bodies
    sx = spine_x(a, Y)
    spine = _soft(0.035 - np.abs(X - sx), 1.5 * cv.px) * _soft(Y - 0.02, cv.px)
    vertebrae = 0.75 + 0.25 * np.cos(2 * np.pi * Y / (0.05 * a.rib_spacing)) ** 8
    density += a.spine_density * spine * vertebrae
    # ribs: posterior arcs on both sides, all ten pairs in one pass: a rib lies where the
    # "rib phase" (height above the arc through this x, in rib spacings) is near an integer
    spacing = 0.058 * a.rib_spacing
    u = np.clip(np.abs(X - a.body_cx) - 0.04, 0, None)
    phase = (Y - (a.apex_y - 0.03) + 0.12 * u - 0.9 * u ** 2) / spacing
    near = np.abs(phase - np.round(phase)) * spacing
    ribs = _soft(0.0065 - near, cv.px) * _soft(phase + 0.5, 0.1) * _soft(9.5 - phase, 0.1)
    ribs *= _soft(0.43 - u, 2 * cv.px) * _soft(np.abs(X - a.body_cx) - 0.035, cv.px)
    cv.ribs = ribs
    density += 0.06 * ribs * tissue
    # clavicles
    for sgn in (-1, 1):
        clav = segment(cv, (a.body_cx + sgn * 0.05, 0.16), (a.body_cx + sgn * 0.3, 0.1), 0.011)
        density += 0.13 * clav
    layers = {"heart": heart, "mediastinum": mediastinum, "knob": knob, "spine": spine, "tissue": tissue}
    return density, layers


# ----------------------------------------------------------------------------- lesion models
# Each model gets the canvas, its placement, its strength (density units, already scaled by the
# rarity and difficulty knobs) and a size factor; it returns (density change, mask field in [0, 1]).
# Anatomy modifiers (cardiomegaly, scoliosis, ...) act before the anatomy is drawn (LesionSpec.modifier).

def _mod_copd(a: Anatomy, rng, s):
    a.hyperinflation = rng.uniform(0.4, 1.0)


def _mod_cardiomegaly(a: Anatomy, rng, s):
    a.heart_ctr = rng.uniform(0.5, 0.62)


def _mod_aortic_elongation(a: Anatomy, rng, s):
    a.knob_r *= rng.uniform(1.2, 1.6)
    a.knob_xy = (a.knob_xy[0] + rng.uniform(0.005, 0.02), a.knob_xy[1] - rng.uniform(0.01, 0.03))


def _mod_scoliosis(a: Anatomy, rng, s):
    a.spine_amp = rng.uniform(0.025, 0.045) * rng.choice([-1, 1])


def _mod_kyphosis(a: Anatomy, rng, s):
    a.rib_spacing = rng.uniform(0.84, 0.92)
    a.spine_density = 0.22
    a.apex_y += 0.02


def _copd(cv, pl, s, size, layers):
    lungs = cv.lung("B")
    return -s * lungs * (0.6 + 0.4 * _soft(0.45 - cv.Y, 0.05)), lungs


def _cardiomegaly(cv, pl, s, size, layers):
    return np.zeros_like(cv.X), layers["heart"]


def _aortic_elongation(cv, pl, s, size, layers):
    return np.zeros_like(cv.X), layers["knob"]


def _scoliosis(cv, pl, s, size, layers):
    # the curve moves the spine off the midline: the finding is the curved spine and the gap it left
    a = cv.anatomy
    straight = _soft(0.035 - np.abs(cv.X - a.body_cx), 1.5 * cv.px)
    region = np.maximum(layers["spine"], straight) * _soft(cv.Y - 0.1, 0.01) * _soft(0.8 - cv.Y, 0.01)
    return np.zeros_like(cv.X), region


def _kyphosis(cv, pl, s, size, layers):
    return np.zeros_like(cv.X), layers["spine"] * _soft(cv.Y - 0.12, 0.01) * _soft(0.6 - cv.Y, 0.01)


def _infiltrates(cv, pl, s, size, layers):
    field_ = np.zeros_like(cv.X)
    for side in sides_of(pl.side):
        lung = cv.lung(side)
        for _ in range(cv.rng.integers(3, 7)):
            x, y = point_in(cv, side_box(pl.box, side), lung)
            field_ = np.maximum(field_, blob(cv, x, y, cv.rng.uniform(0.03, 0.055) * size, 0.4, edge_px=6))
    field_ *= cv.lung("B") * np.clip(0.7 + 0.3 * smooth_noise(cv, 0.01), 0, 1.3)
    return s * field_, field_


def _pleural_fluid(cv, pl, s, height, lateral_only=False):
    a = cv.anatomy
    fluid = np.zeros_like(cv.X)
    for side in sides_of(pl.side):
        cx, rx = a.lung_cx[side], a.lung_rx
        dome = dome_line(a, side, cv.X, cx, rx)
        lateral = np.clip((cx - cv.X) / rx if side == "R" else (cv.X - cx) / rx, -1, 1)
        rise = height * (0.45 + 0.55 * (lateral + 1) / 2)  # meniscus: higher at the chest wall
        if lateral_only:
            rise = rise * _soft(lateral - 0.35, 0.08)
        level = _soft(cv.Y - (dome - rise), 1.5 * cv.px)
        region = ellipse(cv, cx, (a.apex_y + a.dome_y[side]) / 2 + 0.05, rx * 1.08,
                         (a.dome_y[side] - a.apex_y) / 2 + 0.12, edge_px=2)
        fluid = np.maximum(fluid, level * region * _soft(dome + 0.03 - cv.Y, cv.px))
    return fluid


def _pleural_effusion(cv, pl, s, size, layers):
    fluid = _pleural_fluid(cv, pl, s, cv.rng.uniform(0.04, 0.14) * size)
    return s * fluid, fluid


def _cp_blunting(cv, pl, s, size, layers):
    fluid = _pleural_fluid(cv, pl, s, cv.rng.uniform(0.04, 0.065) * size, lateral_only=True)
    return s * fluid, fluid


def _atelectasis(cv, pl, s, size, layers):
    field_ = np.zeros_like(cv.X)
    for side in sides_of(pl.side):
        for _ in range(cv.rng.integers(1, 3)):  # one or two plate-like (discoid) bands
            x, y = point_in(cv, side_box(pl.box, side), cv.lung(side))
            half = cv.rng.uniform(0.07, 0.12) * size
            tilt = cv.rng.uniform(-0.15, 0.15)
            field_ = np.maximum(field_, segment(cv, (x - half, y - tilt * half), (x + half, y + tilt * half),
                                                cv.at_least(cv.rng.uniform(0.012, 0.02) * max(size, 0.6)), edge_px=1.5))
    field_ *= cv.lung("B")
    return s * field_, field_


def _pneumonia(cv, pl, s, size, layers):
    side = pl.side if pl.side != "B" else cv.rng.choice(["R", "L"])
    lung = cv.lung(side)
    x, y = point_in(cv, side_box(pl.box, side), lung)
    cons = blob(cv, x, y, cv.rng.uniform(0.06, 0.09) * size, 0.35, edge_px=5) * lung
    # air bronchograms: dark branching lines inside the consolidation
    bronchi = np.zeros_like(cv.X)
    for _ in range(3):
        ang = cv.rng.uniform(0, 2 * np.pi)
        bronchi = np.maximum(bronchi, segment(cv, (x, y), (x + 0.05 * np.cos(ang), y + 0.05 * np.sin(ang)), 0.003))
    return s * cons * (1 - 0.6 * bronchi), cons


def _hilar(cv, pl, s, size, layers):
    a = cv.anatomy
    field_ = np.zeros_like(cv.X)
    for side in sides_of(pl.side if pl.side in "RLB" else "B"):
        hx = a.body_cx + (-0.11 if side == "R" else 0.11)
        for _ in range(2):
            field_ = np.maximum(field_, blob(cv, hx + cv.rng.normal(0, 0.01), 0.42 + cv.rng.normal(0, 0.015),
                                             cv.rng.uniform(0.03, 0.045) * size, 0.3, edge_px=3))
    return s * field_, field_


def _chronic(cv, pl, s, size, layers):
    lungs = cv.lung("B")
    net = np.clip(1.0 - np.abs(smooth_noise(cv, cv.at_least(0.008, 2.0))) * 1.6, 0, 1) * lungs * _soft(cv.Y - 0.3, 0.08)
    return s * net, lungs * _soft(cv.Y - 0.3, 0.08)


def _vertebral_degenerative(cv, pl, s, size, layers):
    a = cv.anatomy
    field_ = np.zeros_like(cv.X)
    for _ in range(cv.rng.integers(4, 8)):  # marginal osteophytes: spurs off both sides of a vertebra
        y = cv.rng.uniform(0.3, 0.75)
        sx = float(spine_x(a, np.array(y)))
        for sgn in (-1, 1):
            field_ = np.maximum(field_, ellipse(cv, sx + sgn * 0.045, y, cv.at_least(0.02 * size), cv.at_least(0.01), edge_px=1))
    return s * field_, field_


def _pleural_thickening(cv, pl, s, size, layers):
    a = cv.anatomy
    field_ = np.zeros_like(cv.X)
    apical = pl.box is None or pl.box[3] <= 0.3
    for side in sides_of(pl.side):
        cx, rx = a.lung_cx[side], a.lung_rx
        lung = cv.lung(side)
        edge = np.clip(lung - gaussian_filter(lung, cv.at_least(0.012, 2.0) * cv.size), 0, None) * 4  # the lung's rim
        zone = _soft(0.26 - cv.Y, 0.02) if apical else _soft(cv.Y - 0.3, 0.03) * _soft(np.abs(cv.X - cx) - 0.6 * rx, 0.02)
        field_ = np.maximum(field_, np.clip(edge, 0, 1) * zone)
    return s * field_, (field_ > 0.1) * 1.0


def _round_lesions(cv, pl, count, rmin, rmax, irregular, size):
    field_ = np.zeros_like(cv.X)
    lungs = cv.lung("B")
    for i in range(count):
        side = pl.side if pl.side != "B" else ("R" if i % 2 == 0 else "L")
        x, y = point_in(cv, side_box(pl.box, side), cv.lung(side))
        field_ = np.maximum(field_, blob(cv, x, y, cv.at_least(cv.rng.uniform(rmin, rmax) * size), irregular, edge_px=1.2))
    return field_ * np.clip(lungs * 1.5, 0, 1)


def _nodule(cv, pl, s, size, layers):
    count = cv.rng.integers(2, 5) if "multiple nodules" in pl.tokens else 1
    field_ = _round_lesions(cv, pl, count, 0.025, 0.034, 0.1, max(size, 0.7))
    return s * field_, field_


def _mass(cv, pl, s, size, layers):
    field_ = _round_lesions(cv, pl, 1, 0.055, 0.08, 0.3, size)
    return s * field_, field_


def _metastasis(cv, pl, s, size, layers):
    pl = Placement("B", pl.box, pl.tokens)
    field_ = _round_lesions(cv, pl, int(cv.rng.integers(4, 9)), 0.01, 0.028, 0.08, max(size, 0.7))
    return s * field_, field_


def _rib_fracture(cv, pl, s, size, layers):
    """Healing fractures of two to four adjacent ribs at the same lateral position over the lung (a
    flail-like series): a fusiform callus (the rib thickened and denser over a few centimetres)
    crossed by the dark fracture line."""
    a = cv.anatomy
    side = pl.side if pl.side in ("R", "L") else cv.rng.choice(["R", "L"])
    sgn = -1 if side == "R" else 1
    spacing = 0.058 * a.rib_spacing
    k0 = cv.rng.integers(3, 6)
    u0 = cv.rng.uniform(0.18, 0.3)
    lateral = sgn * (cv.X - a.body_cx) - 0.04  # distance along this side's ribs (as in build_anatomy)
    U = np.clip(lateral, 0, None)
    this_side = _soft(lateral, cv.px)
    callus, gap, mask = np.zeros_like(cv.X), np.zeros_like(cv.X), np.zeros_like(cv.X)
    for j in range(int(cv.rng.integers(2, 5))):
        u = u0 + cv.rng.normal(0, 0.01)
        rib_y = a.apex_y - 0.03 + (k0 + j) * spacing - 0.12 * U + 0.9 * U ** 2  # the rib's centre line
        along = np.clip(1 - ((U - u) / (0.05 * size + 0.02)) ** 2, 0, None)  # 1 at the break, 0 beyond the callus
        off = np.abs(cv.Y - rib_y)
        callus = np.maximum(callus, _soft(0.0065 + cv.at_least(0.016) * along - off, cv.px) * (along > 0) * this_side)
        gap = np.maximum(gap, _soft(cv.at_least(0.003, 0.75) - np.abs(U - u), cv.px) * _soft(0.012 - off, cv.px) * this_side)
        mask = np.maximum(mask, _soft(0.025 - off, cv.px) * _soft(along - 0.02, 0.02) * this_side)
    return s * callus * (1 - 0.7 * gap), mask


def _bronchiectasis(cv, pl, s, size, layers):
    field_ = np.zeros_like(cv.X)
    region = np.zeros_like(cv.X)
    for side in sides_of(pl.side):
        x, y = point_in(cv, side_box(pl.box, side), cv.lung(side))
        for _ in range(cv.rng.integers(4, 8)):
            px, py = x + cv.rng.normal(0, 0.025), y + cv.rng.normal(0, 0.02)
            r = cv.rng.uniform(0.007, 0.012)
            wall = 2 * cv.at_least(0.0015)
            ring = ellipse(cv, px, py, r + wall, r + wall, 1) - ellipse(cv, px, py, r, r, 1)
            field_ = np.maximum(field_, np.clip(ring, 0, 1))
        region = np.maximum(region, ellipse(cv, x, y, 0.06, 0.05))
    return s * field_, region * cv.lung("B")


def _atheromatosis(cv, pl, s, size, layers):
    kx, ky = cv.anatomy.knob_xy
    r = cv.anatomy.knob_r
    inner = 0.8 * r
    outer = max(1.05 * r, inner + 2 * cv.at_least(0.125 * r))  # a calcified rim >= 2 output pixels thick
    rim = np.clip(ellipse(cv, kx, ky, outer, outer + 0.1 * r, 1) - ellipse(cv, kx, ky, inner, inner + 0.1 * r, 1), 0, 1)
    arc = rim * _soft(cv.X - kx + 0.3 * r, cv.px) * _soft(ky + 0.3 * r - cv.Y, cv.px)
    return s * arc, arc


def _hiatal_hernia(cv, pl, s, size, layers):
    a = cv.anatomy
    cx, cy = a.body_cx + 0.03 + cv.rng.normal(0, 0.01), heart_geometry(a)[1] + 0.04
    r = cv.rng.uniform(0.045, 0.065) * max(size, 0.7)
    sac = ellipse(cv, cx, cy, r * 1.2, r, edge_px=1.5)
    level = cy + cv.rng.uniform(-0.2, 0.2) * r
    air = sac * _soft(level - cv.Y, cv.px)
    fluid = sac * _soft(cv.Y - level, cv.px)
    wall = np.clip(ellipse(cv, cx, cy, r * 1.2 + 0.003, r + 0.003, 1) - sac, 0, 1)
    return -1.6 * s * air + 0.3 * s * fluid + 0.5 * s * wall, sac


def _fibrosis(cv, pl, s, size, layers):
    region = np.zeros_like(cv.X)
    for side in sides_of(pl.side if pl.side != "B" else "B"):
        region = np.maximum(region, cv.lung(side) * _box_field(cv, side_box(pl.box, side)))
    coarse = np.clip(1.0 - np.abs(smooth_noise(cv, cv.at_least(0.012, 2.0))) * 1.8, 0, 1)
    return s * coarse * region, region


def _box_field(cv: Canvas, box, soft=0.02):
    x0, y0, x1, y1 = box
    return _soft(cv.X - x0, soft) * _soft(x1 - cv.X, soft) * _soft(cv.Y - y0, soft) * _soft(y1 - cv.Y, soft)


def _emphysema(cv, pl, s, size, layers):
    field_ = np.zeros_like(cv.X)
    walls = np.zeros_like(cv.X)
    for i in range(cv.rng.integers(3, 6)):
        side = pl.side if pl.side != "B" else ("R" if i % 2 == 0 else "L")
        x, y = point_in(cv, side_box(pl.box, side), cv.lung(side))
        r = cv.rng.uniform(0.035, 0.06) * size
        bulla = ellipse(cv, x, y, r, r, 1.5)
        field_ = np.maximum(field_, bulla)
        walls = np.maximum(walls, np.clip(ellipse(cv, x, y, r + 0.003, r + 0.003, 1) - bulla, 0, 1))
    field_ *= cv.lung("B")
    return -s * field_ - cv.markings * field_ + 0.4 * s * walls, field_


def _edema(cv, pl, s, size, layers):
    a = cv.anatomy
    haze = np.zeros_like(cv.X)
    for dx in (-0.12, 0.12):
        haze = np.maximum(haze, np.exp(-(((cv.X - a.body_cx - dx) / 0.12) ** 2 + ((cv.Y - 0.45) / 0.11) ** 2)))
    haze *= cv.lung("B")
    kerley = np.zeros_like(cv.X)
    for side, xs in (("R", a.lung_cx["R"] - a.lung_rx * 0.85), ("L", a.lung_cx["L"] + a.lung_rx * 0.85)):
        for j in range(4):
            y = a.dome_y[side] - 0.02 - 0.018 * j
            kerley = np.maximum(kerley, segment(cv, (xs - 0.02, y), (xs + 0.02, y), cv.at_least(0.0025)))
    field_ = np.maximum(haze, kerley * cv.lung("B"))
    return s * field_, (haze > 0.3) * 1.0


def _azygos(cv, pl, s, size, layers):
    a = cv.anatomy
    x_end, y_end = a.body_cx - 0.055, 0.3 + cv.rng.normal(0, 0.01)
    x_top = a.lung_cx["R"] + cv.rng.uniform(0.02, 0.06)

    def fy(x):
        t = np.clip((x - x_top) / (x_end - x_top), 0, 1)
        return a.apex_y + (y_end - a.apex_y) * t ** 2

    line = curve_band(cv, fy, x_top, x_end, cv.at_least(0.0035), edge_px=0.8)
    knot = ellipse(cv, x_end + 0.004, y_end, 0.014, 0.018, edge_px=1)
    field_ = np.maximum(line, knot)
    mask = np.clip(gaussian_filter(field_, 0.006 * cv.size) * 6, 0, 1)
    return s * field_, mask


def _pneumothorax(cv, pl, s, size, layers):
    a = cv.anatomy
    side = pl.side if pl.side in ("R", "L") else cv.rng.choice(["R", "L"])
    lung = cv.lung(side)
    cx = a.lung_cx[side]
    # the lung collapses away from the chest wall by ``width``: the apical and lateral rim becomes air
    # (no markings), bounded by the visceral pleural line
    width = cv.rng.uniform(0.04, 0.08) * max(size, 0.6)
    medial = (cv.X > cx) if side == "R" else (cv.X < cx)
    # distance from the chest wall (the lung's apical and lateral border; the medial half does not count)
    depth = distance_transform_edt((lung > 0.5) | (medial & (cv.Y > a.apex_y + 0.06))) / cv.size
    zone = _soft(0.55 - cv.Y, 0.1)
    rim = lung * _soft(width - depth, cv.px) * zone
    edge = _soft(cv.at_least(0.004) - np.abs(depth - width - cv.at_least(0.004)), cv.px) * (lung > 0.5) * zone
    return -s * rim - cv.markings * rim + 0.5 * s * edge, np.maximum(rim, edge)


def _mediastinal_mass(cv, pl, s, size, layers):
    a = cv.anatomy
    sgn = {"R": -1, "L": 1}.get(pl.side, cv.rng.choice([-1, 1]))
    x = a.body_cx + sgn * cv.rng.uniform(0.05, 0.08)
    y = cv.rng.uniform(0.22, 0.36)
    m = blob(cv, x, y, cv.rng.uniform(0.06, 0.09) * size, 0.25, edge_px=2)
    return s * m, m


def _subcutaneous_emphysema(cv, pl, s, size, layers):
    a = cv.anatomy
    tissue = layers["tissue"]
    outside = tissue * (1 - cv.lung("B")) * (1 - layers["heart"]) * (1 - layers["mediastinum"])
    streaks = np.zeros_like(cv.X)
    for side in sides_of(pl.side if pl.side in ("R", "L") else "B"):
        sgn = -1 if side == "R" else 1
        for _ in range(cv.rng.integers(9, 16)):
            x = a.body_cx + sgn * cv.rng.uniform(a.body_half_width - 0.07, a.body_half_width - 0.01)
            y = cv.rng.uniform(0.12, 0.6)
            ang = cv.rng.uniform(-0.5, 0.5) + np.pi / 2
            L = cv.rng.uniform(0.03, 0.06)
            streaks = np.maximum(streaks, segment(cv, (x, y), (x + L * np.cos(ang) * 0.4, y + L * np.sin(ang)),
                                                  cv.at_least(cv.rng.uniform(0.002, 0.004)), edge_px=1))
    field_ = streaks * outside
    mask = np.clip(gaussian_filter(field_, 0.008 * cv.size) * 5, 0, 1)
    return -s * field_, mask


def _pneumoperitoneo(cv, pl, s, size, layers):
    a = cv.anatomy
    side = pl.side if pl.side in ("R", "L") else "R"
    cx, rx = a.lung_cx[side], a.lung_rx
    dome = dome_line(a, side, cv.X, cx, rx)
    thick = cv.at_least(cv.rng.uniform(0.03, 0.045) * max(size, 0.7), 2.0)
    crescent = _soft(cv.Y - dome - 0.004, cv.px) * _soft(dome + 0.004 + thick * (1 - ((cv.X - cx) / rx) ** 2) - cv.Y, cv.px)
    crescent *= _soft(rx * 0.9 - np.abs(cv.X - cx), 2 * cv.px)
    return -s * crescent, crescent


def _nothing(cv, pl, s, size, layers):
    return np.zeros_like(cv.X), np.zeros_like(cv.X)


#: Where a finding is drawn when neither the row nor the class statistics name a usable region.
ANYWHERE = (0.12, 0.15, 0.88, 0.75)


@dataclass(frozen=True)
class LesionSpec:
    """Everything the renderer knows about one class.

    ``strength``: lesion density (density units) before the difficulty and rarity knobs.
    ``draw(canvas, placement, strength, size, layers) -> (density change, mask field in [0, 1])``.
    ``default_box``: where it goes when neither the row nor the statistics name a region.
    ``modifier(anatomy, rng, strength)``: changes the patient's anatomy before it is drawn
    (cardiomegaly enlarges the heart, scoliosis curves the spine, ...).
    ``bilateral``: drawn on both sides when the row names no side (else one side at random).
    ``lung_class``: drawn in the lungs, so a localization box that misses them is replaced by
    ``default_box``.
    """

    name: str
    strength: float
    draw: Callable
    default_box: tuple[float, float, float, float] = ANYWHERE
    modifier: Callable | None = None
    bilateral: bool = False
    lung_class: bool = False


def _registry(*specs: LesionSpec) -> dict[str, LesionSpec]:
    return {spec.name: spec for spec in specs}


#: One record per class of the ``paper`` set (the renderer's whole knowledge of a class).
LESIONS: dict[str, LesionSpec] = _registry(
    LesionSpec("normal", 0.0, _nothing),
    LesionSpec("COPD signs", 0.06, _copd, modifier=_mod_copd, bilateral=True),
    LesionSpec("infiltrates", 0.22, _infiltrates, (0.12, 0.35, 0.88, 0.75), lung_class=True),
    LesionSpec("cardiomegaly", 1.0, _cardiomegaly, modifier=_mod_cardiomegaly),
    LesionSpec("aortic elongation", 1.0, _aortic_elongation, modifier=_mod_aortic_elongation),
    LesionSpec("pleural effusion", 0.24, _pleural_effusion),
    LesionSpec("atelectasis", 0.40, _atelectasis, (0.12, 0.55, 0.88, 0.75), lung_class=True),
    LesionSpec("scoliosis", 1.0, _scoliosis, modifier=_mod_scoliosis),
    LesionSpec("pneumonia", 0.28, _pneumonia, (0.12, 0.45, 0.88, 0.75), lung_class=True),
    LesionSpec("hilar enlargement", 0.22, _hilar),
    LesionSpec("chronic changes", 0.12, _chronic, bilateral=True),
    LesionSpec("vertebral degenerative changes", 0.45, _vertebral_degenerative),
    LesionSpec("costophrenic angle blunting", 0.34, _cp_blunting),
    LesionSpec("pleural thickening", 0.26, _pleural_thickening, (0.12, 0.1, 0.88, 0.25)),
    LesionSpec("kyphosis", 1.0, _kyphosis, modifier=_mod_kyphosis),
    LesionSpec("nodule", 0.55, _nodule, (0.12, 0.15, 0.88, 0.7), lung_class=True),
    LesionSpec("rib fracture", 0.65, _rib_fracture),
    LesionSpec("bronchiectasis", 0.26, _bronchiectasis, (0.12, 0.5, 0.88, 0.75), lung_class=True),
    LesionSpec("aortic atheromatosis", 0.40, _atheromatosis),
    LesionSpec("hiatal hernia", 0.32, _hiatal_hernia),
    LesionSpec("pulmonary fibrosis", 0.22, _fibrosis, (0.12, 0.45, 0.88, 0.78), lung_class=True),
    LesionSpec("emphysema", 0.24, _emphysema, (0.12, 0.12, 0.88, 0.45), lung_class=True),
    LesionSpec("pulmonary edema", 0.14, _edema, bilateral=True),
    LesionSpec("pulmonary mass", 0.55, _mass, (0.12, 0.15, 0.88, 0.7), lung_class=True),
    LesionSpec("lung metastasis", 0.28, _metastasis, (0.1, 0.15, 0.9, 0.78), lung_class=True),
    LesionSpec("azygos lobe", 0.45, _azygos),
    LesionSpec("pneumothorax", 0.24, _pneumothorax),
    LesionSpec("mediastinal mass", 0.32, _mediastinal_mass),
    LesionSpec("subcutaneous emphysema", 0.34, _subcutaneous_emphysema),
    LesionSpec("pneumoperitoneo", 0.50, _pneumoperitoneo),
)


# ----------------------------------------------------------------------------- the renderer

class PhantomRenderer:
    """Renders (image, masks) for a label row.

    ``size`` is the canvas it draws on; ``out_size`` the training resolution the image will be
    downsampled to (default ``size``): thin lesion models scale their thickness with it, so every
    lesion is at least about two output pixels wide (``MIN_HALF_WIDTH``). ``difficulty`` divides
    every lesion's strength. ``tail_subtlety`` (default 0: rarity changes nothing) is the explicit
    experiment "what if rare findings are also subtle": with ``rarity`` (0 = most frequent class,
    1 = rarest; from real training counts), a class's strength shrinks by ``tail_subtlety *
    rarity`` and its size by half that. ``hidden_classes`` are never drawn (no lesion, no anatomy
    change, empty mask) while their labels stay: only co-occurring findings can predict them.
    ``label_noise`` is the chance that a labelled finding is not drawn (its mask is then empty
    while the label stays: label noise as in report-mined labels).
    ``class_stats`` are per-class localization frequencies (``padchest.localization_stats``),
    used when a row's own sentences give no region.
    """

    def __init__(self, classes: Sequence[str], size: int = 256, difficulty: float = 1.0,
                 tail_subtlety: float = 0.0, label_noise: float = 0.0,
                 rarity: Sequence[float] | None = None, class_stats: Mapping[str, dict] | None = None,
                 labels_by_class: Mapping[str, Sequence[str]] | None = None, out_size: int | None = None,
                 hidden_classes: Sequence[str] = ()):
        unknown = [c for c in classes if c not in LESIONS]
        if unknown:
            raise PhantomError(f"the phantom renderer has no visual model for {unknown}; it draws the "
                               f"'paper' class set ({len(LESIONS)} classes)")
        if difficulty <= 0:
            raise PhantomError(f"phantom.difficulty must be > 0, got {difficulty}")
        hidden = [c for c in hidden_classes if c not in classes]
        if hidden:
            raise PhantomError(f"phantom.hidden_classes names {hidden}, which are not in this class set; "
                               f"use names from: {', '.join(classes)}")
        if out_size is not None and int(out_size) < 1:
            raise PhantomError(f"the training resolution must be >= 1 px, got {out_size}")
        self.classes = list(classes)
        self.size = int(size)
        self.out_size = int(out_size) if out_size is not None else self.size
        self.hidden_classes = tuple(hidden_classes)
        self.difficulty = float(difficulty)
        self.tail_subtlety = float(tail_subtlety)
        self.label_noise = float(label_noise)
        self.rarity = np.zeros(len(classes)) if rarity is None else np.asarray(rarity, dtype=float)
        self.class_stats = dict(class_stats or {})
        self.labels_by_class = {c: set(v) for c, v in (labels_by_class or {}).items()}
        self.boxes = _location_boxes()
        lin = (np.arange(self.size) + 0.5) / self.size
        self._X, self._Y = (g.astype(np.float32) for g in np.meshgrid(lin, lin))

    # -- placement from the row's sentences, else the class statistics
    def placement(self, cls: str, sentences: Sequence[Sequence[str]], rng: np.random.Generator,
                  row_labels: Sequence[str] = ()) -> Placement:
        own = self.labels_by_class.get(cls, {cls})
        tokens: list[str] = []
        for sentence in sentences or ():
            if any(t in own for t in sentence):
                tokens += [t for t in sentence if isinstance(t, str) and t.startswith("loc ")]
        if not tokens and cls in self.class_stats:
            locs = self.class_stats[cls].get("locations", {})
            if locs:
                names, p = zip(*locs.items())
                p = np.asarray(p, float)
                tokens = [str(rng.choice(names, p=p / p.sum()))]
        side = _side_from(tokens)
        spec = LESIONS[cls]
        if side is None:
            side = "B" if spec.bilateral else rng.choice(["R", "L"])
        box = None
        for t in tokens:
            b = self.boxes.get(t, {}).get("box_xyxy_norm")
            if b:
                box = tuple(b)
                break
        if box is None or (spec.lung_class and not _overlaps_lungs(box)):
            box = spec.default_box
        return Placement(side, box, tuple(tokens) + tuple(row_labels))

    def render(self, image_id: str, classes_present: Sequence[str],
               sentences: Sequence[Sequence[str]] = (), row_labels: Sequence[str] = ()) -> tuple[np.ndarray, np.ndarray]:
        """Image (H, W) float32 in [0, 1] and masks (C, H, W) bool for the renderer's classes."""
        # Independent random streams: anatomy, exposure and each finding have their own, so the
        # same patient rendered with and without a finding differs only by that finding.
        def stream(name: str) -> np.random.Generator:
            return np.random.default_rng(stable_seed(image_id, name))

        anatomy = sample_anatomy(stream("anatomy"))
        present = [c for c in self.classes if c in set(classes_present) and c not in self.hidden_classes]
        drawn = [c for c in present if stream(f"noise|{c}").random() >= self.label_noise]
        strength, size = {}, {}
        for c in drawn:
            r = self.rarity[self.classes.index(c)]
            strength[c] = LESIONS[c].strength * (1 - self.tail_subtlety * r) / self.difficulty
            size[c] = 1 - 0.5 * self.tail_subtlety * r
        for c in drawn:
            if LESIONS[c].modifier is not None:
                LESIONS[c].modifier(anatomy, stream(f"modifier|{c}"), strength[c])
        cv = Canvas(self.size, self._X, self._Y, stream("texture"), anatomy, out_size=self.out_size)
        density, layers = build_anatomy(cv)
        masks = np.zeros((len(self.classes), self.size, self.size), dtype=bool)
        for c in drawn:
            cv.rng = stream(f"lesion|{c}")
            place = self.placement(c, sentences, cv.rng, row_labels)
            delta, field_ = LESIONS[c].draw(cv, place, strength[c], size[c], layers)
            density = density + delta
            masks[self.classes.index(c)] = field_ > 0.3
        image = _expose(density, stream("exposure"), self.size)
        return image, masks


def _side_from(tokens: Sequence[str]) -> str | None:
    words = {w for t in tokens for w in t.split()}
    if "bilateral" in words or ("right" in words and "left" in words):
        return "B"
    if "right" in words:
        return "R"
    if "left" in words:
        return "L"
    return None


def _overlaps_lungs(box) -> bool:
    x0, y0, x1, y1 = box
    return (x1 - x0) > 0.1 and y0 < 0.75 and y1 > 0.15 and not (x0 > 0.38 and x1 < 0.66)


def _expose(density: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """Film response: blur, exposure and contrast variation, grain; returns [0, 1] float32."""
    d = gaussian_filter(density, 0.6 * size / 256)
    gain = rng.uniform(1.25, 1.6)
    offset = rng.uniform(0.02, 0.06)
    img = 1 - np.exp(-np.clip(d * gain + offset, 0, None) * 1.6)
    img = img ** rng.uniform(0.85, 1.15)
    img = img + rng.normal(0, rng.uniform(0.008, 0.02), img.shape)
    return np.clip(img, 0, 1).astype(np.float32)


def downsample(image: np.ndarray, masks: np.ndarray, out: int) -> tuple[np.ndarray, np.ndarray]:
    """Area-average the image and max-pool the masks to ``out`` pixels (any overlap keeps a pixel)."""
    import torch
    import torch.nn.functional as F

    if image.shape[-1] == out:
        return image, masks
    img = F.adaptive_avg_pool2d(torch.from_numpy(image)[None, None], out)[0, 0].numpy()
    m = F.adaptive_max_pool2d(torch.from_numpy(masks.astype(np.float32))[None], out)[0].numpy() > 0
    return img, m
