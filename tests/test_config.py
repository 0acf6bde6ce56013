import re

import jupytext
import pytest

from trcgl.cache import digest
from trcgl.config import (
    NOTEBOOK_PARAMETERS,
    PROFILES,
    ConfigError,
    _read_yaml,
    defaults,
    dotted_keys,
    load_config,
    neutral_values,
    parse_assignment,
    schema,
)


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_loads_and_names_itself(profile):
    cfg = load_config(profile)
    assert cfg.profile == profile
    assert cfg.data.class_set == "paper"
    assert isinstance(cfg.data.image_size, int)


def test_profiles_differ_in_scale():
    smoke, cpu, paper = (load_config(p) for p in ("smoke", "cpu", "paper"))
    assert smoke.data.n_train < cpu.data.n_train
    assert paper.data.n_train is None  # all rows
    assert smoke.data.image_size <= cpu.data.image_size < paper.data.image_size
    assert smoke.train.warmup_epochs < cpu.train.warmup_epochs and cpu.train.finetune_epochs < paper.train.finetune_epochs
    assert len(smoke.seeds) < len(cpu.seeds)
    assert paper.data.source == "padchest"


def test_the_gpu_profile_is_phantoms_at_the_papers_scale():
    gpu, cpu, paper = (load_config(p) for p in ("gpu", "cpu", "paper"))
    assert gpu.data.source == "phantom" and gpu.seeds == [0, 1, 2, 3, 4]
    assert gpu.data.n_selection is None and gpu.data.n_test is None and gpu.data.n_train >= 15 * cpu.data.n_train
    assert (gpu.train.warmup_epochs, gpu.train.finetune_epochs) == (10, 50) == (paper.train.warmup_epochs,
                                                                               paper.train.finetune_epochs)
    # 128 px through a 3-block VAE: 32x32 latents, near the paper's 28x28
    assert gpu.data.image_size // 2 ** (len(gpu.diffusion.vae_channels) - 1) == 32
    # the diffusion model sees 50x the image passes of the cpu profile's
    cpu_rows = cpu.diffusion.n_train or cpu.data.n_train
    assert gpu.diffusion.n_train * gpu.diffusion.epochs >= 50 * cpu_rows * cpu.diffusion.epochs


def test_the_gpu_profile_leaves_rows_for_the_held_out_generators(paper_cohort):
    """The normal-image DiT and the oracle learn from train-split rows the classifiers never see:
    the gpu profile leaves normals and rows of every class for them."""
    from trcgl.data.datasets import split_rows
    from trcgl.data.rows import normal_rows, oracle_rows

    cfg = load_config("gpu")
    train = split_rows(cfg, paper_cohort, "train")
    assert len(train) == cfg.data.n_train
    assert len(normal_rows(cfg, paper_cohort, train, cfg.inpaint.n_normal, cfg.seed)) > 5000
    oracle = oracle_rows(cfg, paper_cohort, train, cfg.seed)
    assert not set(oracle) & set(train)
    assert (paper_cohort.Y[oracle].sum(0) > 0).all()          # every class has oracle rows


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
    with pytest.raises(ConfigError, match="unknown profile 'huge'"):
        load_config("huge")
    with pytest.raises(ConfigError, match="unknown device 'tpu': choose one of auto, cpu, cuda"):
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


# ----------------------------------------------------------------------------- the schema

def test_every_default_key_has_a_schema_entry_and_every_entry_a_key():
    """A new option in defaults.yaml needs its rule in schema.yaml (and a removed one, its rule removed)."""
    defaults = set(dotted_keys(_read_yaml("defaults.yaml")))
    rules = set(schema())
    assert not defaults - rules, f"keys without a schema entry: {sorted(defaults - rules)}"
    assert not rules - defaults, f"schema entries without a key: {sorted(rules - defaults)}"
    for key, rule in schema().items():
        assert rule["type"] in ("int", "float", "bool", "str", "path", "list"), key
        assert set(rule) <= {"type", "nullable", "min", "max", "above", "below", "choices", "items",
                             "min_items", "neutral"}, key
        assert rule["type"] != "list" or rule.get("items") in ("int", "float", "str"), key


def test_every_profile_and_every_neutral_value_is_allowed():
    for profile in PROFILES:
        load_config(profile)                      # validated on load
    cfg = load_config("cpu", neutral_values())    # neutral values are legal values
    assert all(cfg[k] == v for k, v in neutral_values().items())


def test_neutral_values_are_the_defaults_of_optional_features():
    """An optional feature is off by default (the paper's text), so its neutral value is its default."""
    defaults = dotted_keys(_read_yaml("defaults.yaml"))
    assert neutral_values() and all(defaults[k] == v for k, v in neutral_values().items())
    assert neutral_values()["train.drw_epoch"] is None and neutral_values()["model.arch"] == "trcgl"
    assert "model.backbone" not in neutral_values() and "train.loss" in neutral_values()


def test_class_set_choices_are_the_shipped_class_sets():
    from trcgl.data.padchest import class_set_names

    assert schema()["data.class_set"]["choices"] == class_set_names()


BAD_VALUES = [
    ("data.image_size", 0, "data.image_size must be >= 8 and <= 1024; got 0"),
    ("data.image_size", 100000, "data.image_size must be >= 8 and <= 1024; got 100000"),
    ("phantom.render_size", 40000, "phantom.render_size must be >= 16 and <= 2048; got 40000"),
    ("data.n_train", -5, "data.n_train must be >= 1 or null; got -5"),
    ("seeds", [], "seeds must hold at least 1 item(s); got []"),
    ("seeds", [0, -1], "seeds item must be >= 0; got -1"),
    ("train.batch_size", 0, "train.batch_size must be >= 1; got 0"),
    ("train.warmup_epochs", -2, "train.warmup_epochs must be >= 0; got -2"),
    ("data.source", "nosuch", "unknown data.source 'nosuch': choose one of phantom, padchest"),
    ("data.on_missing", "maybe", "unknown data.on_missing 'maybe': choose one of error, skip"),
    ("eval.interval", "t", "unknown eval.interval 't': choose one of percentile, basic, bc, bca"),
    ("model.arch", "mlp", "unknown model.arch 'mlp'"),
    ("train.loss", "focal", "unknown train.loss 'focal'"),
    ("data.test_fraction", 1.0, "data.test_fraction must be > 0 and < 1; got 1.0"),
    ("data.projections", ["XX"], "unknown data.projections item 'XX'"),
    ("phantom.difficulty", float("nan"), "phantom.difficulty must be a finite number > 0; got nan"),
    ("phantom.difficulty", float("inf"), "phantom.difficulty must be a finite number > 0; got inf"),
    ("tables.alphas", [1.0, float("inf")], "tables.alphas item must be a finite number >= 0; got inf"),
    ("train.drw_epoch", 1.5, "train.drw_epoch expects an integer; got 1.5"),
    ("diffusion.guidance_sweep", [], "diffusion.guidance_sweep must hold at least 1 item(s)"),
    ("data.tail_threshold", 9000, "data.tail_threshold (9000) must not exceed data.head_threshold (5000)"),
    ("model.checkpoint", "", "model.checkpoint expects a path (string); got ''"),
]


@pytest.mark.parametrize(("key", "value", "message"), BAD_VALUES, ids=[f"{k}={v!r}" for k, v, _ in BAD_VALUES])
def test_a_value_outside_the_schema_is_one_clear_error(key, value, message):
    with pytest.raises(ConfigError) as info:
        load_config("cpu", {key: value})
    assert message in str(info.value) and "\n" not in str(info.value)


def test_every_float_key_refuses_infinity_and_nan_unless_its_rule_allows_infinity():
    """``.inf`` passes any lower bound (``phantom.difficulty: {above: 0}`` took it) and ``.nan`` fails
    every comparison: a float must be finite, on every float key and list of floats of the schema,
    as a value and as the YAML words of ``--set``; ``finite: false`` in a rule allows the infinities."""
    from trcgl.config import check_value

    floats = [key for key, rule in schema().items() if "float" in (rule["type"], rule.get("items"))]
    assert len(floats) > 50
    with pytest.raises(ConfigError, match="model.lam must be a finite number >= 0; got inf"):
        load_config("smoke", dict([parse_assignment("model.lam=inf")]))   # YAML text, read as a float
    base = load_config("smoke")
    for key in floats:
        for word in (".inf", "-.inf", ".nan"):
            value = parse_assignment(f"{key}={word}")[1]
            value = [1.0, value] if schema()[key]["type"] == "list" else value
            with pytest.raises(ConfigError, match=rf"^{re.escape(key)}( item)? must be a finite number"):
                base.replace({key: value})
    rule = {"type": "float", "min": 0, "finite": False}
    assert check_value("model.lam", float("inf"), rule) == float("inf")
    with pytest.raises(ConfigError, match="finite"):
        check_value("model.lam", float("nan"), rule)


def test_values_are_normalised_and_yaml_words_read_back():
    cfg = load_config("cpu", {"train.drw_epoch": 2.0, "phantom.difficulty": 2})
    assert cfg.train.drw_epoch == 2 and isinstance(cfg.train.drw_epoch, int)
    assert load_config("cpu", dict([parse_assignment("inpaint.guard=off")])).inpaint.guard == "off"
    with pytest.raises(ConfigError, match=r"not valid YAML: '\[1'"):
        parse_assignment("data.image_size=[1")


def test_a_float_written_without_a_dot_is_a_float():
    """YAML 1.1 reads ``5e-4`` as text; a float key takes it as the number (``--set train.backbone_lr=5e-4``)."""
    from trcgl.config import parse_assignment

    cfg = load_config("smoke", dict([parse_assignment("train.backbone_lr=5e-4")]))
    assert cfg.train.backbone_lr == 5e-4
    with pytest.raises(ConfigError, match="train.backbone_lr"):
        load_config("smoke", {"train.backbone_lr": "fast"})


def test_the_oracle_fine_tunes_at_its_own_rates():
    from trcgl.diffusion.oracle import oracle_config

    cfg = load_config("cpu")
    o = oracle_config(cfg)
    assert (o.train.backbone_lr, o.train.head_lr) == (cfg.diffusion.oracle_backbone_lr, cfg.diffusion.oracle_head_lr)
    assert not (o.model.channel_gate or o.model.spatial_attention or o.model.label_gcn)
    assert (o.train.warmup_epochs, o.train.finetune_epochs) == (1, cfg.diffusion.oracle_epochs)


def test_a_config_shares_nothing_its_caller_can_change():
    """Configs are read-only and share their data between views (stage resolution makes thousands):
    a list given to ``replace`` or read from a config is the caller's own copy, and the packaged
    defaults, parsed once per process, come back unchanged after a caller changed what it read."""
    seeds = [1, 2]
    cfg = load_config("smoke").replace({"seeds": seeds})
    seeds.append(3)
    assert cfg.seeds == [1, 2]
    read = cfg.seeds
    read.append(9)
    assert cfg.seeds == [1, 2] and cfg.restrict(["seeds"]).seeds == [1, 2]
    channels = defaults().diffusion.vae_channels
    channels.append(1)
    assert defaults().diffusion.vae_channels == channels[:-1]
    table = _read_yaml("defaults.yaml")
    table["diffusion"]["vae_channels"].append(1)
    assert _read_yaml("defaults.yaml")["diffusion"]["vae_channels"] == channels[:-1]
