"""Figures of the book. Figure functions only draw what they are given; they compute nothing."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
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


# ----------------------------------------------------------------------------- data chapter

GROUP_COLOURS = {"head": "#4c72b0", "medium": "#dd8452", "tail": "#c44e52"}


def long_tail_bars(summary, head_threshold: int, tail_threshold: int, ax: plt.Axes | None = None) -> plt.Figure:
    """Fig. 2 (left): training images per class on a log axis, coloured by group."""
    import seaborn as sns

    if ax is None:
        fig, ax = plt.subplots(figsize=(12, 4.8))
    else:
        fig = ax.figure
    df = summary.reset_index().sort_values("train", ascending=False)
    sns.barplot(data=df, x="class", y="train", hue="group", palette=GROUP_COLOURS, dodge=False, ax=ax)
    ax.set_yscale("log")
    for y, name in ((head_threshold, "head > {}"), (tail_threshold, "tail < {}")):
        ax.axhline(y, ls="--", lw=1, color="#555555")
        ax.text(len(df) - 0.5, y * 1.08, name.format(y), ha="right", va="bottom", fontsize=8, color="#555555")
    ax.set_xlabel("")
    ax.set_ylabel("training images (log scale)")
    ax.tick_params(axis="x", rotation=75, labelsize=8)
    for label in ax.get_xticklabels():
        label.set_ha("right")
    ax.legend(title="group", loc="upper right", bbox_to_anchor=(1.0, 0.9))
    ax.set_title("The long tail: training images per class (real PadChest labels, patient-level split)")
    fig.tight_layout()
    return fig


def cooccurrence_chord(Q, classes, groups, pairs, figsize=(9, 9)) -> plt.Figure:
    """Fig. 2 (right): a chord diagram of label co-occurrence (pycirclize).

    Sector size is proportional to the square root of the class's training count (so that the
    tail stays visible); a chord joins two classes of ``pairs`` (``(count, i, j)``, chosen by
    :func:`trcgl.data.padchest.strongest_pairs`), its width at each end proportional to that
    pair's share of the class's drawn co-occurrences, coloured by the group of the rarer class.
    """
    import numpy as np
    from pycirclize import Circos

    Q = np.asarray(Q, dtype=float)
    counts = np.diag(Q)
    sizes = {c: float(np.sqrt(max(n, 1))) for c, n in zip(classes, counts)}
    circos = Circos(sizes, space=1.2)
    for sector, g in zip(circos.sectors, groups):
        track = sector.add_track((93, 100))
        track.axis(fc=GROUP_COLOURS[g], ec="white")
        sector.text(sector.name, r=103, size=7, orientation="vertical")
    shown = np.zeros_like(Q)
    for v, i, j in pairs:
        shown[i, j] = shown[j, i] = v
    cursor = {c: 0.0 for c in classes}
    spans = {}
    for i, c in enumerate(classes):
        total = shown[i].sum()
        for j in np.argsort(-shown[i]):
            if shown[i, j] <= 0:
                continue
            width = shown[i, j] / total * sizes[c] * 0.95
            spans[(i, j)] = (cursor[c], cursor[c] + width)
            cursor[c] += width
    for _, i, j in pairs:
        rarer = i if counts[i] < counts[j] else j
        (a0, a1), (b0, b1) = spans[(i, j)], spans[(j, i)]
        circos.link((classes[i], a0, a1), (classes[j], b0, b1), color=GROUP_COLOURS[groups[rarer]], alpha=0.35, lw=0)
    fig = circos.plotfig(figsize=figsize)
    fig.suptitle(f"Label co-occurrence among the {len(classes)} classes ({len(pairs)} chords)", y=0.98)
    return fig


def phantom_gallery(images, masks_list, titles, captions=None, ncols: int = 6, size: float = 2.4) -> plt.Figure:
    """Images with their lesion masks outlined (one mask per panel, red)."""
    import numpy as np

    n = len(images)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * size, nrows * (size + 0.35)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k, (img, mask, title) in enumerate(zip(images, masks_list, titles)):
        ax = axes.flat[k]
        ax.imshow(img, cmap="gray", vmin=0, vmax=1, interpolation="bilinear")
        if mask is not None and mask.any():
            ax.contour(mask.astype(float), levels=[0.5], colors="red", linewidths=0.9)
        ax.set_title(title, fontsize=8)
        if captions:
            ax.text(0.5, -0.04, captions[k], transform=ax.transAxes, ha="center", va="top", fontsize=6.5, wrap=True)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- model chapters

def attention_gallery(images, maps, masks, titles, ncols: int = 6, size: float = 2.3) -> plt.Figure:
    """Images with a class attention map overlaid (upsampled) and the true lesion outlined."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    n = len(images)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * size, nrows * (size + 0.3)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for k in range(n):
        ax = axes.flat[k]
        H, W = images[k].shape
        up = F.interpolate(torch.as_tensor(maps[k], dtype=torch.float32)[None, None], size=(H, W),
                           mode="bilinear", align_corners=False)[0, 0].numpy()
        ax.imshow(images[k], cmap="gray", vmin=0, vmax=1)
        ax.imshow(up / max(up.max(), 1e-12), cmap="jet", alpha=0.4, vmin=0, vmax=1)
        if masks[k] is not None and masks[k].any():
            ax.contour(masks[k].astype(float), levels=[0.5], colors="white", linewidths=1.0)
        ax.set_title(titles[k], fontsize=7.5)
    fig.tight_layout(rect=(0, 0, 0.88, 1))
    _map_colourbar(fig, [0.895, 0.15, 0.012, 0.7], "a_c / its maximum")
    return fig


def _map_colourbar(fig: plt.Figure, rect, label: str, alpha: float = 0.45) -> None:
    """The colour bar of the overlaid maps (jet, each map divided by its own maximum), in ``rect``
    (figure fraction), drawn with the overlays' transparency over white."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    cax = fig.add_axes(rect)
    bar = fig.colorbar(ScalarMappable(Normalize(0, 1), "jet"), cax=cax, alpha=alpha)
    bar.set_label(label, fontsize=8)
    bar.ax.tick_params(labelsize=7)


def training_curves(histories: dict, metric: str = "selection_mAP") -> plt.Figure:
    """Selection-split metric per epoch for several runs; the stage boundary is marked."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for name, h in histories.items():
        ax.plot(h["epoch"], h[metric], marker="o", label=name)
        warm = (h["stage"] == "warmup").sum()
        if warm:
            ax.axvline(warm + 0.5, color="#999999", ls=":", lw=1)
    ax.set_xlabel("epoch (dotted: end of the frozen-backbone warm-up)")
    ax.set_ylabel(metric.replace("_", " "))
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def label_graph(A, classes, groups, ax: plt.Axes | None = None, seed: int = 0) -> plt.Figure:
    """The label graph (networkx, converted from torch-geometric) on a circle, grouped head to tail, with
    node colour by group, edge width by weight, and each class's label placed radially outside its node
    (a spring layout piled the labels of connected classes on each other)."""
    import networkx as nx
    import numpy as np
    import torch
    from torch_geometric.data import Data
    from torch_geometric.utils import dense_to_sparse, to_networkx

    A = np.asarray(A, dtype=float)
    off = A - np.diag(np.diag(A))
    edge_index, weight = dense_to_sparse(torch.as_tensor(off))
    G = to_networkx(Data(edge_index=edge_index, edge_attr=weight, num_nodes=len(classes)),
                    edge_attrs=["edge_attr"], to_undirected=True)
    if ax is None:
        fig, ax = plt.subplots(figsize=(9, 9))
    else:
        fig = ax.figure
    order = sorted(range(len(classes)), key=lambda i: (["head", "medium", "tail"].index(groups[i]), i))
    angle = {i: 2 * np.pi * k / len(classes) for k, i in enumerate(order)}    # a circle, grouped head -> tail
    pos = {i: np.array([np.cos(a), np.sin(a)]) for i, a in angle.items()}
    widths = [3 * G[u][v]["edge_attr"] / max(off.max(), 1e-12) + 0.2 for u, v in G.edges]
    nx.draw_networkx_edges(G, pos, ax=ax, width=widths, alpha=0.45, edge_color="#777777")
    nx.draw_networkx_nodes(G, pos, ax=ax, node_color=[GROUP_COLOURS[g] for g in groups],
                           node_size=[260 if g == "tail" else 140 for g in groups],
                           edgecolors=["black" if g == "tail" else "white" for g in groups])
    for i, a in angle.items():                  # labels radially outside the circle: they cannot overlap
        left = np.pi / 2 < a < 3 * np.pi / 2
        ax.text(1.08 * np.cos(a), 1.08 * np.sin(a), classes[i], fontsize=7.5, va="center",
                ha="right" if left else "left", rotation=np.degrees(a) + (180 if left else 0),
                rotation_mode="anchor")
    fig.legend(handles=[plt.Line2D([], [], marker="o", ls="", color=GROUP_COLOURS[g], label=g)
                        for g in ("head", "medium", "tail")], loc="lower left", fontsize=8,
               title="group (edge width: weight in A)", title_fontsize=8, frameon=False)
    ax.set_xlim(-1.65, 1.65)
    ax.set_ylim(-1.65, 1.65)
    ax.set_aspect("equal")
    ax.axis("off")
    return fig


# ----------------------------------------------------------------------------- diffusion chapter

def sample_grid(rows, row_titles, col_titles=None, size: float = 1.5, row_title_width: float = 2.4) -> plt.Figure:
    """A grid of images in [0, 1] (one list per row), each row labelled on its left."""
    import textwrap

    ncols = max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(row_title_width + ncols * size, len(rows) * size + 0.3),
                             squeeze=False)
    for i, images in enumerate(rows):
        for j in range(ncols):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if j < len(images):
                ax.imshow(images[j], cmap="gray", vmin=0, vmax=1, interpolation="bilinear")
            if i == 0 and col_titles is not None and j < len(col_titles):
                ax.set_title(col_titles[j], fontsize=8)
        axes[i, 0].set_ylabel("\n".join(textwrap.wrap(row_titles[i], 28)), rotation=0, ha="right", va="center",
                              fontsize=7.5, labelpad=6)
    fig.tight_layout()
    return fig


def guidance_sweep(table, metrics=("oracle p(target)", "Fréchet distance", "diversity")) -> plt.Figure:
    """The ω sweep: one panel per metric against the guidance scale (Eq. 4)."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.2))
    for ax, m in zip(np.atleast_1d(axes), metrics):
        ax.plot(table.index, table[m], "o-")
        if m + " (real)" in table:
            ax.axhline(table[m + " (real)"].iloc[0], color="grey", ls="--", label="real images")
            ax.legend(fontsize=8)
        ax.set_xlabel("guidance scale ω")
        ax.set_title(m, fontsize=10)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- results chapters

def cam_gallery(images, masks, maps_by_method: dict, titles, size: float = 2.0) -> plt.Figure:
    """Fig. 4: per row an image with its true lesion outlined, then each method's map over it."""
    n, methods = len(images), list(maps_by_method)
    fig, axes = plt.subplots(n, 1 + len(methods), figsize=((1 + len(methods)) * size, n * size + 0.4), squeeze=False)
    for i in range(n):
        H, W = images[i].shape
        for j, name in enumerate(["image + true lesion"] + methods):
            ax = axes[i, j]
            ax.imshow(images[i], cmap="gray", vmin=0, vmax=1)
            if j > 0:
                m = maps_by_method[name][i]
                up = np.kron(m, np.ones((H // m.shape[0], W // m.shape[1])))
                ax.imshow(up / max(up.max(), 1e-12), cmap="jet", alpha=0.45, vmin=0, vmax=1)
            if masks[i].any():
                ax.contour(masks[i].astype(float), levels=[0.5], colors="white" if j else "red", linewidths=0.9)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=8)
        axes[i, 0].set_ylabel(titles[i], fontsize=8)
    fig.tight_layout(rect=(0, 0, 0.9, 1))
    _map_colourbar(fig, [0.915, 0.2, 0.02, 0.6], "map / its maximum (per image); outline: true lesion")
    return fig


def prediction_bars(images, probs, Y, classes, top: int = 8, size: float = 2.6) -> plt.Figure:
    """Fig. 5: each image beside its highest predicted class confidences; true labels in red."""
    n = len(images)
    fig, axes = plt.subplots(n, 2, figsize=(2 * size + 2.2, n * size * 0.8), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1.8]})
    for i in range(n):
        axes[i, 0].imshow(images[i], cmap="gray", vmin=0, vmax=1)
        axes[i, 0].axis("off")
        order = np.argsort(-probs[i])[:top]
        true = set(np.flatnonzero(Y[i]))
        for c in true - set(order):          # always show the true labels
            order = np.append(order, c)
        ax = axes[i, 1]
        colors = ["tab:red" if c in true else "tab:grey" for c in order]
        ax.barh(range(len(order)), probs[i][order], color=colors)
        ax.set_yticks(range(len(order)), [classes[c] for c in order], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.tick_params(axis="x", labelsize=7)
    axes[0, 1].set_title("predicted probability (red: a true label)", fontsize=8)
    fig.tight_layout()
    return fig


def seed_bars(summary, metric: str, rows=None, ax=None) -> plt.Figure:
    """Means over seeds with their 95% intervals for one metric (from experiments.seed_summary)."""
    s = summary[summary.metric == metric].set_index("row")
    if rows is not None:
        s = s.reindex([r for r in rows if r in s.index])
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6, 0.35 * len(s) + 1))
    err = np.vstack([s["mean"] - s["low"], s["high"] - s["mean"]])
    ax.barh(range(len(s)), s["mean"], xerr=np.nan_to_num(err), color="tab:blue", alpha=0.7, capsize=3)
    ax.set_yticks(range(len(s)), s.index, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"{metric} (mean over seeds, 95% interval)")
    fig.tight_layout()
    return fig


def dose_curve(x, values, lows, highs, xlabel: str, ylabel: str, ax: plt.Axes | None = None) -> plt.Figure:
    """A dose curve: a difference against its reference at each dose, with its interval, and the
    zero line (no effect)."""
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(5.5, 3.4))
    x, values = np.asarray(x, float), np.asarray(values, float)
    err = np.vstack([values - np.asarray(lows, float), np.asarray(highs, float) - values])
    ax.errorbar(x, values, yerr=np.nan_to_num(err), marker="o", capsize=4, color="tab:blue", label="mean, 95% interval")
    ax.axhline(0, color="grey", lw=0.8, ls="--", label="no effect")
    ax.set_xscale("log", base=2)
    ax.set_xticks(x, [f"{v:g}" for v in x])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def pil_curve(curves: dict, ax: plt.Axes | None = None) -> plt.Figure:
    """PIL (inpainting paper, Eq. 3): per β, the share of the inpainted set trained on at epoch n
    (``curves``: β -> (epochs, shares))."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.2, 3.0))
    else:
        fig = ax.figure
    for b, (n, share) in curves.items():
        ax.plot(n, share, marker="o", ms=3, label=f"β = {b:g}")
    ax.set_xlabel("epoch n")
    ax.set_ylabel("share of D_i trained on")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def inpaint_gallery(originals, head_masks, masks, inpainted, kept_masks, titles, size: float = 1.9) -> plt.Figure:
    """Per row: the original with its true head lesions (red), the Grad-CAM inpainting mask, the
    inpainted image, and the inpainted image with the kept findings' true lesions (green)."""
    import textwrap

    cols = ["original,\ntrue head lesions", "Grad-CAM\ninpainting mask", "inpainted", "inpainted,\ntrue kept lesions"]
    n = len(originals)
    fig, axes = plt.subplots(n, 4, figsize=(2.2 + 4 * size, n * size + 0.5), squeeze=False)
    for i in range(n):
        for j in range(4):
            ax = axes[i, j]
            ax.imshow(inpainted[i] if j >= 2 else originals[i], cmap="gray", vmin=0, vmax=1)
            if j == 0 and head_masks[i].any():
                ax.contour(head_masks[i].astype(float), levels=[0.5], colors="red", linewidths=0.8)
            if j == 1:
                ax.imshow(np.ma.masked_where(~masks[i], masks[i]), cmap="autumn", alpha=0.45, vmin=0, vmax=1)
            if j == 3 and kept_masks[i].any():
                ax.contour(kept_masks[i].astype(float), levels=[0.5], colors="lime", linewidths=0.8)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(cols[j], fontsize=7.5)
        axes[i, 0].set_ylabel("\n".join(textwrap.wrap(titles[i], 26)), fontsize=7, rotation=0, ha="right",
                              va="center", labelpad=4)
    fig.tight_layout()
    return fig


def loss_curves(histories: dict) -> plt.Figure:
    """Training and held-out denoising loss (Eq. 3) per epoch, one line per model."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    for name, h in histories.items():
        axes[0].plot(h.epoch, h.loss, "o-", label=name)
        axes[1].plot(h.epoch, h.heldout_loss, "o-", label=name)
    for ax, title in zip(axes, ["training loss (Eq. 3)", "held-out loss (Eq. 3)"]):
        ax.set_xlabel("epoch")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def adjacency_heatmap(A, classes, title: str) -> plt.Figure:
    """The label adjacency matrix as a heatmap (Eq. 20)."""
    import pandas as pd
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(9, 7.5))
    sns.heatmap(pd.DataFrame(A, index=classes, columns=classes), cmap="mako_r", square=True, ax=ax,
                cbar_kws={"label": "A (Eq. 20)"}, xticklabels=True, yticklabels=True)
    ax.tick_params(labelsize=6.5)
    ax.set_title(title)
    return fig


def entanglement_heatmap(E, rows, columns, title: str) -> plt.Figure:
    """The guard's entanglement e(h, k) of head classes (rows) with kept classes (columns)."""
    import pandas as pd
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(11, 4.2))
    sns.heatmap(pd.DataFrame(E, index=rows, columns=columns), cmap="mako", vmin=0, vmax=1, ax=ax,
                cbar_kws={"label": "e(h, k)"})
    ax.set_title(title)
    fig.tight_layout()
    return fig


def claims_forest(labels, values, lows, highs, paper_effects, verdicts, metric: str) -> plt.Figure:
    """The claims ledger as a forest plot: per claim this run's paired difference with its interval
    (colour: the verdict), the paper's own difference as a cross where it reports one, and 0."""
    colours = {"supported": "tab:green", "not supported": "tab:red"}
    n = len(labels)
    fig, ax = plt.subplots(figsize=(8, 0.42 * n + 1.2))
    y = np.arange(n)
    for k in range(n):
        c = colours.get(verdicts[k], "tab:grey")
        if np.isfinite(lows[k]) and np.isfinite(highs[k]):
            ax.plot([lows[k], highs[k]], [y[k], y[k]], color=c, lw=2)
        if np.isfinite(values[k]):
            ax.plot(values[k], y[k], "o", color=c, ms=5)
        if paper_effects[k] is not None and np.isfinite(paper_effects[k]):
            ax.plot(paper_effects[k], y[k], "x", color="black", ms=6)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"Δ {metric} (claimed winner − compared row)", fontsize=8)
    handles = [plt.Line2D([], [], color=c, marker="o", lw=2, label=f"this run: {v}")
               for v, c in [*colours.items(), ("inconclusive at this scale", "tab:grey")]]
    handles.append(plt.Line2D([], [], color="black", marker="x", lw=0, label="the paper (mAUC where no tail mAUC)"))
    ax.legend(handles=handles, fontsize=7, loc="lower left", bbox_to_anchor=(0, 1.0), ncol=2, frameon=False)
    fig.tight_layout()
    return fig
