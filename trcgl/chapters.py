"""The map from the paper's sections to the book's chapters and the package's modules."""
from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

CHAPTERS = [
    {"paper": "Fig. 1, Sec. 3", "chapter": "00_overview", "modules": ["trcgl.config", "trcgl.runtime", "trcgl.cache", "trcgl.plots"],
     "topic": "the pipeline, profiles, caching"},
    {"paper": "Sec. 4.1, Fig. 2", "chapter": "01_data_long_tail", "modules": ["trcgl.data.padchest", "trcgl.data.phantom", "trcgl.data.prompts"],
     "topic": "real PadChest labels, the long tail, phantom radiographs"},
    {"paper": "Sec. 3.1, Fig. 3, Eq. 1-6", "chapter": "02_prompt_diffusion", "modules": ["trcgl.diffusion"],
     "topic": "prompt-latent diffusion for tail classes"},
    {"paper": "Sec. 3.2, Eq. 7-14", "chapter": "03_channel_class_attention", "modules": ["trcgl.models"],
     "topic": "channel reweighting and class-aware attention"},
    {"paper": "Sec. 3.3, Eq. 15-25", "chapter": "04_label_gcn", "modules": ["trcgl.models"],
     "topic": "the label co-occurrence GCN"},
    {"paper": "Sec. 4.4-4.5, Tables 1-2, Figs. 4-5", "chapter": "05_main_results",
     "modules": ["trcgl.tables", "trcgl.seedtables", "trcgl.models.baselines", "trcgl.localization"],
     "topic": "baselines and head/medium/tail results"},
    {"paper": "Sec. 4.6-4.7, Tables 3-5", "chapter": "06_ablation_sensitivity",
     "modules": ["trcgl.tables", "trcgl.seedtables", "trcgl.results", "trcgl.released"],
     "topic": "ablation and sensitivity"},
    {"paper": "second paper, Eq. 1-3, Tables 3-4", "chapter": "07_inpainting_augmentation", "modules": ["trcgl.inpaint"],
     "topic": "normal-image inpainting augmentation"},
    {"paper": "Sec. 4, Tables 1-5", "chapter": "08_claims_ledger", "modules": ["trcgl.claims"],
     "topic": "every claim of the paper against this run, and the paper against itself"},
]


def chapter_map(notebooks_dir: Path) -> list[dict]:
    """CHAPTERS with each entry's state read from disk: is the chapter written, do its modules exist."""
    rows = []
    for entry in CHAPTERS:
        written = (Path(notebooks_dir) / f"{entry['chapter']}.py").is_file()
        present = [m for m in entry["modules"] if _importable(m)]
        rows.append({
            "paper": entry["paper"], "chapter": entry["chapter"], "topic": entry["topic"],
            "modules": ", ".join(entry["modules"]),
            "status": "in this book" if written and len(present) == len(entry["modules"]) else
                      "missing: " + ", ".join([*([] if written else [f"{entry['chapter']}.py"]),
                                                *sorted(set(entry["modules"]) - set(present))]),
        })
    return rows


def _importable(module: str) -> bool:
    try:
        return find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False
