"""Configuration: profiles as data.

``configs/defaults.yaml`` holds every parameter with its default; ``configs/profiles/<name>.yaml``
overrides some of them for one scale (``smoke`` for CI, ``cpu`` for a laptop, ``paper`` for a GPU
with real PadChest images). A preset (``configs/presets/<name>.yaml``, e.g. ``released``: the
authors' released code) is applied on top of the profile: it changes what is trained, not its
scale. Overrides are dotted keys (``"data.image_size": 128``); a key that is not in the defaults is
an error, never a silent new setting.
"""
from __future__ import annotations

import copy
import hashlib
import json
from importlib import resources
from typing import Any, Mapping

import yaml

from .errors import TrcglError

PROFILES = ("smoke", "cpu", "paper")


def presets() -> tuple[str, ...]:
    """The names of the presets in ``configs/presets/``."""
    folder = resources.files("trcgl").joinpath("configs", "presets")
    return tuple(sorted(f.name[:-5] for f in folder.iterdir() if f.name.endswith(".yaml")))

#: Notebook parameter name -> dotted config key. A notebook's papermill ``parameters`` cell holds
#: ``profile``, ``device`` and names from this table; each defaults to ``None`` in the notebook,
#: meaning "take the profile's value", so every default lives in the YAML files above.
NOTEBOOK_PARAMETERS: dict[str, str] = {
    "seed": "seed",
    "seeds": "seeds",
    "data_source": "data.source",
    "class_set": "data.class_set",
    "split_seed": "data.split_seed",
    "image_size": "data.image_size",
    "n_train": "data.n_train",
    "n_val": "data.n_val",
    "padchest_root": "paths.padchest_root",
    "on_missing": "data.on_missing",
    "lam": "model.lam",
    "gate_scale": "model.gate_scale",
    "alpha": "model.alpha",
    "tau": "model.tau",
    "tau_diagonal": "model.tau_diagonal",
    "gcn_score": "model.gcn_score",
    "finetune_epochs": "train.finetune_epochs",
    "backbone": "model.backbone",
    "checkpoint": "model.checkpoint",
    "difficulty": "phantom.difficulty",
    "label_noise": "phantom.label_noise",
    "text_encoder": "diffusion.text_encoder",
    "text_encoder_path": "paths.text_encoder",
    "context_vectors": "diffusion.context_vectors",
    "class_specific_context": "diffusion.class_specific_context",
    "diffusion_epochs": "diffusion.epochs",
    "guidance_scale": "diffusion.guidance_scale",
    "target_groups": "diffusion.target_groups",
    "synthetic_weight": "diffusion.synthetic_weight",
    "diffusion_pipeline": "paths.diffusion_pipeline",
    "synthetic_weights": "tables.synthetic_weights",
    "alphas": "tables.alphas",
    "clip_image_encoder": "paths.clip_image_encoder",
    "n_normal": "inpaint.n_normal",
    "cam_threshold": "inpaint.cam_threshold",
    "keep_groups": "inpaint.keep_groups",
    "guard": "inpaint.guard",
    "guard_threshold": "inpaint.guard_threshold",
    "pil_beta": "train.pil_beta",
    "preset": "preset",
}


class ConfigError(TrcglError, ValueError):
    """A bad profile name, an unknown key or a value of the wrong type."""


def _read_yaml(*parts: str) -> dict:
    text = resources.files("trcgl").joinpath("configs", *parts).read_text()
    return yaml.safe_load(text) or {}


def _merge(base: dict, over: Mapping, where: str = "") -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        path = f"{where}{key}"
        if key not in out:
            raise ConfigError(f"unknown config key '{path}' (known: {', '.join(sorted(out))})")
        if isinstance(out[key], dict):
            if not isinstance(value, Mapping):
                raise ConfigError(f"config key '{path}' is a section; got {value!r}")
            out[key] = _merge(out[key], value, path + ".")
        else:
            out[key] = _check_type(path, out[key], value)
    return out


def _check_type(path: str, default: Any, value: Any) -> Any:
    if default is None or value is None:
        return value
    if isinstance(default, bool) or isinstance(value, bool):
        ok = isinstance(default, bool) and isinstance(value, bool)
    elif isinstance(default, (int, float)) and isinstance(value, (int, float)):
        return float(value) if isinstance(default, float) else _as_int(path, value)
    else:
        ok = type(default) is type(value)
    if not ok:
        raise ConfigError(
            f"config key '{path}' expects {type(default).__name__} (default {default!r}); got {value!r}"
        )
    return value


def _as_int(path: str, value: float) -> int:
    if float(value).is_integer():
        return int(value)
    raise ConfigError(f"config key '{path}' expects an integer; got {value!r}")


def _nest(dotted: Mapping[str, Any]) -> dict:
    nested: dict = {}
    for key, value in dotted.items():
        node = nested
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return nested


def parse_assignment(text: str) -> tuple[str, Any]:
    """``"data.image_size=128"`` -> ``("data.image_size", 128)`` (the value is read as YAML)."""
    if "=" not in text:
        raise ConfigError(f"expected KEY=VALUE, got {text!r} (e.g. data.image_size=128)")
    key, value = text.split("=", 1)
    return key.strip(), yaml.safe_load(value)


class Config:
    """A resolved configuration: nested, read-only, with attribute and dotted access."""

    def __init__(self, data: Mapping[str, Any]):
        self._data = copy.deepcopy(dict(data))

    def __getattr__(self, name: str) -> Any:
        try:
            value = self._data[name]
        except KeyError:
            raise AttributeError(f"config has no key '{name}'") from None
        return Config(value) if isinstance(value, dict) else copy.deepcopy(value)

    def __getitem__(self, dotted: str) -> Any:
        node: Any = self._data
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                raise KeyError(f"config has no key '{dotted}'")
            node = node[part]
        return Config(node) if isinstance(node, dict) else copy.deepcopy(node)

    def __contains__(self, dotted: str) -> bool:
        try:
            self[dotted]
        except KeyError:
            return False
        return True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Config) and self._data == other._data

    def __repr__(self) -> str:
        return f"Config({self._data!r})"

    def to_dict(self) -> dict:
        return copy.deepcopy(self._data)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self._data, sort_keys=False)

    def replace(self, overrides: Mapping[str, Any]) -> "Config":
        """A copy with dotted-key overrides applied (unknown keys are an error)."""
        return Config(_merge(self._data, _nest(overrides)))

    def subset(self, *keys: str) -> dict:
        """The values of some dotted keys, e.g. what one cached stage depends on."""
        out = {}
        for key in keys:
            value = self[key]
            out[key] = value.to_dict() if isinstance(value, Config) else value
        return out

    def hash(self, *keys: str) -> str:
        """A short stable hash of the whole config, or of some of its keys."""
        payload = self.subset(*keys) if keys else self._data
        return config_hash(payload)


def config_hash(payload: Any) -> str:
    """sha256 of the canonical JSON of ``payload`` (sorted keys), first 16 hex digits."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _flatten(nested: Mapping, where: str = "") -> dict:
    out = {}
    for key, value in nested.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{where}{key}."))
        else:
            out[f"{where}{key}"] = value
    return out


def preset_overrides(name: str) -> dict:
    """The dotted overrides of a preset (its file may hold nested sections or dotted keys)."""
    if name not in presets():
        raise ConfigError(f"unknown preset '{name}': choose one of {', '.join(presets())}")
    return _flatten(_read_yaml("presets", f"{name}.yaml"))


def apply_preset(cfg: "Config", name: str) -> "Config":
    """``cfg`` with a preset's overrides, and ``preset`` set to its name."""
    return cfg.replace({**preset_overrides(name), "preset": name})


def load_config(profile: str = "cpu", overrides: Mapping[str, Any] | None = None, preset: str | None = None,
                **notebook_params) -> Config:
    """Defaults, then the profile, then the preset (if any), then dotted overrides, then notebook parameters.

    Notebook parameters (names in :data:`NOTEBOOK_PARAMETERS`, plus ``device``) that are ``None``
    keep the profile's value. The preset may also come as the override or notebook parameter
    ``preset``; the resolved configuration records it in ``preset``.
    """
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile '{profile}': choose one of {', '.join(PROFILES)}")
    data = _merge(_read_yaml("defaults.yaml"), _read_yaml("profiles", f"{profile}.yaml"))
    dotted = dict(overrides or {})
    asked = {p for p in (preset, dotted.pop("preset", None)) if p is not None}
    if len(asked) > 1:
        raise ConfigError(f"two presets asked for: {sorted(asked)}; choose one")
    if asked:
        data = apply_preset(Config(data), asked.pop()).to_dict()
    for name, value in notebook_params.items():
        if value is None:
            continue
        if name == "device":
            dotted["device"] = value
        elif name in NOTEBOOK_PARAMETERS:
            dotted[NOTEBOOK_PARAMETERS[name]] = value
        else:
            raise ConfigError(
                f"unknown notebook parameter '{name}' (known: device, {', '.join(sorted(NOTEBOOK_PARAMETERS))})"
            )
    cfg = Config(data).replace(dotted)
    if cfg.device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"device must be auto, cpu or cuda; got '{cfg.device}'")
    return cfg


def from_notebook(namespace: Mapping[str, Any]) -> Config:
    """The configuration of a chapter: ``profile``, ``device`` and every notebook parameter found in
    ``namespace`` (a notebook passes ``globals()``, which holds papermill's injected values)."""
    params = {name: namespace[name] for name in NOTEBOOK_PARAMETERS if name in namespace}
    return load_config(namespace.get("profile", "cpu"), device=namespace.get("device"), **params)


def check_notebook_parameters(names) -> None:
    """Refuse a parameter a chapter would not understand (instead of silently ignoring it)."""
    unknown = sorted(set(names) - {"profile", "device"} - set(NOTEBOOK_PARAMETERS))
    if unknown:
        raise ConfigError(f"unknown notebook parameter(s) {unknown}; known: profile, device, "
                          f"{', '.join(sorted(NOTEBOOK_PARAMETERS))}")
