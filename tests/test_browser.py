"""The browser check: planted defects are caught, and every page of the smoke book passes."""
import json
import re
import shutil
import subprocess
import sys

import pytest

from trcgl.site_check import SiteCheckError, check_site, find_chromium

from pathlib import Path

from .conftest import ROOT

needs_chromium = pytest.mark.skipif(find_chromium() is None, reason="Chromium is not installed (apt-get install chromium)")

PIXEL = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d4944415478da63f8cfc0f01f0005000201a5e0d4a60000000049454e44ae426082")


def planted_site(root):
    (root / "index.html").write_text('<html><body><h1 id="top">ok</h1><img src="pixel.png">'
                                     '<a href="page.html#sec">fine</a><a href="#top">self</a>'
                                     '<a href="https://example.org/x">external</a></body></html>')
    (root / "pixel.png").write_bytes(PIXEL)
    (root / "page.html").write_text('<html><body><h2 id="sec">s</h2>'
                                    '<img src="missing.png"><a href="nope.html">gone</a><a href="index.html#nowhere">bad anchor</a>'
                                    '<div class="cell_output"><div class="output traceback"><pre>Traceback (most recent call last):\n'
                                    'ValueError: boom</pre></div></div></body></html>')


@needs_chromium
def test_planted_defects_are_reported_and_a_clean_page_passes(tmp_path):
    planted_site(tmp_path)
    reports = {r.page: r for r in check_site(tmp_path, screenshots=tmp_path / "shots")}
    assert reports["index.html"].ok, reports["index.html"].problems()
    bad = reports["page.html"]
    assert bad.missing_images == ["missing.png"]
    assert any("nope.html" in b for b in bad.broken_links) and any("#nowhere" in b for b in bad.broken_links)
    assert any("missing.png" in f for f in bad.failed_requests)
    assert bad.tracebacks == 1 and bad.error_cells == 1 and not bad.ok
    assert (tmp_path / "shots" / "index.png").stat().st_size > 1000


MATH_PAGE = ('<html><head>{head}</head><body><p>inline <span class="math notranslate nohighlight">\\(E = mc^2\\)</span></p>'
             '<div class="math notranslate nohighlight">\\[\\sum_{{i=1}}^n x_i\\]</div></body></html>')


def mathjax_folder():
    """MathJax as the book ships it: the files of the PyPI package sphinx-mathjax-offline."""
    import importlib.util

    spec = importlib.util.find_spec("sphinx-mathjax-offline")
    return Path(spec.origin).parent / "static" / "mathjax"


@needs_chromium
def test_a_request_leaving_localhost_is_blocked_and_reported(tmp_path):
    """A planted external script (the CDN MathJax the book used to load) fails the page."""
    (tmp_path / "index.html").write_text('<html><head><script src="https://cdn.mathjax.invalid/es5/tex-chtml.js">'
                                         '</script></head><body><img src="http://images.example.invalid/x.png">'
                                         '<a href="https://example.org/">a link is not a request</a></body></html>')
    report = check_site(tmp_path)[0]
    assert report.external_requests == ["http://images.example.invalid/x.png",
                                        "https://cdn.mathjax.invalid/es5/tex-chtml.js"]
    assert not report.ok and "external requests: http://images.example.invalid/x.png" in report.problems()


@needs_chromium
def test_equations_must_be_rendered_by_a_local_mathjax(tmp_path):
    import shutil

    shutil.copytree(mathjax_folder(), tmp_path / "_static" / "mathjax")
    (tmp_path / "index.html").write_text(MATH_PAGE.format(head='<script defer src="_static/mathjax/tex-chtml.js"></script>'))
    (tmp_path / "raw.html").write_text(MATH_PAGE.format(head=""))      # no MathJax: raw TeX
    reports = {r.page: r for r in check_site(tmp_path)}
    good, raw = reports["index.html"], reports["raw.html"]
    assert (good.math, good.math_rendered) == (2, 2) and good.ok, good.problems()
    assert (raw.math, raw.math_rendered) == (2, 0) and "2 of 2 equations not rendered by MathJax" in raw.problems()


def test_no_site_or_no_browser_is_a_clear_error(tmp_path, monkeypatch):
    with pytest.raises(SiteCheckError, match="no built book"):
        check_site(tmp_path)
    (tmp_path / "index.html").write_text("<html></html>")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CHROMIUM", raising=False)
    with pytest.raises(SiteCheckError, match="Chromium not found"):
        check_site(tmp_path)


@pytest.mark.slow
@needs_chromium
def test_every_page_of_the_smoke_book_passes_in_chromium(smoke_book):
    _, _, html = smoke_book
    if isinstance(html, Exception):
        raise html
    shots = ROOT / "_build" / "screenshots"
    reports = check_site(html, screenshots=shots)
    assert len(reports) >= 10
    bad = {r.page: r.problems() for r in reports if not r.ok}
    assert not bad, bad
    assert (shots / "index.png").exists() and any(p.name != "index.png" for p in shots.glob("*.png"))


@needs_chromium
def test_a_redirect_page_is_followed_not_crashed_on(tmp_path):
    (tmp_path / "index.html").write_text('<html><head><meta http-equiv="Refresh" content="0; url=book/intro.html" />'
                                         '</head></html>')
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "intro.html").write_text("<html><body><p>hello</p></body></html>")
    reports = {r.page: r for r in check_site(tmp_path, screenshots=tmp_path / "shots")}
    assert reports["index.html"].ok and reports["book/intro.html"].ok
    assert (tmp_path / "shots" / "index.png").exists()
    (tmp_path / "book" / "intro.html").unlink()
    reports = {r.page: r for r in check_site(tmp_path)}
    assert any("intro.html" in b for b in reports["index.html"].broken_links)


# ----------------------------------------------------------------------------- the built smoke book, offline

PROGRESS = re.compile(r"\d+%\|[^|\n]*\|\s*\d+/\d+|\d+(?:\.\d+)?(?:it|s)/(?:s|it)\]|Loading pipeline components")


def _book_pages(html):
    return [p for p in Path(html).rglob("*.html") if not {"_static", "_sources"} & set(p.relative_to(html).parts)]


def test_the_progress_pattern_finds_tqdm_lines():
    assert PROGRESS.search("rendering train phantoms: 100%|██████████| 300/300 [00:02<00:00, 120.5img/s]")
    assert PROGRESS.search("epoch 3:  40%|████      | 4/10 [00:01<00:02,  2.87it/s]")
    assert PROGRESS.search("Loading pipeline components...: 100%")
    assert not PROGRESS.search("mAP 41.2% (95% CI 38.0-44.1) | 30 classes")


@pytest.mark.slow
def test_no_page_of_the_smoke_book_shows_a_progress_bar(smoke_book):
    _, _, html = smoke_book
    if isinstance(html, Exception):
        raise html
    pages = _book_pages(html)
    assert any(p.parent.name == "notebooks" for p in pages)
    found = {p.relative_to(html).as_posix(): m.group(0) for p in pages if (m := PROGRESS.search(p.read_text()))}
    assert not found, found


def _network_cut():
    """A command prefix that runs with the network cut (a new network namespace, loopback up)."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return None
    probe = subprocess.run(["unshare", "-n", "sh", "-c", "ip link set lo up"], capture_output=True)
    return ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$0" "$@"'] if probe.returncode == 0 else None


OFFLINE_CHECK = """
import json, sys
from trcgl.site_check import check_site
print(json.dumps([dict(vars(r), ok=r.ok, problems=r.problems()) for r in check_site(sys.argv[1])]))
"""


@pytest.mark.slow
@needs_chromium
@pytest.mark.skipif(_network_cut() is None, reason="cannot cut the network here (unshare -n needs root)")
def test_the_smoke_book_renders_its_equations_with_the_network_cut(smoke_book):
    _, _, html = smoke_book
    if isinstance(html, Exception):
        raise html
    out = subprocess.run([*_network_cut(), sys.executable, "-c", OFFLINE_CHECK, str(html)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    reports = {r["page"]: r for r in json.loads(out.stdout.strip().splitlines()[-1])}
    assert not {p: r["problems"] for p, r in reports.items() if not r["ok"]}
    glossary = reports["book/glossary.html"]
    assert glossary["math"] > 0 and glossary["math_rendered"] == glossary["math"]   # mjx-container, not TeX
    assert sum(r["math_rendered"] for r in reports.values()) >= 5
