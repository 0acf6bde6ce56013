"""What the chapters show: one module per chapter, each loading the stage results its chapter
displays and turning them into tables, figures and sentences. Chapters only narrate, call these
functions and display what they return (a test checks that no chapter defines a function, runs a
loop or computes a statistic).

Every module declares ``needs(cfg)``: the stage requests its chapter shows. ``python -m trcgl run
all`` resolves all of them before the chapters execute, and ``check-book`` re-derives their keys
to refuse a chapter whose inputs changed since it ran.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from ..cache import ArtifactCache
from ..config import Config

#: chapter (notebook stem) -> view module
CHAPTER_VIEWS = {
    "00_overview": "overview",
    "01_data_long_tail": "data",
    "02_prompt_diffusion": "diffusion",
    "03_channel_class_attention": "attention",
    "04_label_gcn": "gcn",
    "05_main_results": "results",
    "06_ablation_sensitivity": "ablation",
    "07_inpainting_augmentation": "inpainting",
    "08_claims_ledger": "claims",
}


def view(chapter: str):
    """The view module of a chapter."""
    return importlib.import_module(f"{__name__}.{CHAPTER_VIEWS[chapter]}")


def chapter_needs(chapter: str, cfg: Config) -> list:
    return list(view(chapter).needs(cfg))


def all_needs(cfg: Config) -> list:
    return [r for chapter in CHAPTER_VIEWS for r in chapter_needs(chapter, cfg)]


@dataclass
class Chapter:
    """A chapter's configuration, device and cache; :meth:`get` resolves a stage request."""

    cfg: Config
    device: Any
    cache: ArtifactCache

    def get(self, req) -> Any:
        from ..stages import get

        return get(req, self.cache)


def setup(namespace: dict) -> Chapter:
    """The chapter's configuration from its papermill parameters (``globals()``), seeded, with the
    device and the run's cache; the tables' display set up (:func:`.common.table_display`)."""
    from ..config import from_notebook
    from ..runtime import seed_everything, select_device, set_threads
    from .common import table_display

    table_display()
    cfg = from_notebook(namespace)
    set_threads(cfg.threads)           # the profile's torch threads (trcgl.runtime.torch_threads)
    seed_everything(cfg.seed, cfg.deterministic)
    return Chapter(cfg, select_device(cfg.device), ArtifactCache())


def target_requests(cfg: Config, target: str) -> list:
    """The requests of a ``run`` target: ``all`` (every chapter's needs), a chapter (its stem, e.g.
    ``05_main_results``), or a named group of stages (:data:`trcgl.stages.TARGETS`)."""
    from ..stages import target_requests as stage_targets

    if target == "all":
        return all_needs(cfg)
    if target in CHAPTER_VIEWS:
        return chapter_needs(target, cfg)
    return stage_targets(cfg, target)


def run(cfg: Config, target: str, cache: ArtifactCache | None = None, shuffle: int | None = None,
        cooperative: bool = False, reverse: bool = False) -> list:
    """Resolve a target (computing what is missing), publish its tables into the results store,
    and return the runner's ledger entries of this call (``python -m trcgl run``). ``shuffle``: visit
    the target's requests in an order drawn with this seed (``run --shuffle``), so that processes
    started at once on one cache with different seeds mostly compute different stages instead of
    waiting for each other's locks; the artifacts and the results store do not depend on the order.
    ``cooperative`` (``run --workers``): a request whose stage (or an input's) another process is
    computing is put back at the end of the queue, and the next one is tried; only when a whole
    round of the queue found nothing to do does the process wait for a lock. ``reverse``: visit
    the requests last to first (the first helper of ``run --workers``: the two processes start at
    the two ends, so the long stages of the last chapters do not all wait for the end)."""
    from collections import deque

    import numpy as np

    from ..cache import Busy
    from ..graph import runner
    from ..seedtables import publish, results_store

    r = runner(cache)
    start = len(r.ledger)
    requests = target_requests(cfg, target)
    if shuffle is not None:
        requests = [requests[i] for i in np.random.default_rng(shuffle).permutation(len(requests))]
    if reverse:
        requests = requests[::-1]
    queue, idle = deque(requests), 0
    while queue:
        req = queue.popleft()
        before = len(r.ledger)
        r.wait = not cooperative or idle > len(queue)      # a whole round without progress: wait
        try:
            art = r.resolve(req)
        except Busy:
            queue.append(req)
            idle = 0 if len(r.ledger) > before else idle + 1
            continue
        finally:
            r.wait = True
        idle = 0
        if art.stage == "table":
            publish(results_store(cfg), art.value.name, art.value.records)
    return r.ledger[start:]
