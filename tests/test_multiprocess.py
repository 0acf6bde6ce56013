"""Two processes (HF Accelerate's launcher, gloo on the CPU) train the same weights as one process
with the same global batch: the classifier, the autoencoder, the UNet with its context vectors
and the DiT, each through the stage graph (the processes build every trainer stage together).
The classifier's run is first interrupted after its first epoch in one process; the two
processes resume it from that checkpoint (the number of processes is not in the cache key, so
an interrupted run may go on with more or fewer), both reading it in the stage's .partial folder.

"Within float tolerance" here: the losses of every epoch and the selection probabilities agree
to 1e-5, and every model's weights to 1e-3 in relative L2 norm. Single elements may differ by up
to about a learning rate: Adam turns the rounding noise of a gradient that is zero in exact
arithmetic (a convolution's bias right before a GroupNorm) into a step of size ~lr, whatever the
order in which the two processes' gradients were summed.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from .conftest import ROOT


def _weights(folder):
    return torch.load(folder / "weights.pt", map_location="cpu", weights_only=True)


@pytest.mark.slow
def test_two_processes_train_the_weights_of_one_process(tmp_path, monkeypatch):
    from trcgl import train as train_mod

    from .multiprocess_train import main

    def killed(epoch):
        if epoch == 0:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "_after_epoch", killed)
    with pytest.raises(KeyboardInterrupt):
        main(tmp_path / "two")                  # one process, stopped after the classifier's first epoch
    monkeypatch.setattr(train_mod, "_after_epoch", lambda epoch: None)
    partial = list((tmp_path / "two" / "runs" / "cache" / "classifier").glob("*.partial/last.pt"))
    assert len(partial) == 1 and not list((tmp_path / "two" / "runs" / "cache").glob("*/*/meta.json"))

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0", "ACCELERATE_USE_CPU": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "tests.multiprocess_train", str(tmp_path / "two")]
    launched = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    main(tmp_path / "one")                      # meanwhile, the same in this (single) process
    _, err = launched.communicate(timeout=600)
    assert launched.returncode == 0, err[-3000:]
    assert "resuming" in err                    # the classifier went on from its checkpoint

    one, two = (json.loads((tmp_path / k / "history.json").read_text()) for k in ("one", "two"))
    assert (one["processes"], two["processes"]) == (1, 2)          # the launch really trained in two
    for trainer in ("classifier", "unet", "dit"):
        np.testing.assert_allclose(two[trainer], one[trainer], rtol=1e-5)
    assert one["best_epoch"] == two["best_epoch"]
    np.testing.assert_allclose(two["selection_probs"], one["selection_probs"], atol=1e-5)

    a, b = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    assert a.keys() == b.keys()
    for model in ("classifier", "vae", "unet", "context", "dit"):
        keys = [k for k in a if k.split(".")[0] == model]
        A = torch.cat([a[k].float().flatten() for k in keys])
        B = torch.cat([b[k].float().flatten() for k in keys])
        assert (A - B).norm() <= 1e-3 * A.norm(), model
        assert (A - B).abs().max() < 2e-3, model                   # at most ~ one Adam step (lr ≤ 2e-3)
    # one finished artifact per trainer stage, nothing half-built left behind
    cache = tmp_path / "two" / "runs" / "cache"
    assert sorted(p.parent.parent.name for p in cache.glob("*/*/meta.json")) == ["classifier", "normal-dit",
                                                                        "prompt-diffusion", "vae"]
    assert not list(cache.glob("*/*.partial"))


class _Group:
    """A stand-in for the processes of a launch, seen from one of them (the cache's protocol)."""

    def __init__(self, rank, flag_from_main=None):
        self.rank, self.size, self.is_main, self.flag = rank, 2, rank == 0, flag_from_main
        self.calls = []

    def broadcast_flag(self, flag):
        self.calls.append(("broadcast", flag))
        return flag if self.is_main else self.flag

    def barrier(self):
        self.calls.append(("barrier",))


def test_the_main_process_decides_and_seals_the_others_build_in_the_same_folder(tmp_path):
    from trcgl.cache import ArtifactCache

    cache = ArtifactCache(tmp_path)
    seen = []

    def build(work):
        seen.append(work)
        (work / "weights.txt").write_text("w")

    main = _Group(0)
    folder, computed = cache.fetch("classifier", {"k": 1}, build, group=main)
    assert computed and seen == [cache.partial_path("classifier", {"k": 1})]
    assert (folder / "meta.json").is_file() and (folder / "weights.txt").read_text() == "w"
    assert main.calls == [("broadcast", True), ("barrier",), ("barrier",)]
    again = _Group(0)
    assert cache.fetch("classifier", {"k": 1}, build, group=again) == (folder, False)
    assert again.calls == [("broadcast", False)] and len(seen) == 1          # a hit: nobody builds

    cache.partial_path("classifier", {"k": 2}).mkdir()    # as the main process does before it says "build"
    other = _Group(1, flag_from_main=True)      # ... then the others build into the same folder
    folder2, computed = cache.fetch("classifier", {"k": 2}, build, group=other)
    assert computed and seen[-1] == cache.partial_path("classifier", {"k": 2})
    assert not (seen[-1] / "meta.json").exists() and not folder2.exists()   # sealing is the main process's
    told = _Group(1, flag_from_main=False)      # ... or load: no build
    assert cache.fetch("classifier", {"k": 3}, build, group=told) == (cache.path("classifier", {"k": 3}), False)
    assert len(seen) == 2
    locks = {p.name for p in (tmp_path / "cache" / "classifier").glob("*.lock")}
    assert locks == {cache.path("classifier", {"k": 1}).name + ".lock"}     # only the main process locks


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_the_trainers_run_on_cuda_with_bf16_autocast(tmp_path):
    from .multiprocess_train import main

    main(tmp_path / "gpu", "cuda")
    h = json.loads((tmp_path / "gpu" / "history.json").read_text())
    assert h["processes"] == 1 and all(np.isfinite(h[k]).all() for k in ("classifier", "unet", "dit"))


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_two_gpus_train_together(tmp_path):
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "tests.multiprocess_train", str(tmp_path / "two"), "cuda"]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    h = json.loads((tmp_path / "two" / "history.json").read_text())
    assert h["processes"] == 2 and all(np.isfinite(h[k]).all() for k in ("classifier", "unet", "dit"))
