import os
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory):
    from trcgl.cache import ArtifactCache

    return ArtifactCache(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="session")
def real_table(session_cache):
    """The real PadChest label table (parsed once per test session)."""
    from trcgl.data.padchest import load_table

    return load_table(cache=session_cache)


@pytest.fixture(scope="session")
def paper_cohort(real_table):
    from trcgl.data.padchest import build_cohort

    return build_cohort(real_table, "paper", split_seed=42)
