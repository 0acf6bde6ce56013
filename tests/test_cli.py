import subprocess
import sys


def _run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "trcgl", *args], capture_output=True, text=True, cwd=cwd)


def test_help_lists_the_commands():
    out = _run("--help")
    assert out.returncode == 0
    for command in ("config", "info", "execute", "build-book", "check-book", "cache"):
        assert command in out.stdout


def test_unknown_profile_is_one_clean_error():
    out = _run("config", "--profile", "huge")
    assert out.returncode == 2
    assert "invalid choice: 'huge' (choose from 'smoke', 'cpu', 'gpu', 'paper')" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


def test_config_prints_the_override():
    out = _run("config", "--profile", "smoke", "--set", "data.image_size=40")
    assert out.returncode == 0 and "image_size: 40" in out.stdout


def test_missing_notebook_and_stale_book_are_clean_errors(tmp_path):
    out = _run("execute", str(tmp_path / "nope.py"), "--profile", "smoke")
    assert out.returncode == 2 and "no such notebook source" in out.stderr
    out = _run("check-book", "--root", str(tmp_path))
    assert out.returncode == 2 and "no _toc.yml" in out.stderr and "Traceback" not in out.stderr


def test_unknown_notebook_parameter_is_refused_before_a_kernel_starts(repo_root):
    out = _run("execute", str(repo_root / "notebooks" / "00_overview.py"), "--profile", "smoke",
               "-p", "dificulty", "2")
    assert out.returncode == 2 and "unknown notebook parameter(s) ['dificulty']" in out.stderr


def test_a_failing_chapter_is_one_clean_error(repo_root, tmp_path):
    source = tmp_path / "notebooks" / "09_broken.py"
    source.parent.mkdir()
    source.write_text('# %% tags=["parameters"]\nprofile = "smoke"\ndevice = "cpu"\n\n# %%\nraise ValueError("no data here")\n')
    out = _run("execute", str(source), "--profile", "smoke", cwd=tmp_path)
    assert out.returncode == 2
    assert "09_broken.py failed in the cell beginning `raise ValueError(" in out.stderr
    assert "ValueError: no data here" in out.stderr
    assert "Traceback" not in out.stderr
    assert (tmp_path / "notebooks" / "09_broken.failed.ipynb").exists()
    assert not (tmp_path / "notebooks" / "09_broken.ipynb").exists()


def test_version_and_debug():
    from trcgl import __version__

    out = _run("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"trcgl {__version__}"
    out = _run("--debug", "config", "--set", "data.image_size=0")
    assert out.returncode == 1 and "Traceback (most recent call last)" in out.stderr
    assert "ConfigError: data.image_size must be >= 8 and <= 1024; got 0" in out.stderr


def test_cache_clear_asks_and_without_a_yes_removes_nothing(tmp_path):
    import os

    from trcgl.cache import ArtifactCache

    cache = ArtifactCache(tmp_path)
    cache.get_or_compute("stage", {"a": 1}, lambda work: (work / "x").write_text("x"))
    env = {**os.environ, "TRCGL_RUN_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "trcgl", "cache", "clear"], capture_output=True, text=True,
                         env=env, stdin=subprocess.DEVNULL)
    assert out.returncode == 2 and "nothing removed" in out.stderr and "--yes" in out.stderr
    assert cache.exists("stage", {"a": 1})
    out = subprocess.run([sys.executable, "-m", "trcgl", "cache", "clear", "--yes"], capture_output=True,
                         text=True, env=env)
    assert out.returncode == 0 and "removed 1 cached artifacts" in out.stdout
    assert not cache.exists("stage", {"a": 1})
