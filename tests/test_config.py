import re

import jupytext
import pytest

from trcgl.cache import digest
from trcgl.config import NOTEBOOK_PARAMETERS, PROFILES, ConfigError, load_config, parse_assignment


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_loads_and_names_itself(profile):
    cfg = load_config(profile)
    assert cfg.profile == profile
    assert cfg.data.class_set == "paper"
    assert isinstance(cfg.data.image_size, int)


def test_profiles_differ_in_scale():
    smoke, cpu, paper = (load_config(p) for p in PROFILES)
    assert smoke.data.n_train < cpu.data.n_train
    assert paper.data.n_train is None  # all rows
    assert smoke.data.image_size <= cpu.data.image_size < paper.data.image_size
    assert smoke.train.finetune_epochs < cpu.train.finetune_epochs < paper.train.finetune_epochs
    assert paper.data.source == "padchest"


def test_overrides_apply_and_are_typed():
    cfg = load_config("smoke", {"data.image_size": 48, "phantom.difficulty": 2})
    assert cfg["data.image_size"] == 48
    assert cfg.phantom.difficulty == 2.0 and isinstance(cfg.phantom.difficulty, float)
    # the original profile is untouched
    assert load_config("smoke").data.image_size == 64


def test_unknown_key_wrong_type_and_unknown_profile_are_errors():
    with pytest.raises(ConfigError, match="unknown config key 'data.imagesize'"):
        load_config("cpu", {"data.imagesize": 3})
    with pytest.raises(ConfigError, match="expects int"):
        load_config("cpu", {"data.image_size": "big"})
    with pytest.raises(ConfigError, match="expects an integer"):
        load_config("cpu", {"data.image_size": 64.5})
    with pytest.raises(ConfigError, match="unknown profile 'gpu'"):
        load_config("gpu")
    with pytest.raises(ConfigError, match="device must be"):
        load_config("cpu", device="tpu")


def test_notebook_parameters_map_to_config_keys_and_none_keeps_default():
    for name, key in NOTEBOOK_PARAMETERS.items():
        assert key in load_config("cpu"), name
    cfg = load_config("cpu", seed=None, image_size=128, device="cpu")
    assert cfg.seed == load_config("cpu").seed
    assert cfg.data.image_size == 128 and cfg.device == "cpu"
    with pytest.raises(ConfigError, match="unknown notebook parameter"):
        load_config("cpu", learning_rate=1.0)


def test_hash_is_stable_and_sensitive():
    a, b = load_config("cpu"), load_config("cpu")
    assert a.hash() == b.hash()
    assert a.hash("data") != load_config("cpu", {"data.image_size": 65}).hash("data")
    assert a.hash("data") == load_config("cpu", {"phantom.difficulty": 3.0}).hash("data")
    assert digest({"x": 1, "y": 2}) == digest({"y": 2, "x": 1})


def test_parse_assignment():
    assert parse_assignment("data.n_train=null") == ("data.n_train", None)
    assert parse_assignment("seeds=[1, 2]") == ("seeds", [1, 2])
    with pytest.raises(ConfigError):
        parse_assignment("data.n_train")


def test_every_notebook_parameter_has_a_config_default(repo_root):
    """A chapter's parameters cell may hold only profile, device and names with a YAML default."""
    sources = sorted((repo_root / "notebooks").glob("[0-9][0-9]_*.py"))
    assert sources, "no chapters found"
    for source in sources:
        nb = jupytext.read(source)
        cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(cells) == 1, f"{source.name}: needs exactly one parameters cell"
        names = re.findall(r"^(\w+)\s*=", cells[0].source, flags=re.M)
        assert {"profile", "device"} <= set(names), source.name
        unknown = set(names) - {"profile", "device"} - set(NOTEBOOK_PARAMETERS)
        assert not unknown, f"{source.name}: parameters without a config default: {unknown}"


def test_from_notebook_reads_injected_parameters():
    from trcgl.config import from_notebook

    cfg = from_notebook({"profile": "smoke", "device": "cpu", "difficulty": 2, "seed": None, "other": 1})
    assert cfg.profile == "smoke" and cfg.device == "cpu"
    assert cfg.phantom.difficulty == 2.0 and cfg.seed == load_config("smoke").seed
