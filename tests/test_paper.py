"""The paper's reference values match the paper's text (when the text is beside the checkout)."""
import pytest

from trcgl import paper

from .conftest import ROOT

TEXT = ROOT.parent / "shared" / "paper" / "trcgl-net-2607.00975.txt"


@pytest.mark.skipif(not TEXT.exists(), reason="the paper's text is not beside this checkout")
@pytest.mark.parametrize("name,data", [("1", paper.TABLE_1), ("2", paper.TABLE_2), ("3", paper.TABLE_3),
                                       ("4", paper.TABLE_4), ("5", paper.TABLE_5)])
def test_reference_values_are_the_papers(name, data):
    lines = TEXT.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"Table {name}."))
    block = lines[start:start + 14]
    for row, values in data.items():
        cells = " ".join(f"{v:.4f}" for v in values)
        assert any(" ".join(line.split("\t")[-len(values):]).strip() == cells for line in block), (name, row)


def test_table_frames_label_their_columns_as_the_papers():
    df = paper.table(3)
    assert all(c.endswith("(paper)") for c in df.columns)
    assert df.loc["+ label GCN (full)", "mAP (paper)"] == 0.4408


INPAINT_TEXT = ROOT.parent / "shared" / "paper" / "xray-insights-normal-inpainting.txt"


@pytest.mark.skipif(not INPAINT_TEXT.exists(), reason="the paper's text is not beside this checkout")
@pytest.mark.parametrize("name,data,markers", [
    ("3", paper.INPAINT_TABLE_3, {"no augmentation": "\t-\t", "prompt diffusion": "DfT-Caption",
                                  "inpainting": "DfT-Inpainting"}),
    ("4", paper.INPAINT_TABLE_4, None)])
def test_inpainting_paper_values_are_its_own(name, data, markers):
    lines = INPAINT_TEXT.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"Table {name}:"))
    block = [line for line in lines[start:start + 20] if "\t" in line]
    f1 = [line.split("\t")[-1].split("(")[0].strip() or line.split("\t")[-2].split("(")[0].strip() for line in block]
    for row, (chexpert, mimic) in data.items():
        assert f"{chexpert:g}" in f1 and f"{mimic:g}" in f1, (name, row)
        if markers:
            assert any(markers[row] in line and f"{chexpert:g}" in line for line in block), (name, row)
