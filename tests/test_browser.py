"""The browser check: planted defects are caught, and every page of the smoke book passes."""
import pytest

from trcgl.site_check import SiteCheckError, check_site, find_chromium

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
