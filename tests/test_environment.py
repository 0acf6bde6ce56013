"""pyproject.toml, environment.yml and uv.lock must name the same versions."""
import re
import tomllib

import yaml


def _norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def _pyproject(root):
    deps = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {}
    for dep in deps:
        name, version = dep.split("==")
        pins[_norm(name)] = version
    return pins


def test_every_dependency_is_pinned(repo_root):
    deps = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]["dependencies"]
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[\w.+]+", d) for d in deps), deps


def test_environment_yml_mirrors_pyproject(repo_root):
    env = yaml.safe_load((repo_root / "environment.yml").read_text())
    pins = {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            for item in dep["pip"]:
                if item.startswith("-e"):
                    continue
                name, version = item.split("==")
                pins[_norm(name)] = version
        elif "=" in dep:
            name, version = dep.split("=", 1)
            if name != "python":
                pins[_norm(name)] = version
    assert pins == _pyproject(repo_root)
    assert "python=3.11" in env["dependencies"]


def test_lock_file_resolves_the_pins(repo_root):
    lock = tomllib.loads((repo_root / "uv.lock").read_text())
    locked = {_norm(p["name"]): p["version"] for p in lock["package"]}
    for name, version in _pyproject(repo_root).items():
        assert locked.get(name) == version, name
