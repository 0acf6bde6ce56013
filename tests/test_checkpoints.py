"""Backbone and baseline weights load through timm's own loader (.pth and .safetensors, the RGB
stem folded to one channel, the final norm in use); a file that is not a state dict is one clear error."""
import pytest
import safetensors.torch
import timm
import torch

from trcgl import load_config
from trcgl.errors import TrcglError
from trcgl.models import Backbone, build_model
from trcgl.models.backbone import CheckpointError, read_state_dict
from trcgl.models.baselines import TimmClassifier


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A timm ConvNeXtV2-atto with ImageNet-shaped head (3 channels, 1000 classes), non-trivial
    final-norm weights, saved as .pth and as .safetensors."""
    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    rgb = timm.create_model("convnextv2_atto", pretrained=False, num_classes=1000, in_chans=3).eval()
    with torch.no_grad():
        rgb.head.norm.weight.normal_()
        rgb.head.norm.bias.normal_()
    state = rgb.state_dict()
    torch.save(state, folder / "atto.pth")
    safetensors.torch.save_file(state, folder / "atto.safetensors")
    return rgb, folder


@pytest.mark.parametrize("name", ["atto.pth", "atto.safetensors"])
def test_timm_weights_load_with_their_final_norm_in_use(saved, name):
    rgb, folder = saved
    path = folder / name
    b = Backbone("convnextv2_atto", -1, checkpoint=path, final_norm=True).eval()
    assert torch.equal(b.final_norm.weight, rgb.head.norm.weight) and torch.equal(b.final_norm.bias, rgb.head.norm.bias)
    assert torch.allclose(b.stem[0].weight, rgb.stem[0].weight.sum(1, keepdim=True), atol=1e-6)   # RGB stem folded
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        # a gray image is an RGB image with three equal channels: the folded stem sees the same sum
        expected = rgb.head.norm(rgb.forward_features(x.repeat(1, 3, 1, 1)))
        assert torch.allclose(b(x), expected, atol=1e-4)
        without = Backbone("convnextv2_atto", -1, checkpoint=path).eval()
        assert torch.allclose(without(x), rgb.forward_features(x.repeat(1, 3, 1, 1)), atol=1e-4)
    # through the configuration (the released code's backbone output keeps the final norm)
    cfg = load_config("smoke", {"model.checkpoint": str(path), "model.feature_stage": -1, "model.final_norm": True,
                                "model.feature_batchnorm": True})
    model = build_model(cfg, 3, torch.eye(3).numpy())
    assert torch.equal(model.backbone.final_norm.weight, rgb.head.norm.weight)


@pytest.mark.parametrize("name", ["atto.pth", "atto.safetensors"])
def test_timm_baseline_loads_the_same_files(saved, name):
    rgb, folder = saved
    model = TimmClassifier("convnextv2_atto", 4, image_size=64, checkpoint=folder / name).eval()
    theirs = rgb.state_dict()
    for key, value in model.backbone.state_dict().items():
        if key == "stem.0.weight":
            assert torch.allclose(value, theirs[key].sum(1, keepdim=True), atol=1e-6)
        else:
            assert torch.equal(value, theirs[key]), key
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model.backbone(x), rgb.forward_head(rgb.forward_features(x.repeat(1, 3, 1, 1)),
                                                                  pre_logits=True), atol=1e-4)


def bad_files(folder, saved_folder):
    text = folder / "weights.pth"
    text.write_text("this is not a checkpoint\n")
    truncated = folder / "truncated.pth"
    data = (saved_folder / "atto.pth").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    truncated_st = folder / "truncated.safetensors"
    data = (saved_folder / "atto.safetensors").read_bytes()
    truncated_st.write_bytes(data[: len(data) // 2])
    bare = folder / "tensor.pth"
    torch.save(torch.randn(3, 3), bare)
    return {"text": text, "truncated": truncated, "truncated safetensors": truncated_st, "bare tensor": bare}


@pytest.mark.parametrize("case", ["text", "truncated", "truncated safetensors", "bare tensor"])
def test_a_file_that_is_not_a_state_dict_is_one_clear_error(saved, tmp_path, case):
    path = bad_files(tmp_path, saved[1])[case]
    for build in (lambda: Backbone("convnextv2_atto", -1, checkpoint=path),
                  lambda: TimmClassifier("resnet18", 2, 32, checkpoint=path)):
        with pytest.raises(CheckpointError) as info:
            build()
        err = info.value
        assert isinstance(err, TrcglError)
        assert str(path) in str(err) and "save" in str(err).lower()       # names the file and how to fix it
        assert "\n" not in str(err)
    assert "not a state dict" in str(pytest.raises(CheckpointError, read_state_dict, bad_files(tmp_path, saved[1])["bare tensor"]).value)


def test_weights_of_another_model_are_one_clear_error(saved, tmp_path):
    with pytest.raises(CheckpointError, match="does not fit resnet18"):
        TimmClassifier("resnet18", 2, 32, checkpoint=saved[1] / "atto.pth")
    other = tmp_path / "other.pth"
    torch.save({"a": torch.zeros(2)}, other)             # a state dict, but of nothing like this model
    with pytest.raises(CheckpointError, match="does not fit convnextv2_atto"):
        Backbone("convnextv2_atto", -1, checkpoint=other)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        Backbone("convnextv2_atto", -1, checkpoint=tmp_path / "missing.safetensors")


def test_the_cli_reports_a_bad_checkpoint_in_one_line(saved, tmp_path, capsys, monkeypatch):
    """Through the command line's error handler: exit code 2 and one line."""
    from trcgl import cli

    path = bad_files(tmp_path, saved[1])["text"]
    monkeypatch.setattr(cli, "run", lambda args: Backbone("convnextv2_atto", -1, checkpoint=path))
    assert cli.main(["info"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("trcgl: error:") and str(path) in err and len(err.splitlines()) == 1
