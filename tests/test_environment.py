"""pyproject.toml, uv.lock and environment.yml must name the same versions."""
import re
import shutil
import tomllib

import pytest
import yaml

from .conftest import ROOT


def _norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(deps):
    pins = {}
    for dep in deps:
        name, version = dep.split("==")
        pins[_norm(name)] = version
    return pins


def _pyproject(root):
    return tomllib.loads((root / "pyproject.toml").read_text())


def _lock(root):
    return tomllib.loads((root / "uv.lock").read_text())


def test_every_dependency_is_pinned_and_test_tools_are_dev_only(repo_root):
    project = _pyproject(repo_root)
    runtime = project["project"]["dependencies"]
    dev = project["dependency-groups"]["dev"]
    for dep in runtime + dev:
        assert re.fullmatch(r"[A-Za-z0-9_.\-]+==[\w.+]+", dep), dep
    assert {"pytest", "ruff"} <= set(_pins(dev))
    assert not {"pytest", "ruff", "open-clip-torch"} & set(_pins(runtime))


def test_lock_file_resolves_the_pins(repo_root):
    locked = {_norm(p["name"]): p["version"] for p in _lock(repo_root)["package"]}
    project = _pyproject(repo_root)
    for name, version in _pins(project["project"]["dependencies"] + project["dependency-groups"]["dev"]).items():
        assert locked.get(name) == version, name


def _runtime_closure(lock) -> dict[str, str]:
    """Every package the lock installs for the project without its dev group (markers ignored)."""
    packages = {_norm(p["name"]): p for p in lock["package"]}
    todo, seen = list(packages["trcgl"].get("dependencies", [])), {}
    while todo:
        dep = todo.pop()
        name = _norm(dep["name"])
        for extra in dep.get("extra", []):   # name[extra]: the extra's packages too
            todo += packages[name].get("optional-dependencies", {}).get(extra, [])
        if name in seen:
            continue
        seen[name] = packages[name]["version"]
        todo += packages[name].get("dependencies", [])
    return seen


def _environment_pins(root) -> dict[str, str]:
    env = yaml.safe_load((root / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip[-1] == "-e ." and "python=3.11" in env["dependencies"]
    pins = {}
    for item in pip[:-1]:
        name, version = item.split(";")[0].strip().split("==")
        pins[_norm(name.split("[")[0])] = version
    return pins


def test_environment_yml_pins_every_locked_runtime_package(repo_root):
    env = _environment_pins(repo_root)
    closure = _runtime_closure(_lock(repo_root))
    missing = {n: v for n, v in closure.items() if n not in env}
    assert not missing, f"locked packages missing from environment.yml: {missing}; run `make environment.yml`"
    wrong = {n: (env[n], v) for n, v in closure.items() if env[n] != v}
    assert not wrong, f"environment.yml disagrees with uv.lock: {wrong}; run `make environment.yml`"
    extra = sorted(set(env) - set(closure))
    assert not extra, f"environment.yml pins packages the lock does not install: {extra}"
    assert "pytest" not in env and "ruff" not in env and len(env) > 150


def _uv():
    return shutil.which("uv") or (str(ROOT / ".tools" / "bin" / "uv") if (ROOT / ".tools" / "bin" / "uv").exists() else None)


@pytest.mark.skipif(_uv() is None, reason="uv is not installed (make install puts it in .tools/)")
def test_environment_yml_is_what_the_generator_writes(repo_root):
    import importlib.util

    spec = importlib.util.spec_from_file_location("environment_yml", repo_root / "tools" / "environment_yml.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    expected = module.render(module.exported_requirements(_uv()))
    assert (repo_root / "environment.yml").read_text() == expected, "run `make environment.yml`"
