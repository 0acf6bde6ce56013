"""Figures of the book. Figure functions only draw what they are given; they compute nothing."""
from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

#: (key, x, y, width, height, title, detail, colour); coordinates in a 16 x 9 canvas.
_PIPELINE_BOXES = [
    ("labels", 0.3, 6.7, 3.3, 1.6, "PadChest label rows", "real labels, patients,\nlocalizations (Sec. 4.1)", "#d9d9d9"),
    ("images", 0.3, 3.9, 3.3, 1.8, "Radiographs", "phantom renderer (default)\nor PadChest PNGs", "#d9d9d9"),
    ("diffusion", 4.4, 6.7, 3.8, 1.6, "(b) Prompt-latent diffusion", "E_cond = [C ; E_n]  Eq. 1-2\nCFG + DDIM  Eq. 3-6", "#fbb4ae"),
    ("backbone", 4.4, 3.9, 3.8, 1.8, "ConvNeXtV2 backbone", "X = phi(I)  Eq. 7\nreal + weighted synthetic", "#b3cde3"),
    ("channel", 8.9, 3.9, 3.8, 1.8, "(c) Channel reweighting", "g = sigma(W2 relu(W1 u))\nX_r = X + X*g  Eq. 8-10", "#ccebc5"),
    ("spatial", 8.9, 6.7, 3.8, 1.6, "Class-aware attention", "a_c = softmax(M_c) Eq. 12-13\ns_img = s_gap+lam*s_sp Eq. 14", "#ccebc5"),
    ("graph", 8.9, 0.7, 3.8, 2.1, "(d) Label co-occurrence GCN", "Q = Y^T Y (train labels)\n-> A  Eq. 15-20\nE2 = GCN(A, E0) Eq. 21-22", "#decbe4"),
    ("fusion", 13.3, 3.9, 2.5, 1.8, "Fusion", "s = s_img\n+ alpha s_label\nEq. 25", "#fed9a6"),
]
_PIPELINE_ARROWS = [
    ("labels", "diffusion", "tail prompts"),
    ("labels", "images", "label vector"),
    ("diffusion", "backbone", "synthetic tail images"),
    ("images", "backbone", "real"),
    ("backbone", "channel", "X"),
    ("channel", "spatial", "X_r"),
    ("channel", "graph", "g_r = GAP(X_r)  Eq. 23"),
    ("spatial", "fusion", "s_img"),
    ("graph", "fusion", "s_label  Eq. 24"),
]


def pipeline_overview(ax: plt.Axes | None = None) -> plt.Figure:
    """Fig. 1 of the paper redrawn: data -> prompt diffusion -> ConvNeXtV2 -> CCA -> GCN -> fusion."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(13, 7.3))
    else:
        fig = ax.figure
    boxes = {}
    for key, x, y, w, h, title, detail, colour in _PIPELINE_BOXES:
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.05,rounding_size=0.15",
                                    fc=colour, ec="#333333", lw=1.2))
        ax.text(x + w / 2, y + h - 0.32, title, ha="center", va="center", fontsize=10.5, weight="bold")
        ax.text(x + w / 2, y + (h - 0.45) / 2, detail, ha="center", va="center", fontsize=8.5,
                family="monospace")
        boxes[key] = (x, y, w, h)
    for a, b, label in _PIPELINE_ARROWS:
        start, end = _anchor(boxes[a], boxes[b]), _anchor(boxes[b], boxes[a])
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=14, lw=1.3,
                                     color="#444444", shrinkA=2, shrinkB=2))
        if label:
            mx, my = (start[0] + end[0]) / 2, (start[1] + end[1]) / 2
            vertical = abs(end[0] - start[0]) < 0.2
            ax.text(mx + (0.12 if vertical else 0), my + (0 if vertical else 0.12), label,
                    ha="left" if vertical else "center", va="center" if vertical else "bottom",
                    fontsize=8, style="italic")
    ax.set_xlim(0, 16)
    ax.set_ylim(0, 9)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title("TRCGL-Net: the pipeline this book rebuilds, chapter by chapter", fontsize=12)
    return fig


def _anchor(box, toward):
    """The midpoint of the side of ``box`` that faces the centre of ``toward``."""
    x, y, w, h = box
    cx, cy = x + w / 2, y + h / 2
    tx, ty = toward[0] + toward[2] / 2, toward[1] + toward[3] / 2
    dx, dy = tx - cx, ty - cy
    if abs(dx) * h >= abs(dy) * w:
        return (x + w, cy) if dx > 0 else (x, cy)
    return (cx, y + h) if dy > 0 else (cx, y)
