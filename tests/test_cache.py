import json

import pytest

from trcgl.cache import ArtifactCache, atomic_write_bytes


def test_miss_then_hit_builds_once(tmp_path):
    cache = ArtifactCache(tmp_path)
    calls = []

    def build(folder):
        calls.append(folder)
        (folder / "x.txt").write_text("42")

    params = {"stage": "demo", "n": 3}
    first = cache.get_or_compute("demo", params, build)
    second = cache.get_or_compute("demo", dict(reversed(list(params.items()))), build)
    assert first == second and len(calls) == 1
    assert (first / "x.txt").read_text() == "42"
    assert json.loads((first / "meta.json").read_text())["params"] == params
    assert (cache.hits, cache.misses) == (1, 1)
    other = cache.get_or_compute("demo", {"stage": "demo", "n": 4}, build)
    assert other != first and len(calls) == 2


def test_interrupted_build_leaves_nothing_that_looks_complete_and_resumes(tmp_path):
    cache = ArtifactCache(tmp_path)
    params = {"epochs": 3}

    def interrupted(folder):
        (folder / "epoch1.ckpt").write_text("state after epoch 1")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.get_or_compute("train", params, interrupted)
    assert not cache.exists("train", params)
    assert not cache.path("train", params).exists()
    assert (cache.partial_path("train", params) / "epoch1.ckpt").exists()

    seen = []

    def resume(folder):
        seen.append(sorted(p.name for p in folder.iterdir()))
        (folder / "model.pt").write_text("final")

    final = cache.get_or_compute("train", params, resume)
    assert seen == [["epoch1.ckpt"]]  # the second call found the first one's checkpoint
    assert (final / "model.pt").read_text() == "final"
    assert not cache.partial_path("train", params).exists()
    assert cache.exists("train", params)


def test_clear_and_listing(tmp_path):
    cache = ArtifactCache(tmp_path)
    cache.get_or_compute("a", {"k": 1}, lambda d: (d / "f").write_text("1"))
    cache.get_or_compute("b", {"k": 1}, lambda d: (d / "f").write_text("1"))
    assert {r["stage"] for r in cache.listing()} == {"a", "b"}
    assert cache.clear("a") == 1
    assert [r["stage"] for r in cache.listing()] == ["b"]


def test_atomic_write_keeps_old_content_when_writing_fails(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    atomic_write_bytes(target, b"old")

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("os.fsync", boom)
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temp file left behind
