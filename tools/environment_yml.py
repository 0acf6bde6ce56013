"""Write environment.yml (the conda mirror) from uv.lock: every locked runtime package, pinned.

Run by `make environment.yml` after `uv lock`; tests/test_environment.py fails when the two
disagree. The pins come from `uv export` (the lock's own exporter), markers included, so a
conda user gets the same 180-odd versions as `make install`, not just the direct dependencies.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEADER = """\
# GENERATED from uv.lock by `make environment.yml` (tools/environment_yml.py): do not edit.
# `make` uses uv and uv.lock; this file is for readers who prefer conda:
#   conda env create -f environment.yml && conda activate trcgl
# Every package pip installs is pinned to the lock's version (tests/test_environment.py checks it).
name: trcgl
channels:
  - conda-forge
dependencies:
  - python=3.11
  - pip
  - pip:
"""


def exported_requirements(uv: str) -> list[str]:
    """The lock's runtime packages as requirement lines (``name==version ; marker``)."""
    out = subprocess.run(
        [uv, "export", "--frozen", "--no-dev", "--no-hashes", "--no-emit-project", "--no-header",
         "--no-annotate", "--format", "requirements-txt"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout
    return [line.strip() for line in out.splitlines() if line.strip() and not line.startswith("#")]


def render(requirements: list[str]) -> str:
    lines = [f"      - {json.dumps(req)}" for req in requirements] + ["      - -e ."]
    return HEADER + "\n".join(lines) + "\n"


def main() -> int:
    uv = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("UV", "uv")
    (ROOT / "environment.yml").write_text(render(exported_requirements(uv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
