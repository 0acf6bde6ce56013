"""The pretraining stage's key holds exactly the settings its recipe reads: the recipe runs under
a view of its declared keys alone, a default it does not read (a new key, another setting, an edit
of defaults.yaml) leaves the pretrained backbones cached, and a setting it reads makes new ones."""
import numpy as np

from trcgl import load_config
from trcgl import stages as S
from trcgl.cache import ArtifactCache
from trcgl.config import Config, defaults
from trcgl.graph import Const, Request, Runner, _payload, _split_params, get_stage

from .test_train import GROUPS, toy_set


def _identity_and_key(req, tmp_path):
    """(identity, cache key) of a pretraining request, its inputs' content digests held fixed."""
    runner = Runner(ArtifactCache(tmp_path))
    plain, _ = _split_params(req.params)
    payload = _payload(get_stage("pretrain"), req, plain, {"pool": "pool", "select": "select", "cohort": "cohort"})
    return runner.identity(req), runner.cache.key(payload)


def _defaults_with(over: dict, new: dict | None = None):
    """``defaults()`` with some values changed and new keys added (as an edit of defaults.yaml would)."""
    def patched():
        data = defaults().replace(over).to_dict()
        for dotted, value in (new or {}).items():
            section, key = dotted.split(".")
            data[section][key] = value
        return Config(data)
    return patched


def test_the_pretraining_recipe_reads_only_what_its_stage_declares(tmp_path):
    """The stage runs the recipe under a view of its declared keys (any other read raises
    UndeclaredKey): here through the graph, on toy images, one epoch."""
    cfg = load_config("smoke", device="cpu")
    recipe = S.pretrain(cfg).cfg
    req = Request("pretrain", recipe, seed=0, pool=Const(toy_set(32, 0), "pool"), select=Const(toy_set(16, 1), "sel"),
                  cohort=Const(GROUPS, "groups"))
    summary = Runner(ArtifactCache(tmp_path)).value(req)
    assert summary["classes in the loss"] == 1 and summary["epochs"] == cfg.pretrain.epochs
    assert summary["backbone"] == cfg.model.backbone


def test_the_pretraining_key_holds_the_defaults_it_reads_and_nothing_else(tmp_path, monkeypatch):
    cfg = load_config("smoke", device="cpu")
    base = _identity_and_key(S.pretrain(cfg), tmp_path)

    # the experiment's own recipe and rendering conditions are not the pretraining's
    other = cfg.replace({"train.weight_decay": 0.5, "train.loss": "ldam", "model.feature_stage": -1,
                         "model.arch": "csra", "phantom.tail_subtlety": 0.3, "seed": 7})
    assert _identity_and_key(S.pretrain(other), tmp_path) == base

    # defaults.yaml edited where the recipe does not read: a new key, other settings, the file's digest
    with monkeypatch.context() as m:
        m.setattr("trcgl.pretraining.defaults", _defaults_with({"train.warmup_lr": 0.5, "model.alpha": 0.3},
                                                              new={"train.brand_new_option": 1}))
        import trcgl.graph

        real = trcgl.graph._module_sources
        m.setattr("trcgl.graph._module_sources",
                  lambda name: [(name, "edited")] if name == "configs/defaults.yaml" else real(name))
        assert _identity_and_key(S.pretrain(cfg), tmp_path) == base

    # a default the recipe reads, or a setting of the experiment it reads: new backbones
    with monkeypatch.context() as m:
        m.setattr("trcgl.pretraining.defaults", _defaults_with({"train.weight_decay": 0.01}))
        changed = _identity_and_key(S.pretrain(cfg), tmp_path)
    assert changed[0] != base[0] and changed[1] != base[1]
    for over in ({"pretrain.lr": 3e-3}, {"pretrain.epochs": 2}, {"model.backbone": "convnextv2_femto"},
                 {"data.image_size": 48}):
        ident, key = _identity_and_key(S.pretrain(cfg.replace(over)), tmp_path)
        assert ident != base[0] and key != base[1], over
    assert np.isclose(S.pretrain(cfg).cfg.train.weight_decay, defaults().train.weight_decay)
