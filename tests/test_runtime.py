import random

import numpy as np
import pytest
import torch

from trcgl.runtime import DeviceError, describe, seed_everything, select_device


def _draw():
    return random.random(), float(np.random.rand()), torch.randn(3).tolist()


def test_same_seed_same_draws_other_seed_other_draws():
    seed_everything(7)
    first = _draw()
    seed_everything(7)
    assert _draw() == first
    seed_everything(8)
    assert _draw() != first


def _train_tiny(seed):
    seed_everything(seed)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.LazyLinear(2))
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 2, (16,))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(5):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_training_on_cpu_repeats_bit_for_bit():
    assert torch.equal(_train_tiny(3), _train_tiny(3))
    assert not torch.equal(_train_tiny(3), _train_tiny(4))


def test_device_selection():
    assert select_device("cpu").type == "cpu"
    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(DeviceError, match="unknown device"):
        select_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no GPU"):
            select_device("cuda")
    assert describe(torch.device("cpu"))["device"] == "cpu"


def test_bf16_autocast_on_the_cpu_only_when_asked_and_it_repeats_bit_for_bit():
    from trcgl.runtime import autocast

    lin = torch.nn.Linear(8, 4)
    x = torch.randn(3, 8)
    cpu = torch.device("cpu")
    with autocast(cpu, True):
        assert lin(x).dtype == torch.float32                    # train.amp alone: CPU stays fp32
    with autocast(cpu, False, cpu=True):
        assert lin(x).dtype == torch.float32                    # amp off: off everywhere
    with autocast(cpu, True, cpu=True):
        assert lin(x).dtype == torch.bfloat16                   # train.amp_cpu: bf16 on the CPU

    def run():
        seed_everything(5)
        model = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.GELU(), torch.nn.Flatten(), torch.nn.Linear(288, 2))
        xs, y = torch.randn(16, 1, 8, 8), torch.randint(0, 2, (16,))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        for _ in range(5):
            opt.zero_grad()
            with autocast(cpu, True, cpu=True):
                out = model(xs)
            torch.nn.functional.cross_entropy(out.float(), y).backward()
            opt.step()
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    assert torch.equal(run(), run())


def test_torch_threads_sets_and_restores_the_count():
    from trcgl.runtime import torch_threads

    before = torch.get_num_threads()
    other = 2 if before == 1 else 1         # a count that differs from the one in use
    with torch_threads(other) as n:
        assert n == other and torch.get_num_threads() == other
    assert torch.get_num_threads() == before
    with torch_threads(None) as n:          # null: torch's own count, untouched
        assert n == before
    assert torch.get_num_threads() == before
