"""The tensor input pipeline: the same pixels, labels and weights as the per-sample dataset, flips
where asked, every process's share of a global batch, and loss scales that make the gradient
average of the shares the gradient of the whole batch."""
import numpy as np
import pandas as pd
import pytest
import torch

from trcgl.data.batches import DeviceTensor, Normalised, TensorBatches, seeded_order, shards, split_range, unit_range
from trcgl.data.datasets import ImageSet, XrayDataset, make_loader, normalisation
from trcgl.runtime import Processes


def image_set(n=23, size=12, seed=0):
    rng = np.random.default_rng(seed)
    Y = (rng.random((n, 4)) < 0.4).astype(np.uint8)
    return ImageSet((rng.random((n, size, size)) * 255).astype(np.uint8), Y, rng.random(n).astype(np.float32),
                    pd.DataFrame({"ImageID": [f"i{k}" for k in range(n)]}), tuple("abcd"))


def test_batches_equal_the_per_sample_dataset_bit_for_bit():
    s = image_set()
    mean, std = normalisation(s)
    data = TensorBatches(s.images, "cpu", Normalised(mean, std), y=s.Y.astype(np.float32), w=s.weights)
    index = torch.tensor([5, 0, 22, 5, 13])
    x, t = data.gather(index)
    ds = XrayDataset(s, mean, std)
    ref = [ds[i] for i in index.tolist()]
    assert x.dtype == torch.float32 and x.shape == (5, 1, 12, 12)
    assert torch.equal(x, torch.stack([r[0] for r in ref]))
    assert torch.equal(t["y"], torch.stack([r[1] for r in ref]))
    assert torch.equal(t["w"], torch.stack([r[2] for r in ref]))
    # the autoencoder's range: the same numbers as the former NumPy conversion
    assert torch.equal(unit_range(torch.from_numpy(s.images)), torch.from_numpy(s.images.astype(np.float32) / 127.5 - 1.0)[:, None])


def test_flips_mirror_exactly_the_flagged_rows_and_features_pass_through():
    s = image_set(6)
    flip = np.array([True, False, True, False, False, True])
    data = TensorBatches(s.images, "cpu", Normalised(0.5, 0.25), flip=flip)
    x, targets = data.gather(torch.arange(6))
    plain, _ = TensorBatches(s.images, "cpu", Normalised(0.5, 0.25)).gather(torch.arange(6))
    assert "flip" not in targets
    for i in range(6):
        assert torch.equal(x[i], plain[i].flip(-1) if flip[i] else plain[i])
    data.set("flip", None)
    assert torch.equal(data.gather(torch.arange(6))[0], plain)
    feats = torch.randn(6, 3, 2, 2).half()                  # already-float rows: no transform, dtype kept
    fx, _ = TensorBatches(feats, "cpu").gather(torch.tensor([4, 1]))
    assert fx.dtype == torch.float16 and torch.equal(fx, feats[[4, 1]])
    with pytest.raises(ValueError, match="3 rows for 6"):
        data.set("w", np.ones(3))


def test_a_numpy_set_is_not_copied_on_the_cpu():
    a = np.zeros((4, 3, 3), np.uint8)
    t = DeviceTensor(a, "cpu")
    a[2, 1, 1] = 7
    assert t.data[2, 1, 1] == 7 and t.on_device


def test_seeded_order_is_a_permutation_fixed_by_the_seed():
    members = np.array([3, 3, 7, 1, 9])
    a = seeded_order(members, 11)
    assert sorted(a.tolist()) == sorted(members.tolist()) and a.equal(seeded_order(members, 11))
    g = torch.Generator().manual_seed(11)
    assert a.equal(torch.as_tensor(members)[torch.randperm(5, generator=g)])
    assert seeded_order(6, 2).equal(torch.randperm(6, generator=torch.Generator().manual_seed(2)))


def test_shards_cover_each_global_batch_once_with_their_loss_scales():
    order = torch.arange(100, 149)                          # 49 rows, global batch 16: 16, 16, 16, 1
    per_rank = [list(shards(order, 16, r, 2)) for r in range(2)]
    assert [len(s) for s in per_rank] == [4, 4]
    for k in range(4):
        a, b = per_rank[0][k], per_rank[1][k]
        assert a.size == b.size == len(order[16 * k:16 * k + 16])
        if k < 3:
            assert torch.cat([a.index, b.index]).equal(order[16 * k:16 * k + 16])
            assert a.scale == b.scale == 1.0 and (a.rows, b.rows) == (slice(0, 8), slice(8, 16))
    last0, last1 = per_rank[0][3], per_rank[1][3]
    assert last0.index.tolist() == [148] and last0.scale == 2.0          # 1 row of 1, times 2 processes
    assert last1.index.tolist() == [148] and last1.scale == 0.0          # a stand-in that counts for nothing
    one = list(shards(order, 16))
    assert [s.scale for s in one] == [1.0] * 4 and torch.cat([s.index for s in one]).equal(order)
    for n in range(0, 9):
        for size in (1, 2, 3, 4):
            parts = [split_range(n, r, size) for r in range(size)]
            assert parts == [(int(p[0]), int(p[-1]) + 1) if len(p) else (parts[r][0], parts[r][0])
                             for r, p in enumerate(torch.arange(n).tensor_split(size))]


def test_scaled_share_gradients_average_to_the_whole_batch_gradient():
    """What DistributedDataParallel computes (the mean over processes of each share's gradient)
    equals the gradient of the global batch's mean loss, for uneven shares and a stand-in."""
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 3)
    x, y, w = torch.randn(7, 5), (torch.rand(7, 3) < 0.5).float(), torch.rand(7)

    def loss_of(index, scale=1.0):
        per = torch.nn.functional.binary_cross_entropy_with_logits(model(x[index]), y[index], reduction="none")
        return (per.mean(1) * w[index]).mean() * scale

    def grad(loss):
        model.zero_grad()
        loss.backward()
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    order = torch.arange(7)
    for size in (2, 3, 4):
        for batch_size in (7, 3):
            for k, whole in enumerate(shards(order, batch_size)):
                parts = [list(shards(order, batch_size, r, size))[k] for r in range(size)]
                mean = sum(grad(loss_of(p.index, p.scale)) for p in parts) / size
                assert torch.allclose(mean, grad(loss_of(whole.index)), atol=1e-6)


def test_predict_matches_the_per_sample_loader():
    from trcgl.train import predict, predict_batches

    s = image_set(37)
    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(144, 4))
    model = type("M", (torch.nn.Module,), {"forward": lambda self, x: {"logits": net(x)}})()
    model.add_module("net", net)
    mean, std = normalisation(s)
    with torch.no_grad():
        ref = torch.cat([torch.sigmoid(net(x)) for x, _, _ in make_loader(XrayDataset(s, mean, std), 16, False)])
    P = predict(model, s, mean, std, torch.device("cpu"), batch_size=16)
    assert np.array_equal(P, ref.numpy())
    data = TensorBatches(s.images, "cpu", Normalised(mean, std))
    assert np.array_equal(predict_batches(model, data, 16, procs=Processes()), P)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_on_cuda_a_set_on_the_device_and_a_pinned_one_give_the_same_batches():
    s = image_set(40)
    on_gpu = TensorBatches(s.images, "cuda", Normalised(0.5, 0.25), y=s.Y.astype(np.float32))
    pinned = TensorBatches(DeviceTensor(s.images, "cuda", share=0.0), "cuda", Normalised(0.5, 0.25),
                           y=s.Y.astype(np.float32))
    assert on_gpu.inputs.data.is_cuda and pinned.inputs.data.is_pinned() and not pinned.inputs.on_device
    order = seeded_order(40, 3)
    for a, b in zip(on_gpu.batches(order, 16), pinned.batches(order, 16)):
        assert a.x.is_cuda and b.x.is_cuda and torch.equal(a.x, b.x) and torch.equal(a.targets["y"], b.targets["y"])
    cpu, _ = TensorBatches(s.images, "cpu", Normalised(0.5, 0.25)).gather(order[:16])
    assert torch.allclose(next(iter(on_gpu.batches(order, 16))).x.cpu(), cpu, atol=1e-6)
