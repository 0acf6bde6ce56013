import json
import os

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


def test_a_write_killed_half_way_is_not_sealed_into_the_artifact(tmp_path):
    """A process killed inside an atomic write (SIGKILL, power) leaves its temporary file in the
    ``.partial`` folder; the resumed build's artifact has the files and digest of a clean build."""
    import tempfile

    def build(folder):
        atomic_write_bytes(folder / "model.pt", b"weights")

    clean = ArtifactCache(tmp_path / "clean").get_or_compute("train", {"k": 1}, build)
    cache = ArtifactCache(tmp_path / "killed")
    work = cache.partial_path("train", {"k": 1})
    work.mkdir(parents=True)
    fd, _ = tempfile.mkstemp(dir=work, prefix=".model.pt.", suffix=".tmp")      # what the killed write left
    os.write(fd, b"wei")
    os.close(fd)
    (work / "sub").mkdir()
    fd, _ = tempfile.mkstemp(dir=work / "sub", prefix=".x.npy.", suffix=".tmp")
    os.close(fd)
    final = cache.get_or_compute("train", {"k": 1}, build)
    assert sorted(p.name for p in final.rglob("*") if p.is_file()) == ["meta.json", "model.pt"]
    assert json.loads((final / "meta.json").read_text())["digest"] == json.loads((clean / "meta.json").read_text())["digest"]


@pytest.mark.parametrize("meta", [b"\xff\xfe garbage", b'{"files": ', b"[1, 2]"])
def test_a_garbled_meta_json_is_moved_aside_and_the_stage_computed_again(tmp_path, meta, caplog):
    cache = ArtifactCache(tmp_path)
    built = []

    def build(folder):
        built.append(1)
        (folder / "f").write_text("1")

    final = cache.get_or_compute("a", {"k": 1}, build)
    (final / "meta.json").write_bytes(meta)
    again = ArtifactCache(tmp_path).get_or_compute("a", {"k": 1}, build)
    assert again == final and len(built) == 2 and (final / "f").read_text() == "1"
    assert "moved to" in caplog.text and any(".corrupt-" in p.name for p in final.parent.iterdir())
