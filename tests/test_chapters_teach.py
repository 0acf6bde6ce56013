"""Every method chapter teaches: it ends with 2-4 exercises, each with a collapsible hint, and
cites its sources from the bibliography."""
import re

import pytest

from .conftest import CHAPTERS, ROOT

METHOD_CHAPTERS = [c for c in CHAPTERS if c != "00_overview"]


def bib_keys():
    return set(re.findall(r"^@\w+\{([^,]+),", (ROOT / "book" / "references.bib").read_text(), flags=re.M))


@pytest.mark.parametrize("chapter", METHOD_CHAPTERS)
def test_chapter_ends_with_exercises_and_hints(chapter):
    """Typed in the chapter's last markdown cell, or (where they name the run's values) built by its
    view from the configuration (tests/test_prose.py renders them from the smoke configuration)."""
    from trcgl import load_config

    from .test_prose import chapter_exercises

    text = (ROOT / "notebooks" / f"{chapter}.py").read_text()
    assert "## Exercises" in text, f"{chapter} has no Exercises section"
    tail = re.sub(r"^# ?", "", text[text.index("## Exercises"):], flags=re.M)
    tail += chapter_exercises(chapter, load_config("smoke"))
    exercises = re.findall(r"^(\d+)\. ", tail, flags=re.M)
    hints = tail.count("{admonition} Hint")
    assert 2 <= len(exercises) <= 4, f"{chapter}: {len(exercises)} exercises"
    assert hints == len(exercises), f"{chapter}: {hints} hints for {len(exercises)} exercises"
    assert tail.count(":class: dropdown") == hints


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_citations_exist_in_the_bibliography(chapter):
    text = (ROOT / "notebooks" / f"{chapter}.py").read_text()
    cited = set(k.strip() for group in re.findall(r"\{cite[pt]?\}`([^`]+)`", text) for k in group.split(","))
    assert cited <= bib_keys(), f"{chapter} cites unknown keys {cited - bib_keys()}"
