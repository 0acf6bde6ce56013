"""Chapter 0 (overview): the run, the profile, the chapter map."""
from __future__ import annotations

import pandas as pd


def needs(cfg) -> list:
    return []


def this_run(ch) -> pd.DataFrame:
    """Profile, config digest and the machine (Chapter 0's first table)."""
    from ..runtime import describe

    return pd.Series({"profile": ch.cfg.profile, "config hash": ch.cfg.hash(), **describe(ch.device)},
                     name="this run").to_frame()


def data_settings(ch) -> pd.DataFrame:
    """The active profile's data settings."""
    return pd.Series(ch.cfg.data.to_dict(), name=ch.cfg.profile).astype(str).to_frame()


def chapter_table(notebooks_dir: str = "notebooks") -> pd.DataFrame:
    from ..chapters import chapter_map

    return pd.DataFrame(chapter_map(notebooks_dir)).set_index("chapter")
