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


def long_code_lines(source: str, width: int = 88) -> list[str]:
    """Code-cell lines wider than ``width`` columns (they scroll sideways on the page)."""
    return [line for cell in jupytext.reads(source, fmt="py:percent").cells if cell.cell_type == "code"
            for line in cell.source.splitlines() if len(line) > width]


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_code_fits_the_page(chapter):
    assert long_code_lines((ROOT / "notebooks" / f"{chapter}.py").read_text()) == []
    assert long_code_lines("# %%\nx = 1\n# %% [markdown]\n# " + "w" * 100 + "\n") == []
    assert long_code_lines("# %%\nx = " + "1" * 100 + "\n") != []


def test_the_check_finds_planted_logic():
    planted = ("# %%\ndef f(x):\n    return x\n\n# %%\nfor i in range(3):\n    print(i)\n\n"
               "# %%\nm = scores.mean()\nok = m > 0.8\nrows = [r for r in rows]\n")
    found = logic_in(planted)
    assert any("FunctionDef" in f for f in found) and any("For" in f for f in found)
    assert any("mean()" in f for f in found) and any("threshold" in f for f in found)
    assert any("ListComp" in f for f in found)
    assert logic_in("# %%\nfig = view.figure(ch)\nplt.show()\nview.table(ch)\n") == []


def test_figures_only_draw():
    """plots.py imports no other trcgl module: what it draws is computed elsewhere."""
    tree = ast.parse((ROOT / "trcgl" / "plots.py").read_text())
    imports = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and (n.level or (n.module or "").startswith("trcgl"))]
    assert imports == [], [f"line {n.lineno}: from {'.' * n.level}{n.module}" for n in imports]


def test_lower_layers_never_import_higher_ones():
    """The trainer, models, data and method modules import neither the stage graph, the tables, the
    views nor the book (the one exception the layout had: train.py importing the inpainting code)."""
    high = ("stages", "graph", "views", "tables", "seedtables", "book", "cli", "released")
    low = [ROOT / "trcgl" / f for f in ("train.py", "losses.py", "metrics.py", "ema.py", "cache.py", "config.py")]
    low += sorted((ROOT / "trcgl" / "models").glob("*.py")) + sorted((ROOT / "trcgl" / "data").glob("*.py"))
    low += sorted((ROOT / "trcgl" / "diffusion").glob("*.py"))
    bad = []
    for path in low:
        for n in ast.walk(ast.parse(path.read_text())):
            if isinstance(n, ast.ImportFrom):
                name = (n.module or "").split(".")
                if (n.level and name and name[0] in high) or (not n.level and len(name) > 1 and name[0] == "trcgl" and name[1] in high):
                    bad.append(f"{path.name}: from {'.' * n.level}{n.module}")
            if path.name == "train.py" and isinstance(n, ast.ImportFrom) and "inpaint" in (n.module or ""):
                bad.append(f"train.py: from {n.module}")
    assert bad == []
