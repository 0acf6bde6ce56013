"""`make reproduce` in one checkout, one profile after another: every book it builds is checked in
the browser. The Makefile runs in a scratch folder with a stand-in for the venv's python that logs
each `python -m trcgl COMMAND` and writes what the real command writes (the executed notebooks;
the book's index.html only when missing, as Sphinx leaves an unchanged page alone; the build stamp,
through trcgl.book as the real build does), and a stand-in `chromium` on PATH, so that nothing is
installed. The build stamp itself: written by every build that succeeded, by none that failed."""
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from trcgl import book

from .conftest import ROOT

STUB_PY = '''#!{python}
"""Stands in for `.venv/bin/python -m trcgl ...` under make: logs the command, writes its outputs."""
import os
import sys
from pathlib import Path

from trcgl import book

args = sys.argv[1:]
assert args[:2] == ["-m", "trcgl"], args
with open(os.environ["STUB_LOG"], "a") as log:
    log.write(" ".join(args[2:]) + "\\n")
command = args[2]
if command == "run":
    Path(os.environ["TRCGL_RUN_DIR"]).mkdir(exist_ok=True)      # the run folder, with the stages' cache
elif command == "execute":
    Path(args[3]).with_suffix(".ipynb").write_text("{{}}")
elif command == "build-book":
    html = Path("_build/html")
    html.mkdir(parents=True, exist_ok=True)
    if not (html / "index.html").exists():         # Sphinx rewrites only pages whose sources changed
        (html / "index.html").write_text("<html>intro</html>")
    book.write_build_stamp(Path("."), html, sorted(Path("notebooks").glob("*.ipynb")))
'''


@pytest.fixture
def checkout(tmp_path):
    """The Makefile in a scratch checkout: two chapters, a book source, an installed 'venv'."""
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    for name in ("pyproject.toml", "uv.lock", "_config.yml", "_toc.yml", "book/intro.md",
                 "notebooks/01_a.py", "notebooks/02_b.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("# stand-in\n")
    past = time.time() - 10
    for name in ("pyproject.toml", "uv.lock"):
        os.utime(tmp_path / name, (past, past))
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / ".installed").touch()                       # installed after the lock was written
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for name, text in (("python", STUB_PY.format(python=sys.executable)), ("chromium", "#!/bin/sh\nexit 0\n")):
        (bin_ / name).write_text(text)
        (bin_ / name).chmod(0o755)
    return tmp_path


def reproduce(checkout, profile):
    """`make reproduce PROFILE=...`; the trcgl commands it ran, by name."""
    log = checkout / "commands.log"
    log.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}  # under `make test`
    env.update(PATH=f"{checkout / 'bin'}:{env['PATH']}", STUB_LOG=str(log), PYTHONPATH=str(ROOT))
    out = subprocess.run(["make", "--no-print-directory", "reproduce", f"PROFILE={profile}",
                          f"PY={checkout / 'bin' / 'python'}", f"UV={shutil.which('true')}"],
                         cwd=checkout, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = log.read_text().splitlines() if log.exists() else []
    return Counter(line.split()[0] for line in lines), lines


def test_every_book_make_reproduce_builds_is_checked_in_the_browser(checkout):
    once = Counter({"run": 1, "execute": 2, "build-book": 1, "check-site": 1})
    smoke, lines = reproduce(checkout, "smoke")
    assert smoke == once, lines
    time.sleep(0.05)
    cpu, lines = reproduce(checkout, "cpu")      # the README's order: smoke first, then the cpu book
    assert cpu == once, lines                    # built once, and checked
    assert any("--profile cpu" in line for line in lines), lines
    again, lines = reproduce(checkout, "cpu")
    assert again == Counter(), lines             # nothing changed: nothing built, nothing checked
    (checkout / "_build" / "html" / "index.html").unlink()
    gone, lines = reproduce(checkout, "cpu")
    assert gone == Counter({"build-book": 1, "check-site": 1}), lines


def _fake_jupyter_book(tmp_path, code):
    exe = tmp_path / "jupyter-book"
    exe.write_text(f"#!{sys.executable}\nimport sys\nfrom pathlib import Path\n"
                   "html = Path(sys.argv[2]) / '_build' / 'html'\nhtml.mkdir(parents=True, exist_ok=True)\n"
                   "index = html / 'index.html'\nindex.exists() or index.write_text('<html></html>')\n"
                   f"sys.exit({code})\n")
    exe.chmod(0o755)
    return exe


def test_the_build_stamp_is_new_after_every_build_and_absent_after_a_failed_one(tmp_path, monkeypatch):
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: book/intro\n")
    monkeypatch.setattr(book, "_jupyter_book", lambda: _fake_jupyter_book(tmp_path, 0))
    html = book.build(tmp_path, run_dir=tmp_path / "runs")
    stamp = tmp_path / book.BUILD_STAMP
    assert stamp.is_file() and html == tmp_path / "_build" / "html"
    first, index = stamp.stat().st_mtime_ns, (html / "index.html").stat().st_mtime_ns
    time.sleep(0.05)
    book.build(tmp_path, run_dir=tmp_path / "runs")
    assert stamp.stat().st_mtime_ns > first                     # a new build, though index.html was left alone
    assert (html / "index.html").stat().st_mtime_ns == index
    monkeypatch.setattr(book, "_jupyter_book", lambda: _fake_jupyter_book(tmp_path, 1))
    with pytest.raises(book.BookError, match="jupyter-book build failed"):
        book.build(tmp_path, run_dir=tmp_path / "runs")
    assert not stamp.exists()                                   # make builds it again
    assert Path(html / "index.html").exists()
