"""The named targets of ``python -m trcgl run NAME``: groups of stage requests, in book order."""
from __future__ import annotations

from typing import Callable

from ..graph import Request, StageError
from .data import cohort, selection_set, test_set, train_set
from .inpainting import inpainted_set, normal_dit
from .prompt_diffusion import diffusion, oracle, synthetic_set
from .tables import table

#: What ``python -m trcgl run NAME`` resolves (``all``: every target).
TARGETS: dict[str, Callable] = {
    "cohort": lambda cfg: [cohort(cfg)],
    "image-sets": lambda cfg: [train_set(cfg), selection_set(cfg), test_set(cfg)],
    "diffusion": lambda cfg: [diffusion(cfg), diffusion(cfg.replace({"diffusion.context_vectors": 0}))],
    "synthetic": lambda cfg: [synthetic_set(cfg)],
    "oracle": lambda cfg: [oracle(cfg)] if cfg.data.source == "phantom" else [],
    "dit": lambda cfg: [normal_dit(cfg)],
    "inpainted": lambda cfg: [inpainted_set(cfg), inpainted_set(cfg, guard="off")],
    **{name: (lambda n: lambda cfg: [table(cfg, n)])(name)
       for name in ("table1", "table3", "table4", "table5", "inpaint_h2h", "inpaint_ablation", "released", "controls", "dose",
                    "gcn_conditions", "cca")},
    "components": lambda cfg: [table(cfg, "components", seeds=[cfg.seed])],
}


def target_requests(cfg, name: str) -> list[Request]:
    if name not in TARGETS:
        raise StageError(f"unknown target '{name}' (known: all, a chapter name, {', '.join(TARGETS)})")
    return TARGETS[name](cfg)
