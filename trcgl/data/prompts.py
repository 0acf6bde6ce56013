"""English prompts from a row's labels and its sentence-level localizations (paper Sec. 3.1).

"chest x-ray with pleural effusion in the left costophrenic angle and cardiomegaly". The class
names are the class set's; the locations are PadChest's own localization tokens of the sentences
that carry the finding, rendered in English (``locations.json``). Prompts are deterministic
given the row and a seed.
"""
from __future__ import annotations

import json
from importlib import resources
from typing import Sequence

import numpy as np

from .phantom import stable_seed

TEMPLATES = ("chest x-ray with {}", "frontal chest radiograph showing {}", "PA chest x-ray: {}")
NORMAL_PROMPT = "normal chest x-ray, no acute cardiopulmonary findings"
SIDES = {"loc right": "right", "loc left": "left", "loc bilateral": "bilateral"}


def _english() -> dict[str, dict]:
    return json.loads(resources.files("trcgl.data").joinpath("locations.json").read_text())["locations"]


_LOCATIONS = _english()


def location_phrase(tokens: Sequence[str]) -> str:
    """``["loc left", "loc costophrenic angle"]`` -> ``"in the left costophrenic angle"``."""
    side = next((SIDES[t] for t in tokens if t in SIDES), None)
    region = next((_LOCATIONS[t]["english"] for t in tokens
                   if t in _LOCATIONS and t not in SIDES and _LOCATIONS[t]["box_xyxy_norm"]), None)
    if region is None:
        return f"on the {side} side" if side in ("right", "left") else ("bilaterally" if side else "")
    if side and not any(w in region for w in ("right", "left", "both", "bilateral")):
        region = f"{side} {region}" if side != "bilateral" else f"{region} on both sides"
    if region.startswith(("below", "above")):
        return region
    return f"in {region}" if region.startswith("both") else f"in the {region}"


def finding_phrases(classes: Sequence[str], padchest_labels: Sequence[Sequence[str]],
                    sentences: Sequence[Sequence[str]]) -> list[str]:
    """One phrase per class present, with the location its own sentences give (if any)."""
    phrases = []
    for name, strings in zip(classes, padchest_labels):
        own = set(strings) | {name}
        tokens = [t for s in sentences if any(x in own for x in s) for t in s if str(t).startswith("loc ")]
        where = location_phrase(tokens)
        phrases.append(f"{name} {where}".strip())
    return phrases


def _join(parts: Sequence[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def prompt_for_row(present: Sequence[str], class_set, sentences: Sequence[Sequence[str]] = (),
                   image_id: str = "", seed: int = 0, max_findings: int = 4) -> str:
    """The prompt of one label row (classes in class-set order; ``normal`` alone -> normal prompt).
    A row with more than ``max_findings`` findings keeps the last ones in class-set order, which
    runs from the head to the tail: a rare finding is never the one left out."""
    rng = np.random.default_rng(stable_seed(image_id, f"prompt{seed}"))
    findings = [c for c in class_set.classes if c in set(present) and c != "normal"]
    if not findings:
        return NORMAL_PROMPT
    idx = [class_set.index(c) for c in findings][-max_findings:]
    phrases = finding_phrases([class_set.classes[i] for i in idx],
                              [class_set.padchest_labels[i] for i in idx], sentences)
    return TEMPLATES[rng.integers(len(TEMPLATES))].format(_join(phrases))


def negation_prompt(absent: Sequence[str]) -> str:
    """"chest x-ray with no evidence of pneumothorax or pleural effusion"."""
    absent = [a for a in absent if a != "normal"]
    if not absent:
        return NORMAL_PROMPT
    body = absent[0] if len(absent) == 1 else ", ".join(absent[:-1]) + " or " + absent[-1]
    return f"chest x-ray with no evidence of {body}"
