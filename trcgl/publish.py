"""Publishing the built book: ``_build/html`` onto a ``gh-pages`` branch with ghp-import.

:func:`publish` refuses a book that would mislead a reader, unless forced: chapters whose
executed notebooks are missing, failed or stale (:func:`trcgl.book.check_fresh`), a chapter page
built before its notebook was last executed (the HTML shows older outputs), and a book executed
in the ``smoke`` profile (tiny numbers that only prove the code runs) or in several profiles at
once. Then ghp-import (the ecosystem's tool) commits the HTML, with a ``.nojekyll`` file, to the
branch and pushes it to the remote.
"""
from __future__ import annotations

import contextlib
import json
import subprocess
from pathlib import Path

from .book import BookError, chapter_sources, check_fresh
from .errors import TrcglError


class PublishError(TrcglError, RuntimeError):
    """The book cannot be published as it stands (not built, stale, smoke profile, git failed)."""


def book_problems(root: Path, html: Path) -> list[str]:
    """Why the built book at ``html`` should not be published (empty when it may be)."""
    problems = []
    try:
        executed = check_fresh(root)
    except BookError as err:
        return [" ".join(str(err).split())]
    profiles: dict[str, list[str]] = {}
    for nb_path in executed:
        meta = json.loads(nb_path.read_text()).get("metadata", {})
        profile = str(meta.get("papermill", {}).get("parameters", {}).get("profile", "?"))
        profiles.setdefault(profile, []).append(nb_path.stem)
        page = html / nb_path.relative_to(root).with_suffix(".html")
        if not page.is_file():
            problems.append(f"{page.relative_to(html)} is not in the built book: run `make book`")
        elif page.stat().st_mtime < nb_path.stat().st_mtime:
            problems.append(f"{page.relative_to(html)} was built before {nb_path.name} was last executed: run `make book`")
    if "smoke" in profiles:
        problems.append(f"chapters {', '.join(profiles['smoke'])} were executed in the smoke profile, whose numbers "
                        "only prove that the code runs: run `make reproduce` (PROFILE=cpu or paper)")
    if len(profiles) > 1:
        problems.append("the chapters were executed in different profiles ("
                        + "; ".join(f"{p}: {', '.join(c)}" for p, c in sorted(profiles.items()))
                        + "): run `make reproduce` with one PROFILE")
    return problems


def publish(root: Path | str = ".", remote: str = "origin", branch: str = "gh-pages", force: bool = False,
            push: bool = True, html: Path | str | None = None) -> str:
    """Commit the built book to ``branch`` (and push it to ``remote``) with ghp-import; returns
    what was done. Raises :class:`PublishError` for a book that is missing, or stale / smoke-profile
    without ``force``, and when git fails."""
    import ghp_import

    root = Path(root).resolve()
    html = Path(html).resolve() if html else root / "_build" / "html"
    if not (html / "index.html").is_file():
        raise PublishError(f"no built book at {html} (index.html missing): run `make reproduce` first")
    if not chapter_sources(root):
        raise PublishError(f"no chapters listed in {root / '_toc.yml'}: is {root} the repository root?")
    problems = book_problems(root, html)
    if problems and not force:
        raise PublishError("refusing to publish: " + "; ".join(problems)
                           + " (FORCE=1 / --force publishes anyway)")
    message = f"Publish the book built in {html.relative_to(root) if html.is_relative_to(root) else html}" + (
        f" (forced despite: {'; '.join(problems)})" if problems else "")
    with contextlib.chdir(root):
        try:
            ghp_import.ghp_import(str(html), remote=remote, branch=branch, mesg=message, push=push, nojekyll=True)
        except ghp_import.GhpError as err:
            raise PublishError(f"ghp-import failed in {root}: {err.message}") from None
        except (subprocess.CalledProcessError, OSError) as err:  # git missing, or `git push` failed
            raise PublishError(f"publishing to {remote}/{branch} failed ({type(err).__name__}: "
                               f"{' '.join(str(err).split())[:200]}); see git's message above") from None
    where = f"pushed to {remote} {branch}" if push else f"committed to the local branch {branch} (not pushed)"
    return f"book published: {html} {where}" + (" (forced)" if problems else "")
