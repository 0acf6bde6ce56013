"""The run-time estimate: its work counts and arithmetic by hand, one printed line per stage the
plan holds, and rates measured on this machine."""
import numpy as np
import pandas as pd
import pytest
import torch

from trcgl import estimate as E
from trcgl import load_config
from trcgl.data.datasets import ImageSet
from trcgl.graph import Const, Request, Runner

from .test_sweeps import TINY, main, run_dir, tiny_cfg  # noqa: F401  (fixtures and helpers)


def const_images(n: int, size: int = 32) -> Const:
    s = ImageSet(np.zeros((n, size, size), np.uint8), np.zeros((n, 3), np.uint8), np.ones(n, np.float32),
                 pd.DataFrame({"ImageID": [str(i) for i in range(n)]}), ("a", "b", "c"))
    return Const(s, f"images-{n}")


def test_a_classifier_counts_its_epochs_of_train_extra_and_selection_images():
    cfg = load_config("smoke", {"train.warmup_epochs": 2, "train.finetune_epochs": 5, "data.image_size": 32})
    req = Request("classifier", cfg, seed=0, groups=Const(["head"] * 3, "g"), train=const_images(100),
                  select=const_images(30), extra=const_images(20))
    work = {w.what: w for w in E.stage_work(req, E.Counts(Runner()))}
    assert work["train"].n == 5 * (100 + 20)                       # fine-tuning: train + extra, every epoch
    assert work["forward"].n == 2 * (100 + 20) + (2 + 5) * 30      # warm-up (frozen backbone) + selection
    assert work["train"].net == E.classifier_net(cfg) and work["train"].net.image_size == 32


def test_seconds_are_passes_over_the_reference_rate(monkeypatch):
    ref = E.reference("h100")
    monkeypatch.setattr(E, "forward_flops", lambda net, cfg=None: 2e9)
    cfg = load_config("smoke")
    rates = E.Rates("h100")
    net = E.classifier_net(cfg)                                    # convnextv2_atto: a depthwise network
    forward = ref["tflops"]["depthwise"] * 1e12 * ref["utilisation"] / 2e9
    train = forward * ref["train_efficiency"] / ref["train_factor"]
    assert rates.seconds(E.Work("forward", 1000, net, cfg)) == pytest.approx(1000 / forward)
    assert rates.seconds(E.Work("train", 1000, net, cfg)) == pytest.approx(1000 / train)
    vit = E.classifier_net(cfg.replace({"model.arch": "timm", "model.backbone": "vit_tiny_patch16_224"}))
    assert E.kind_of(vit.name) == "transformer" and E.kind_of("resnet50 (timm)") == "conv"
    per = rates.render_seconds(cfg)
    assert rates.seconds(E.Work("render", 160, None, cfg)) == pytest.approx(160 * per / ref["cpu_cores"])
    with pytest.raises(E.EstimateError, match="unknown reference device 'tpu9'"):
        E.Rates("tpu9")


def test_forward_flops_of_a_network_are_counted():
    cfg = load_config("smoke", {"data.image_size": 32})
    small, big = E.forward_flops(E.vae_net(cfg), cfg), E.forward_flops(E.vae_net(cfg.replace({"data.image_size": 64})), cfg)
    assert small > 0 and big == pytest.approx(4 * small, rel=0.05)     # convolutions: 4x the pixels, 4x the FLOPs


def test_rates_are_measured_on_this_machine():
    cfg = load_config("smoke", {"data.image_size": 32, "model.label_gcn": False})
    train, forward = E.Rates(device=torch.device("cpu")).net_rates(E.classifier_net(cfg), cfg)
    assert 0 < train < forward < 1e6


def test_the_estimate_prints_one_line_per_stage(run_dir, capsys):  # noqa: F811
    rc, out, err = main(["run", "table1", *TINY, "--estimate", "--reference", "h100"], capsys)
    assert rc == 0, err
    from trcgl.views import target_requests

    cfg = tiny_cfg()
    stages = list(dict.fromkeys(e.stage for e in Runner().plan(target_requests(cfg, "table1"))))
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("stage "))
    body = lines[head + 1:]
    assert [line.split()[0] for line in body] == stages + ["total"]
    assert "not a measurement" in out and "reference device 'h100'" in out
    classifier = next(line for line in body if line.startswith("classifier "))
    assert int(classifier.split()[1]) == 9     # the 9 runs (the synthetic set's filter is the ConvNeXt row's)
    assert "passes" in classifier and "forward passes" in out
