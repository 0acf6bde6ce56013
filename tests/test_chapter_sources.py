"""Chapters narrate, call and display: no function or class definitions, no loops, no training,
no statistics or verdict thresholds inside a chapter (they live in trcgl.views and the stages)."""
import ast

import jupytext
import pytest

from .conftest import CHAPTERS, ROOT

#: names whose call in a chapter means computing instead of displaying
FORBIDDEN_CALLS = {"fit_classifier", "train_classifier", "fit_prompt_diffusion", "fit_vae", "fit_normal_dit",
                   "evaluate", "bootstrap_means", "paired_differences", "mean", "std", "sum", "quantile", "median",
                   "corrcoef", "argsort", "idxmax", "idxmin", "backward", "step"}
FORBIDDEN_NODES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda, ast.For, ast.AsyncFor, ast.While,
                   ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


def logic_in(source: str) -> list[str]:
    """What a chapter's code cells do that a chapter must not (empty: only narrate, call, display)."""
    found = []
    for cell in jupytext.reads(source, fmt="py:percent").cells:
        if cell.cell_type != "code":
            continue
        tree = ast.parse(cell.source)
        for node in ast.walk(tree):
            if isinstance(node, FORBIDDEN_NODES):
                found.append(f"line {node.lineno}: {type(node).__name__}")
            elif isinstance(node, ast.Call):
                name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                if name in FORBIDDEN_CALLS:
                    found.append(f"line {node.lineno}: call to {name}()")
            elif isinstance(node, ast.Compare) and any(
                    isinstance(c, ast.Constant) and isinstance(c.value, (int, float)) and not isinstance(c.value, bool)
                    for c in [node.left, *node.comparators]):
                found.append(f"line {node.lineno}: a numeric threshold")
    return found


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_holds_no_logic(chapter):
    assert logic_in((ROOT / "notebooks" / f"{chapter}.py").read_text()) == []


def test_the_check_finds_planted_logic():
    planted = ("# %%\ndef f(x):\n    return x\n\n# %%\nfor i in range(3):\n    print(i)\n\n"
               "# %%\nm = scores.mean()\nok = m > 0.8\nrows = [r for r in rows]\n")
    found = logic_in(planted)
    assert any("FunctionDef" in f for f in found) and any("For" in f for f in found)
    assert any("mean()" in f for f in found) and any("threshold" in f for f in found)
    assert any("ListComp" in f for f in found)
    assert logic_in("# %%\nfig = view.figure(ch)\nplt.show()\nview.table(ch)\n") == []
