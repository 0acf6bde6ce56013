"""The rendered book as a reader's browser sees it: every page opened in headless Chromium.

:func:`check_site` serves a built ``_build/html`` folder on localhost, opens each page with
Playwright driving the system's Chromium (Debian's ``chromium`` package; no browser download),
and reports per page: images that did not load, internal links whose target page or anchor does
not exist, requests to the local server that failed, any request that would leave localhost
(blocked and reported: the book must read offline), equations that MathJax did not render, a
Python traceback in the text, and error cells of executed notebooks. It also saves screenshots
of the index and of one chapter.
"""
from __future__ import annotations

import functools
import html
import os
import re
import shutil
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urldefrag, urljoin, urlsplit
from .errors import TrcglError

SKIP_DIRS = {"_static", "_sources", "_images", "_sphinx_design_static", "_panels_static"}


class SiteCheckError(TrcglError, RuntimeError):
    """The check cannot run (no built site, no Chromium)."""


@dataclass
class PageReport:
    page: str
    missing_images: list[str] = field(default_factory=list)
    broken_links: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    external_requests: list[str] = field(default_factory=list)
    tracebacks: int = 0
    error_cells: int = 0
    math: int = 0                 # math elements on the page (Sphinx's .math spans and divs)
    math_rendered: int = 0        # ... that MathJax turned into its output (mjx-container)

    @property
    def ok(self) -> bool:
        return not (self.missing_images or self.broken_links or self.failed_requests or self.external_requests
                    or self.tracebacks or self.error_cells or self.math_rendered < self.math)

    def problems(self) -> str:
        parts = []
        if self.math_rendered < self.math:
            parts.append(f"{self.math - self.math_rendered} of {self.math} equations not rendered by MathJax")
        for name in ("missing_images", "broken_links", "failed_requests", "external_requests"):
            items = getattr(self, name)
            if items:
                parts.append(f"{name.replace('_', ' ')}: {', '.join(items[:5])}" + (" ..." if len(items) > 5 else ""))
        if self.tracebacks:
            parts.append("a Python traceback in the text")
        if self.error_cells:
            parts.append(f"{self.error_cells} error cell(s)")
        return "; ".join(parts)


def find_chromium() -> str | None:
    """``$CHROMIUM``, or chromium / chromium-browser / google-chrome on the PATH."""
    if os.environ.get("CHROMIUM"):
        return os.environ["CHROMIUM"]
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def pages(html_dir: Path) -> list[Path]:
    """Every HTML page of a built book (theme and source folders left out)."""
    return sorted(p for p in Path(html_dir).rglob("*.html")
                  if not SKIP_DIRS & set(p.relative_to(html_dir).parts[:-1]))


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):  # no access log on stderr
        pass


@contextmanager
def serve(html_dir: Path):
    """Serve ``html_dir`` on 127.0.0.1 at a free port; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(html_dir))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@functools.lru_cache(maxsize=None)
def _ids(path: Path) -> frozenset[str]:
    text = path.read_text(errors="replace")
    return frozenset(html.unescape(m) for m in re.findall(r'\b(?:id|name)="([^"]+)"', text))


def _link_problem(href: str, base: str, html_dir: Path, here: Path) -> str | None:
    """Why an internal link is broken (None when it is fine)."""
    url, fragment = urldefrag(href)
    path = unquote(urlsplit(url).path)
    target = html_dir / path.lstrip("/")
    if target.is_dir():
        target = target / "index.html"
    if not target.is_file():
        return f"{href[len(base):] or '/'} (no such file)"
    if fragment and target.suffix == ".html" and unquote(fragment) not in _ids(target):
        return f"{href[len(base):]} (no anchor #{fragment})"
    return None


_REFRESH = re.compile(r'<meta[^>]+http-equiv="refresh"[^>]+url=([^"]+)"', re.IGNORECASE)

_MISSING_IMAGES_JS = "els => els.filter(e => !(e.complete && e.naturalWidth > 0)).map(e => e.getAttribute('src'))"

# [math elements, of which rendered]: waits (at most `ms`) for MathJax to finish typesetting.
_MATH_JS = """async (ms) => {
  const maths = () => [...document.querySelectorAll('.math')];
  if (!maths().length) return [0, 0];
  const started = window.MathJax && MathJax.startup && MathJax.startup.promise;
  if (started) {
    await Promise.race([MathJax.startup.promise, new Promise(r => setTimeout(r, ms))]);
  }
  return [maths().length, maths().filter(e => e.querySelector('mjx-container')).length];
}"""


def _is_local(url: str, base: str) -> bool:
    return url.startswith(base) or url.split(":", 1)[0] in ("data", "blob", "about")


def _watch(page, base: str, failed: list[str], external: list[str]) -> None:
    """Record failed local requests and block (and record) every request that leaves localhost."""
    def on_response(r):
        if r.url.startswith(base) and r.status >= 400:
            failed.append(f"{r.url[len(base):]} ({r.status})")

    def on_failed(r):
        if r.url.startswith(base):
            failed.append(f"{r.url[len(base):]} (failed)")

    def route(r):
        if _is_local(r.request.url, base):
            r.continue_()
        else:
            external.append(r.request.url)
            r.abort("blockedbyclient")

    page.on("response", on_response)
    page.on("requestfailed", on_failed)
    page.route("**/*", route)


def check_site(html_dir: Path | str, screenshots: Path | str | None = None, chromium: str | None = None,
               timeout_ms: int = 30000) -> list[PageReport]:
    """Open every page of ``html_dir`` in headless Chromium; one :class:`PageReport` per page."""
    html_dir = Path(html_dir).resolve()
    if not (html_dir / "index.html").is_file():
        raise SiteCheckError(f"no built book at {html_dir} (index.html missing): run `make reproduce` or `make book` first")
    chromium = chromium or find_chromium()
    if chromium is None:
        raise SiteCheckError("Chromium not found: install Debian's `chromium` package (apt-get install chromium) "
                             "or set $CHROMIUM to a Chromium/Chrome executable")
    from playwright.sync_api import sync_playwright

    reports = []
    all_pages = pages(html_dir)
    chapter = next((p for p in all_pages if p.parent.name == "notebooks"), None)
    with serve(html_dir) as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        for path in all_pages:
            rel = path.relative_to(html_dir).as_posix()
            report = PageReport(rel)
            page = context.new_page()
            failed: list[str] = []
            external: list[str] = []
            _watch(page, base, failed, external)
            redirect = _REFRESH.search(path.read_text(errors="replace"))
            if redirect:  # a redirect page (Jupyter Book's root index.html): check where it points
                target = urljoin(base + rel, html.unescape(redirect.group(1)))
                problem = _link_problem(target, base, html_dir, path) if target.startswith(base) else None
                if problem:
                    report.broken_links.append(problem)
                elif screenshots is not None and rel == "index.html":
                    page.goto(target, wait_until="load", timeout=timeout_ms)
                    Path(screenshots).mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(Path(screenshots) / "index.png"))
                report.external_requests = sorted(set(external))
                page.close()
                reports.append(report)
                continue
            page.goto(base + rel, wait_until="load", timeout=timeout_ms)
            report.math, report.math_rendered = page.evaluate(_MATH_JS, min(timeout_ms, 20000))
            report.missing_images = [s or "?" for s in page.eval_on_selector_all("img", _MISSING_IMAGES_JS)]
            hrefs = page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)")
            seen = set()
            for href in hrefs:
                if not href.startswith(base) or href in seen:
                    continue
                seen.add(href)
                problem = _link_problem(href, base, html_dir, path)
                if problem:
                    report.broken_links.append(problem)
            text = page.inner_text("body")
            report.tracebacks = int("Traceback (most recent call last)" in text)
            report.error_cells = len(page.query_selector_all(".cell_output .output.traceback, .cell_output .output.error"))
            report.failed_requests = sorted(set(failed))
            report.external_requests = sorted(set(external))
            if screenshots is not None and (rel == "index.html" or path == chapter):
                Path(screenshots).mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(Path(screenshots) / (path.stem + ".png")), full_page=False)
            page.close()
            reports.append(report)
        browser.close()
    return reports
