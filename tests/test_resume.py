"""Resuming from a damaged ``.partial`` folder: a checkpoint that cannot be read or does not fit
(truncated, garbled, an entry missing, a tensor of another shape, a best-epoch file it vouches for
that changed) is set aside with a warning naming it, and the training starts over to exactly the
weights of an uninterrupted run (CPU runs are deterministic)."""
import logging

import numpy as np
import pandas as pd
import pytest
import torch
from diffusers.training_utils import EMAModel

from trcgl import load_config
from trcgl import train as train_mod
from trcgl.checkpoints import aside_path, load_resume_checkpoint, save_checkpoint
from trcgl.diffusion import training as training_mod

from .test_train import GROUPS, heads_only_toy


def set_aside_files(work):
    """The files set aside for ``work`` (a ``.partial`` folder): beside it, never inside it."""
    return sorted(p.name for p in work.parent.iterdir() if p.name.startswith(work.name + ".") and "corrupt-" in p.name)


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def garble(path):
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(0)
    data[len(data) // 3: len(data) // 3 + 64] = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))


def edit(path, change):
    """A checkpoint that reads and matches its checksum but does not fit the training."""
    state = torch.load(path, weights_only=True)
    state.pop("checksum", None)
    change(state)
    save_checkpoint(state, path)


def test_set_aside_moves_the_file_out_of_its_partial_folder(tmp_path):
    work = tmp_path / "stage" / "0123abcd.partial"
    (work / "training").mkdir(parents=True)
    inner = work / "training" / "last.pt"
    assert aside_path(inner).parent == work.parent
    assert aside_path(inner).name.startswith("0123abcd.partial.training.last.pt.corrupt-")
    assert aside_path(tmp_path / "last.pt").name.startswith("last.pt.corrupt-")      # no .partial folder above


def test_a_file_that_is_not_a_checkpoint_is_none_and_set_aside(tmp_path, caplog):
    work = tmp_path / "k.partial"
    work.mkdir()
    assert load_resume_checkpoint(work / "last.pt") is None                       # none at all: quietly none
    (work / "last.pt").write_bytes(b"")
    with caplog.at_level(logging.WARNING):
        assert load_resume_checkpoint(work / "last.pt") is None
    assert str(work / "last.pt") in caplog.text and not (work / "last.pt").exists()
    torch.save(torch.zeros(3), work / "last.pt")                                  # a tensor, not a dict
    assert load_resume_checkpoint(work / "last.pt") is None and len(set_aside_files(work)) >= 1


# ----------------------------------------------------------------------------- the classifier trainer

def heads_on_features(tmp_path):
    """A fast classifier training (heads on cached features, 4 epochs) into a folder given to ``fit``."""
    from trcgl.train import fit_classifier

    cfg, train, select, cached = heads_only_toy(4)

    def fit(name):
        folder = tmp_path / name
        folder.mkdir(exist_ok=True)
        fit_classifier(cfg, train, select, GROUPS, None, 0, torch.device("cpu"), folder, features=cached)
        return folder

    return fit


def killed_after(n):
    def hook(*args):
        if args[-1] == n:
            raise KeyboardInterrupt
    return hook


def wrong_shape(state):
    key = next(k for k, v in state["model"].items() if v.ndim == 2)
    state["model"][key] = torch.zeros(3, 3)


DAMAGE = {
    "truncated": lambda work: truncate(work / "last.pt"),
    "garbled": lambda work: garble(work / "last.pt"),
    "an entry missing": lambda work: edit(work / "last.pt", lambda s: s.pop("optimizer")),
    "a tensor of another shape": lambda work: edit(work / "last.pt", wrong_shape),
    "the best heads truncated": lambda work: truncate(work / "best-heads.pt"),
    "selection_probs.npy missing": lambda work: (work / "selection_probs.npy").unlink(),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_the_classifier_starts_over_from_a_damaged_partial_folder(tmp_path, monkeypatch, caplog, damage):
    fit = heads_on_features(tmp_path)
    straight = fit("straight.partial")
    monkeypatch.setattr(train_mod, "_after_epoch", killed_after(1))
    with pytest.raises(KeyboardInterrupt):
        fit("k.partial")
    work = tmp_path / "k.partial"
    assert (work / "last.pt").is_file()
    DAMAGE[damage](work)
    monkeypatch.setattr(train_mod, "_after_epoch", lambda epoch: None)
    with caplog.at_level(logging.WARNING):
        fit("k.partial")
    assert "unusable checkpoint" in caplog.text and str(work / "last.pt") in caplog.text
    assert [n.split(".corrupt-")[0] for n in set_aside_files(work)] == ["k.partial.last.pt"]
    assert not list(work.glob("*corrupt*")) and not (work / "last.pt").exists()
    for name in ("best.pt", "selection_probs.npy", "history.csv", "result.json"):     # as if never interrupted
        assert (work / name).read_bytes() == (straight / name).read_bytes(), name


def test_the_classifier_still_resumes_from_a_sound_checkpoint(tmp_path, monkeypatch, caplog):
    """The check of best.pt / selection_probs.npy does not throw a sound checkpoint away."""
    fit = heads_on_features(tmp_path)
    straight = fit("straight.partial")
    monkeypatch.setattr(train_mod, "_after_epoch", killed_after(1))
    with pytest.raises(KeyboardInterrupt):
        fit("k.partial")
    epochs = []
    monkeypatch.setattr(train_mod, "_after_epoch", epochs.append)
    with caplog.at_level(logging.WARNING):
        work = fit("k.partial")
    assert epochs == [2, 3] and "unusable" not in caplog.text and not set_aside_files(work)
    assert (work / "best.pt").read_bytes() == (straight / "best.pt").read_bytes()


def test_a_run_killed_while_writing_its_final_files_resumes_there(tmp_path, monkeypatch, caplog):
    """Killed after the whole best.pt is written but before the checkpoint goes: the run resumes
    after its last epoch (no warning, nothing set aside) and writes the same files."""
    fit = heads_on_features(tmp_path)
    straight = fit("straight.partial")

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "atomic_write_json", killed)       # result.json: the last file written
    with pytest.raises(KeyboardInterrupt):
        fit("k.partial")
    work = tmp_path / "k.partial"
    assert (work / "last.pt").is_file() and (work / "best.pt").read_bytes() == (straight / "best.pt").read_bytes()
    monkeypatch.undo()
    epochs = []
    monkeypatch.setattr(train_mod, "_after_epoch", epochs.append)
    with caplog.at_level(logging.WARNING):
        fit("k.partial")
    assert epochs == [] and "unusable" not in caplog.text and not set_aside_files(work)
    assert sorted(p.name for p in work.iterdir()) == sorted(p.name for p in straight.iterdir())
    for name in ("best.pt", "selection_probs.npy", "history.csv", "result.json"):
        assert (work / name).read_bytes() == (straight / name).read_bytes(), name


# ----------------------------------------------------------------------------- the diffusion trainers

def vae_cfg():
    return load_config("smoke", {"diffusion.vae_channels": [8, 8], "diffusion.latent_channels": 2,
                                 "diffusion.vae_epochs": 3, "diffusion.batch_size": 8, "diffusion.n_train": None},
                       device="cpu")


def test_the_vae_starts_over_from_a_truncated_checkpoint(tmp_path, monkeypatch, caplog):
    from diffusers import AutoencoderKL

    from trcgl.diffusion.training import fit_vae

    images = np.random.default_rng(0).integers(0, 256, (24, 16, 16), dtype=np.uint8)

    def fit(name):
        work = tmp_path / name
        work.mkdir(exist_ok=True)
        fit_vae(vae_cfg(), images, 0, torch.device("cpu"), work)
        return work

    straight = fit("straight.partial")
    monkeypatch.setattr(training_mod, "_after_epoch", killed_after(1))
    with pytest.raises(KeyboardInterrupt):
        fit("k.partial")
    work = tmp_path / "k.partial"
    truncate(work / "last.pt")
    monkeypatch.setattr(training_mod, "_after_epoch", lambda stage, epoch: None)
    with caplog.at_level(logging.WARNING):
        fit("k.partial")
    assert "unusable checkpoint" in caplog.text and str(work / "last.pt") in caplog.text
    assert [n.split(".corrupt-")[0] for n in set_aside_files(work)] == ["k.partial.last.pt"]
    a, b = (AutoencoderKL.from_pretrained(f / "vae").state_dict() for f in (straight, work))
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    pd.testing.assert_frame_equal(*(pd.read_csv(f / "history.csv") for f in (straight, work)))


def tiny_parts():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    return {"model": model, "optimizer": opt, "ema": EMAModel(model.parameters(), decay=0.9)}


def tiny_epochs(work, parts, epochs=3):
    """:func:`train_epochs` on a toy regression (what the VAE, UNet and DiT trainers share)."""
    model, opt, ema = parts["model"], parts["optimizer"], parts["ema"]
    x = torch.randn(32, 4, generator=torch.Generator().manual_seed(1))

    def epoch(g):
        idx = torch.randperm(32, generator=g)[:16]
        loss = (model(x[idx]) - x[idx, :2] + torch.randn(16, 2)).pow(2).mean()   # global RNG: restored too
        opt.zero_grad()
        loss.backward()
        opt.step()
        ema.step(model.parameters())
        return {"loss": loss.item()}

    return training_mod.train_epochs(work, parts, epochs, 7, "toy", "toy", epoch)


@pytest.mark.parametrize("damage", ["truncated", "EMA of another shape", "model of another shape", "rng missing"])
def test_the_diffusion_epoch_loop_starts_over_from_an_unusable_checkpoint(tmp_path, monkeypatch, caplog, damage):
    """The loop the VAE, UNet and DiT trainers share: a checkpoint that fails half way through
    restoring leaves no trace (weights, optimizer, EMA and random state are as before it)."""
    straight = tmp_path / "straight.partial"
    straight.mkdir()
    parts = tiny_parts()
    want = tiny_epochs(straight, parts)
    work = tmp_path / "k.partial"
    work.mkdir()
    monkeypatch.setattr(training_mod, "_after_epoch", killed_after(1))
    with pytest.raises(KeyboardInterrupt):
        tiny_epochs(work, tiny_parts())
    path = work / "last.pt"
    if damage == "truncated":
        truncate(path)
    elif damage == "EMA of another shape":
        edit(path, lambda s: s["ema"]["shadow_params"].__setitem__(-1, torch.zeros(5)))
    elif damage == "model of another shape":
        edit(path, lambda s: s["model"].__setitem__("1.bias", torch.zeros(5)))
    else:
        edit(path, lambda s: s.pop("rng"))
    monkeypatch.setattr(training_mod, "_after_epoch", lambda stage, epoch: None)
    again = tiny_parts()
    with caplog.at_level(logging.WARNING):
        got = tiny_epochs(work, again)
    assert str(path) in caplog.text and len(set_aside_files(work)) == 1
    assert got == want
    a, b = parts["model"].state_dict(), again["model"].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(s, t) for s, t in zip(parts["ema"].shadow_params, again["ema"].shadow_params))
