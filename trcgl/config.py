"""Configuration: profiles as data.

``configs/defaults.yaml`` holds every parameter with its default; ``configs/profiles/<name>.yaml``
overrides some of them for one scale (``smoke`` for CI, ``cpu`` for a laptop, ``paper`` for a GPU
with real PadChest images). A preset (``configs/presets/<name>.yaml``, e.g. ``released``: the
authors' released code) is applied on top of the profile: it changes what is trained, not its
scale. Overrides are dotted keys (``"data.image_size": 128``); a key that is not in the defaults is
an error, never a silent new setting. ``configs/schema.yaml`` says what each key may hold (type,
range, allowed values); every resolved configuration is checked against it, so a bad value is one
:class:`ConfigError` naming the key, the value and what is allowed, before anything runs.
"""
from __future__ import annotations

import copy
import functools
import math
from importlib import resources
from typing import Any, Mapping

import yaml

from .errors import TrcglError

PROFILES = ("smoke", "cpu", "gpu", "paper")


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
    "n_selection": "data.n_selection",
    "n_test": "data.n_test",
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
    "label_condition": "diffusion.label_condition",
    "generator_repeat_factor": "diffusion.repeat_factor",
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


@functools.lru_cache(maxsize=1)
def schema() -> dict[str, dict]:
    """``configs/schema.yaml``: dotted key -> its rule (type, bounds, choices, nullable, neutral)."""
    return _read_yaml("schema.yaml")


def neutral_values() -> dict[str, Any]:
    """Dotted key -> the value at which that optional feature is off (the schema's ``neutral``).

    At these values an option changes nothing compared with the code before it existed, so cache
    keys can leave it out and artifacts computed before the option was added stay valid."""
    return {key: rule["neutral"] for key, rule in schema().items() if "neutral" in rule}


def dotted_keys(data: Mapping, prefix: str = "") -> dict[str, Any]:
    """``{"data": {"image_size": 64}}`` -> ``{"data.image_size": 64}`` (leaves only)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            out.update(dotted_keys(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


_TYPES = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
          "path": "a path (string)", "list": "a list"}


def check_value(key: str, value: Any, rule: Mapping | None = None) -> Any:
    """``value`` checked against the schema rule of ``key``; returns it normalised (an integral
    float as int, an int as float where a number is expected). Raises :class:`ConfigError`."""
    rule = schema().get(key) if rule is None else rule
    if rule is None:
        raise ConfigError(f"config key '{key}' has no entry in configs/schema.yaml (add one)")
    if value is None:
        if rule.get("nullable"):
            return None
        raise ConfigError(f"{key} cannot be null: it must be {_allowed(rule)}")
    kind = rule["type"]
    if kind == "list":
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} expects {_allowed(rule)}; got {value!r}")
        if len(value) < rule.get("min_items", 0):
            raise ConfigError(f"{key} must hold at least {rule['min_items']} item(s); got {list(value)!r}")
        item_rule = {k: v for k, v in rule.items() if k not in ("items", "min_items", "nullable")}
        item_rule["type"] = rule["items"]
        return [_check_scalar(v, rule["items"], item_rule, what=f"{key} item") for v in value]
    return _check_scalar(value, kind, rule, what=key)


def _check_scalar(value: Any, kind: str, rule: Mapping, what: str) -> Any:
    value = _bool_word(rule, value)
    if kind == "bool":
        ok = isinstance(value, bool)
    elif kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
        if not ok and isinstance(value, float) and value.is_integer():
            value, ok = int(value), True
    elif kind == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
        if ok and (math.isnan(value) or (math.isinf(value) and rule.get("finite", True))):
            # .inf / .nan pass every bound check or none; the schema's `finite: false` allows infinities
            bounds = " and ".join(f"{word} {rule[b]}" for b, (_, word) in _BOUNDS.items() if b in rule)
            raise ConfigError(f"{what} must be a finite number{' ' + bounds if bounds else ''}; got {value!r}")
    else:
        ok = isinstance(value, str) and (kind == "str" or value.strip() != "")
    if not ok:
        raise ConfigError(f"{what} expects {_TYPES[kind]}; got {value!r}")
    if "choices" in rule and value not in rule["choices"]:
        raise ConfigError(f"unknown {what} {value!r}: choose one of {', '.join(map(str, rule['choices']))}")
    if kind in ("int", "float") and not all(_BOUNDS[b][0](value, rule[b]) for b in _BOUNDS if b in rule):
        raise ConfigError(f"{what} must be {_allowed(rule)}; got {value!r}")
    return value


_BOUNDS = {"min": (lambda v, b: v >= b, ">="), "above": (lambda v, b: v > b, ">"),
           "max": (lambda v, b: v <= b, "<="), "below": (lambda v, b: v < b, "<")}


def _bool_word(rule: Mapping | None, value: Any) -> Any:
    """YAML reads a bare ``off`` / ``on`` as a boolean: turn it back into the word where the
    schema expects a string that can be ``off`` or ``on`` (``--set inpaint.guard=off``)."""
    if rule and isinstance(value, bool) and rule.get("type") in ("str", "path"):
        word = "on" if value else "off"
        if word in rule.get("choices", ()):
            return word
    return value


def _allowed(rule: Mapping) -> str:
    """What a rule allows, in words: ``one of a, b``, ``>= 1``, ``> 0 and < 1``, ``... or null``."""
    if "choices" in rule:
        text = "one of " + ", ".join(map(str, rule["choices"]))
    else:
        text = " and ".join(f"{word} {rule[b]}" for b, (_, word) in _BOUNDS.items() if b in rule)
    if rule["type"] == "list":
        noun = _TYPES[rule["items"]].split(" ", 1)[-1]
        text = f"a list of {noun}s" + (f", each {text}" if text else "")
    text = text or _TYPES[rule["type"]]
    return text + (" or null" if rule.get("nullable") else "")


def validate(data: Mapping) -> dict:
    """A nested configuration checked against the schema, key by key; returns it normalised."""
    rules = schema()
    flat = dotted_keys(data)
    unchecked = sorted(set(flat) - set(rules))
    if unchecked:
        raise ConfigError(f"config key(s) {unchecked} have no entry in configs/schema.yaml (add one)")
    checked = {key: check_value(key, copy.deepcopy(value), rules[key]) for key, value in flat.items()}   # its own
    if checked["data.tail_threshold"] > checked["data.head_threshold"]:
        raise ConfigError(f"data.tail_threshold ({checked['data.tail_threshold']}) must not exceed "
                          f"data.head_threshold ({checked['data.head_threshold']})")
    drw, epochs = checked["train.drw_epoch"], checked["train.warmup_epochs"] + checked["train.finetune_epochs"]
    if drw is not None and drw >= epochs:
        raise ConfigError(f"train.drw_epoch ({drw}) is past the schedule's last epoch ({epochs - 1}, 0-based): "
                          "deferred re-weighting would never act; set it below the number of epochs, or null")
    if checked["diffusion.pretrain_pool"] > checked["pretrain.n_pool"]:
        raise ConfigError(f"diffusion.pretrain_pool ({checked['diffusion.pretrain_pool']}) asks for more rows than the "
                          f"pool holds (pretrain.n_pool = {checked['pretrain.n_pool']}): lower it or raise pretrain.n_pool")
    return _nest(checked)


def _read_yaml(*parts: str) -> dict:
    """A packaged YAML file as a dict of its own (the caller may change it): each file is parsed
    once per process, as stage resolution asks for the defaults hundreds of times per run."""
    return copy.deepcopy(_parsed_yaml(parts))


@functools.lru_cache(maxsize=None)
def _parsed_yaml(parts: tuple[str, ...]) -> dict:
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
    value = _bool_word(schema().get(path), value)
    if default is None or value is None:
        return value
    if isinstance(default, float) and not isinstance(default, bool) and isinstance(value, str):
        value = _float_word(value)     # YAML 1.1 reads 5e-4 (no dot) as a string
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


def _float_word(text: str) -> Any:
    """``"5e-4"`` -> 0.0005; any other text unchanged (the type check then names it)."""
    try:
        return float(text)
    except ValueError:
        return text


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
    return key.strip(), parse_value(value, f"the value of {key.strip()}")


def parse_value(text: str, what: str = "a value") -> Any:
    """A command-line value read as YAML (``128``, ``null``, ``[1, 2]``); malformed YAML is one
    :class:`ConfigError` naming the text."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or type(err).__name__
        raise ConfigError(f"{what} is not valid YAML: {text!r} ({problem}); quote lists like '[1, 2]'") from None


class UndeclaredKey(ConfigError):
    """A stage read a config key it does not declare (see :mod:`trcgl.graph`)."""


class Config:
    """A resolved configuration: nested, read-only, with attribute and dotted access.

    :meth:`restrict` gives a *view* that may read only some keys: a stage of the stage graph
    gets such a view of exactly the keys it declares, so it can never depend on a setting that
    is missing from its cache key (reading another key raises :class:`UndeclaredKey`).
    """

    def __init__(self, data: Mapping[str, Any], _allowed: frozenset | None = None, _prefix: str = "",
                 _owner: str = ""):
        self._data = copy.deepcopy(dict(data))
        self._allowed = _allowed
        self._prefix = _prefix
        self._owner = _owner

    @classmethod
    def _over(cls, data: dict, allowed: frozenset | None = None, prefix: str = "", owner: str = "") -> "Config":
        """A Config over ``data`` without copying it: for data no one else can change (a section
        or view of a Config, or a dict just built), as a Config never changes its data. Stage
        resolution makes thousands of views per run."""
        self = cls.__new__(cls)
        self._data, self._allowed, self._prefix, self._owner = data, allowed, prefix, owner
        return self

    def _check(self, path: str, is_section: bool) -> None:
        if self._allowed is None:
            return
        for key in self._allowed:
            if path == key or path.startswith(key + "."):
                return
            if is_section and key.startswith(path + "."):
                return
        raise UndeclaredKey(f"{self._owner or 'this view'} reads config key '{path}', which it does not declare "
                            f"(declared: {', '.join(sorted(self._allowed))}); add it to the stage's reads in "
                            f"trcgl/stages/")

    def _wrap(self, path: str, value: Any) -> Any:
        self._check(path, isinstance(value, dict))
        if isinstance(value, dict):
            return Config._over(value, self._allowed, path, self._owner)
        return copy.deepcopy(value)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            value = self._data[name]
        except KeyError:
            raise AttributeError(f"config has no key '{self._prefix + '.' if self._prefix else ''}{name}'") from None
        return self._wrap(f"{self._prefix}.{name}" if self._prefix else name, value)

    def __getitem__(self, dotted: str) -> Any:
        node: Any = self._data
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                raise KeyError(f"config has no key '{dotted}'")
            node = node[part]
        return self._wrap(f"{self._prefix}.{dotted}" if self._prefix else dotted, node)

    def __contains__(self, dotted: str) -> bool:
        node: Any = self._data
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Config) and self._data == other._data

    def __repr__(self) -> str:
        return f"Config({self._data!r})"

    def to_dict(self) -> dict:
        """The (section's) values as a plain dict; a restricted view gives only its declared keys."""
        if self._allowed is None:
            return copy.deepcopy(self._data)
        return {k: (v.to_dict() if isinstance(v, Config) else v)
                for k in self._data if self._visible(k) for v in [getattr(self, k)]}

    def _visible(self, name: str) -> bool:
        path = f"{self._prefix}.{name}" if self._prefix else name
        return any(path == k or path.startswith(k + ".") or k.startswith(path + ".") for k in self._allowed)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def replace(self, overrides: Mapping[str, Any]) -> "Config":
        """A copy with dotted-key overrides applied; unknown keys and values the schema does not
        allow are a :class:`ConfigError`. A view stays a view."""
        if self._prefix:
            raise ConfigError("replace() works on a whole configuration, not on one section")
        return Config._over(validate(_merge(self._data, _nest(overrides))), self._allowed, "", self._owner)

    def restrict(self, keys, owner: str = "") -> "Config":
        """A view that may read only ``keys`` (dotted; a section name allows all of its keys)."""
        for key in keys:
            if key not in self:
                raise ConfigError(f"{owner or 'a view'} declares config key '{key}', which does not exist")
        return Config._over(self._data, frozenset(keys), "", owner)

    def unrestricted(self) -> "Config":
        """The full configuration behind a view."""
        return Config._over(self._data)

    def leaves(self, keys) -> dict[str, Any]:
        """``{dotted key: value}`` of every leaf under ``keys`` (sections expanded), sorted."""
        out: dict[str, Any] = {}

        def walk(path: str, value: Any) -> None:
            if isinstance(value, dict):
                for k, v in value.items():
                    walk(f"{path}.{k}", v)
            else:
                out[path] = copy.deepcopy(value)

        for key in keys:
            node: Any = self._data
            for part in key.split("."):
                node = node[part]
            walk(key, node)
        return dict(sorted(out.items()))

    def subset(self, *keys: str) -> dict:
        """The values of some dotted keys."""
        out = {}
        for key in keys:
            value = self[key]
            out[key] = value.to_dict() if isinstance(value, Config) else value
        return out

    def hash(self, *keys: str) -> str:
        """A short stable digest of the whole config, or of some of its keys."""
        from .cache import digest

        return digest(self.subset(*keys) if keys else self._data)


def preset_overrides(name: str) -> dict:
    """The dotted overrides of a preset (its file may hold nested sections or dotted keys)."""
    if name not in presets():
        raise ConfigError(f"unknown preset '{name}': choose one of {', '.join(presets())}")
    return dotted_keys(_read_yaml("presets", f"{name}.yaml"))


def apply_preset(cfg: "Config", name: str) -> "Config":
    """``cfg`` with a preset's overrides, and ``preset`` set to its name."""
    return cfg.replace({**preset_overrides(name), "preset": name})


@functools.lru_cache(maxsize=None)
def defaults() -> Config:
    """The package defaults alone (no profile): fixed recipes derive from them (one read-only
    Config per process)."""
    return Config._over(validate(_read_yaml("defaults.yaml")))


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
    return Config(data).replace(dotted)


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
