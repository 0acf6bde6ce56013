"""The paper's reported numbers (arXiv 2607.00975), kept as labelled reference values.

They never enter the results store and are never shown as our results: chapters print them only
in columns or sentences labelled as the paper's. ``tests/test_paper.py`` checks every value
against the paper's text.
"""
from __future__ import annotations

import pandas as pd

COLUMNS_1 = ("mAP", "mAUC", "F1")

#: Table 1: baselines on PadChest.
TABLE_1 = {
    "ConvNeXt": (0.3323, 0.8720, 0.2166),
    "ResNet": (0.2092, 0.8371, 0.0991),
    "EfficientNet": (0.1807, 0.7717, 0.0322),
    "CLIP": (0.2525, 0.8291, 0.0501),
    "ViT": (0.1901, 0.7778, 0.0376),
    "ConvNeXt + LDAM": (0.2962, 0.8464, 0.2752),
    "ConvNeXt + CSRA": (0.3671, 0.8581, 0.3227),
    "Ours": (0.4408, 0.8989, 0.4369),
}

#: Table 2: mAP (head, medium, tail) and mAUC (head, medium, tail).
TABLE_2 = {
    "ConvNeXt": (0.5156, 0.2715, 0.1280, 0.8882, 0.8589, 0.8707),
    "ResNet": (0.4060, 0.1344, 0.0104, 0.8610, 0.8176, 0.8513),
    "EfficientNet": (0.3711, 0.0992, 0.0076, 0.8319, 0.7785, 0.6464),
    "CLIP": (0.4555, 0.1726, 0.0111, 0.8650, 0.8186, 0.6482),
    "ViT": (0.3815, 0.1125, 0.0073, 0.8399, 0.7883, 0.6412),
    "ConvNeXt + LDAM": (0.4903, 0.2352, 0.0328, 0.8783, 0.8414, 0.6898),
    "Ours": (0.5479, 0.3272, 0.4904, 0.9012, 0.8849, 0.9229),
}
COLUMNS_2 = ("mAP head", "mAP medium", "mAP tail", "mAUC head", "mAUC medium", "mAUC tail")

#: Table 3: ablation, rows are (prompt diffusion, channel-class attention, label GCN).
TABLE_3 = {
    "baseline": (0.3671, 0.8581, 0.3227),
    "+ prompt diffusion": (0.4361, 0.8983, 0.4192),
    "+ channel-class attention": (0.4381, 0.9000, 0.4053),
    "+ label GCN (full)": (0.4408, 0.8989, 0.4369),
}

#: Table 4: synthetic sample weight.
TABLE_4 = {0.25: (0.4173, 0.8979, 0.4325), 0.50: (0.4408, 0.8989, 0.4369), 0.75: (0.4324, 0.8969, 0.4495)}

#: Table 5: label-graph fusion strength alpha.
TABLE_5 = {0.025: (0.4279, 0.8962, 0.4248), 0.050: (0.4408, 0.8989, 0.4369), 0.100: (0.4211, 0.8987, 0.4407)}


def table(name: str) -> pd.DataFrame:
    """A paper table as a DataFrame whose columns say they are the paper's."""
    data, cols = {"1": (TABLE_1, COLUMNS_1), "2": (TABLE_2, COLUMNS_2), "3": (TABLE_3, COLUMNS_1),
                  "4": (TABLE_4, COLUMNS_1), "5": (TABLE_5, COLUMNS_1)}[str(name)]
    return pd.DataFrame.from_dict(data, orient="index", columns=[f"{c} (paper)" for c in cols])


# ----------------------------------------------------------------------------- the inpainting paper
# "X-ray Insights Unleashed" (normal X-ray inpainting): ResNet-50, macro F1 in %, on CheXpert and
# MIMIC-CXR (13 classes), not PadChest. Keys are our row names; the paper's row name is noted.

#: Its Table 3 (caption-based generation vs inpainting): "-", "DfT-Caption", "DfT-Inpainting(our)".
INPAINT_TABLE_3 = {
    "no augmentation": (31.72, 31.11),
    "prompt diffusion": (32.08, 31.4),      # DfT-Caption: a DiT conditioned on CLIP text of the lesion name
    "inpainting": (35.61, 33.91),
}

#: Its Table 4 (cross-entropy rows): no augmentation, + Aug (all at once), + Aug + PIL.
INPAINT_TABLE_4 = {
    "no augmentation": (31.72, 31.11),
    "+ guard, all at once": (30.96, 30.28),
    "+ guard + PIL (the method)": (35.61, 33.91),
}
INPAINT_COLUMNS = ("F1 % CheXpert (paper 2)", "F1 % MIMIC (paper 2)")


def inpaint_table(name: str) -> pd.DataFrame:
    """A table of the inpainting paper (3 or 4) with columns labelled as that paper's."""
    data = {"3": INPAINT_TABLE_3, "4": INPAINT_TABLE_4}[str(name)]
    return pd.DataFrame.from_dict(data, orient="index", columns=list(INPAINT_COLUMNS))
