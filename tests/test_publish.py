"""`make publish`: the built book onto a gh-pages branch with ghp-import, against a local bare repository."""
import json
import os
import subprocess
import sys
import time

import pytest

from trcgl import book


def _git(*args, cwd):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def built_repo(tmp_path):
    """A repository with one executed chapter and its built book, and a bare repository as `origin`."""
    bare = tmp_path / "remote.git"
    _git("init", "--bare", "-q", str(bare), cwd=tmp_path)
    repo = tmp_path / "repo"
    (repo / "notebooks").mkdir(parents=True)
    (repo / "book").mkdir()
    _git("init", "-q", cwd=repo)
    _git("config", "user.name", "Test Publisher", cwd=repo)
    _git("config", "user.email", "publisher@example.invalid", cwd=repo)
    _git("remote", "add", "origin", str(bare), cwd=repo)
    (repo / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n  - file: notebooks/01_x\n")
    (repo / "book" / "intro.md").write_text("# Intro\n")
    source = repo / "notebooks" / "01_x.py"
    source.write_text('# %% tags=["parameters"]\nprofile = "cpu"\n')
    set_profile(repo, "cpu")
    html = repo / "_build" / "html"
    (html / "notebooks").mkdir(parents=True)
    (html / "index.html").write_text("<html>index</html>")
    (html / "notebooks" / "01_x.html").write_text("<html>chapter</html>")
    return repo, bare


def set_profile(repo, profile):
    source = repo / "notebooks" / "01_x.py"
    nb = {"cells": [], "nbformat": 4, "nbformat_minor": 5,
          "metadata": {"trcgl": {"source_sha256": book.source_digest(source)},
                       "papermill": {"parameters": {"profile": profile, "device": "cpu"}, "exception": None}}}
    path = source.with_suffix(".ipynb")
    path.write_text(json.dumps(nb))
    past = time.time() - 100          # executed before the book was built
    os.utime(path, (past, past))


def publish(repo, *args):
    return subprocess.run([sys.executable, "-m", "trcgl", "publish", *args], cwd=repo, capture_output=True, text=True)


def published(bare):
    files = _git("ls-tree", "-r", "--name-only", "gh-pages", cwd=bare).split()
    commits = _git("rev-list", "--count", "gh-pages", cwd=bare).strip()
    return sorted(files), int(commits)


def test_publish_pushes_the_built_book_to_gh_pages(built_repo):
    repo, bare = built_repo
    out = publish(repo)
    assert out.returncode == 0, out.stderr
    assert "book published" in out.stdout and "pushed to origin gh-pages" in out.stdout
    assert published(bare) == ([".nojekyll", "index.html", "notebooks/01_x.html"], 1)
    log = _git("log", "-1", "--format=%an %s", "gh-pages", cwd=bare)
    assert log.startswith("Test Publisher Publish the book built in _build/html")


@pytest.mark.parametrize("problem", ["smoke", "stale source", "page older", "not built"])
def test_publish_refuses_a_misleading_book_unless_forced(built_repo, problem):
    repo, bare = built_repo
    expect = {"smoke": "executed in the smoke profile",
              "stale source": "executed from another version of 01_x.py",
              "page older": "notebooks/01_x.html was built before 01_x.ipynb was last executed",
              "not built": "no built book at"}[problem]
    if problem == "smoke":
        set_profile(repo, "smoke")
    elif problem == "stale source":
        (repo / "notebooks" / "01_x.py").write_text('# %% tags=["parameters"]\nprofile = "paper"\n')
    elif problem == "page older":
        later = (repo / "_build" / "html" / "notebooks" / "01_x.html").stat().st_mtime + 10
        os.utime(repo / "notebooks" / "01_x.ipynb", (later, later))   # executed again after the build
    else:
        (repo / "_build" / "html" / "index.html").unlink()
    out = publish(repo)
    assert out.returncode == 2 and expect in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    assert _git("branch", "--list", "gh-pages", cwd=bare).strip() == ""    # nothing pushed
    forced = publish(repo, "--force")
    if problem == "not built":
        assert forced.returncode == 2 and "no built book" in forced.stderr
    else:
        assert forced.returncode == 0 and "(forced)" in forced.stdout, forced.stderr
        assert published(bare)[1] == 1


def test_a_second_publish_adds_a_commit_and_a_bad_remote_is_one_clear_error(built_repo):
    repo, bare = built_repo
    assert publish(repo).returncode == 0
    (repo / "_build" / "html" / "index.html").write_text("<html>index, rebuilt</html>")
    assert publish(repo).returncode == 0
    assert published(bare)[1] == 2
    out = publish(repo, "--remote", "nowhere")
    assert out.returncode == 2 and "publishing to nowhere/gh-pages failed" in out.stderr
    assert "Traceback" not in out.stderr


def test_make_publish_runs_the_command_with_remote_and_force(repo_root):
    out = subprocess.run(["make", "-n", "publish", "REMOTE=upstream", "FORCE=1"], cwd=repo_root,
                         capture_output=True, text=True)
    assert "-m trcgl publish --remote upstream --force" in out.stdout
