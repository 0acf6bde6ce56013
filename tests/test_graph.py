"""The stage graph: keys come from exactly what a stage declares, a stage cannot read what it does
not declare, code and upstream content are in the key, and the cache is locked and verified."""
import json
import multiprocessing as mp
import time

import pytest

from trcgl import load_config
from trcgl.cache import ArtifactCache, CorruptArtifact
from trcgl.config import UndeclaredKey
from trcgl.graph import REGISTRY, Const, Missing, Request, Runner, Stage, StageError, code_digest, key_config

CALLS: list = []


def _build_source(ctx):
    CALLS.append(("source", ctx.params["n"]))
    (ctx.work / "value.json").write_text(json.dumps([ctx.cfg.data.image_size] * ctx.params["n"]))


def _build_double(ctx):
    CALLS.append(("double",))
    (ctx.work / "value.json").write_text(json.dumps([2 * v for v in ctx.inputs["source"]]))


def _build_sneaky(ctx):
    return ctx.cfg.model.alpha        # not declared: must fail


def _load(ctx):
    return json.loads((ctx.work / "value.json").read_text())


@pytest.fixture
def toy_stages(monkeypatch):
    """Three stages registered for the test: source (reads data.image_size) -> double; sneaky."""
    import trcgl.stages  # noqa: F401  (the real declarations first, so ours sit beside them)

    CALLS.clear()
    monkeypatch.setitem(REGISTRY, "t-source", Stage("t-source", _build_source, _load, ("data.image_size",),
                                                    ("trcgl.cache",)))
    monkeypatch.setitem(REGISTRY, "t-double", Stage("t-double", _build_double, _load, (), ("trcgl.graph",),
                                                    inputs=lambda cfg, p: {"source": Request("t-source", cfg, n=2)}))
    monkeypatch.setitem(REGISTRY, "t-sneaky", Stage("t-sneaky", _build_sneaky, _load, ("data.image_size",), ()))


def test_a_key_holds_exactly_the_declared_config(toy_stages, tmp_path):
    cfg = load_config("smoke")
    runner = Runner(ArtifactCache(tmp_path))
    a = runner.resolve(Request("t-source", cfg, n=2))
    # an undeclared key changes nothing; a declared one, or a parameter, makes a new artifact
    b = Runner(ArtifactCache(tmp_path)).resolve(Request("t-source", cfg.replace({"model.alpha": 0.5}), n=2))
    c = Runner(ArtifactCache(tmp_path)).resolve(Request("t-source", cfg.replace({"data.image_size": 32}), n=2))
    d = Runner(ArtifactCache(tmp_path)).resolve(Request("t-source", cfg, n=3))
    assert a.key == b.key and len({a.key, c.key, d.key}) == 3
    assert CALLS == [("source", 2), ("source", 2), ("source", 3)]
    meta = json.loads((a.folder / "meta.json").read_text())
    assert meta["params"]["config"] == {"data.image_size": 64} and meta["params"]["params"] == {"n": 2}
    assert meta["params"]["code"] == code_digest(("trcgl.cache",))


def test_reading_an_undeclared_key_is_an_error(toy_stages, tmp_path):
    with pytest.raises(UndeclaredKey, match="reads config key 'model'"):
        Runner(ArtifactCache(tmp_path)).resolve(Request("t-sneaky", load_config("smoke")))
    view = load_config("smoke").restrict(("data.image_size", "model"), owner="x")
    assert view.data.image_size == 64 and view.model.alpha == 0.05
    with pytest.raises(UndeclaredKey):
        assert view.data.n_train
    with pytest.raises(UndeclaredKey):
        assert view.seed


def test_the_upstream_content_and_the_code_are_in_the_key(toy_stages, tmp_path, monkeypatch):
    cfg = load_config("smoke")
    first = Runner(ArtifactCache(tmp_path)).resolve(Request("t-double", cfg))
    assert first.value == [128, 128]
    # the upstream recomputed to the same bytes: downstream stays cached
    again = Runner(ArtifactCache(tmp_path)).resolve(Request("t-double", cfg))
    assert again.key == first.key and CALLS == [("source", 2), ("double",)]
    # a change in the code of the stage's modules gives a new key (here: a patched digest)
    monkeypatch.setattr("trcgl.graph.code_digest", lambda modules: "edited-" + "-".join(modules))
    edited = Runner(ArtifactCache(tmp_path)).resolve(Request("t-double", cfg))
    assert edited.key != first.key and CALLS[-1] == ("double",)


def test_neutral_options_stay_out_of_keys_by_rule():
    cfg = load_config("smoke")
    assert "train.loss" not in key_config(cfg, ("train",))
    assert key_config(cfg.replace({"train.loss": "ldam"}), ("train",))["train.loss"] == "ldam"
    assert key_config(cfg, ("device",)) == {"device": "cpu"} or key_config(cfg, ("device",))["device"] == "cuda"


def test_a_const_input_is_keyed_by_its_content(toy_stages, tmp_path):
    cfg = load_config("smoke")
    r = Runner(ArtifactCache(tmp_path))
    a = r.resolve(Request("t-double", cfg, source=Const([1, 2], "k1")))
    b = r.resolve(Request("t-double", cfg, source=Const([1, 2, 3], "k2")))
    assert a.value == [2, 4] and b.value == [2, 4, 6] and a.key != b.key


def test_dry_resolution_computes_nothing_and_names_what_is_missing(toy_stages, tmp_path):
    cfg = load_config("smoke")
    with pytest.raises(Missing, match="t-source"):
        Runner(ArtifactCache(tmp_path), dry=True).resolve(Request("t-double", cfg))
    assert CALLS == []
    Runner(ArtifactCache(tmp_path)).resolve(Request("t-double", cfg))
    assert Runner(ArtifactCache(tmp_path), dry=True).resolve(Request("t-double", cfg)).value is None


def test_unknown_stage_and_bad_inputs_are_clear_errors(tmp_path):
    with pytest.raises(StageError, match="unknown stage 'nope'"):
        Runner(ArtifactCache(tmp_path)).resolve(Request("nope", load_config("smoke")))


# ----------------------------------------------------------------------------- the cache

def test_a_truncated_file_is_detected_moved_aside_and_recomputed(tmp_path, caplog):
    cache = ArtifactCache(tmp_path)
    calls = []

    def build(work):
        calls.append(1)
        (work / "weights.bin").write_bytes(b"x" * 1000)

    folder = cache.get_or_compute("demo", {"k": 1}, build)
    (folder / "weights.bin").write_bytes(b"x" * 10)               # truncated behind the cache's back
    fresh = ArtifactCache(tmp_path)                                # a new process
    with pytest.raises(CorruptArtifact, match="weights.bin"):
        fresh.verify(folder)
    again = fresh.get_or_compute("demo", {"k": 1}, build)
    assert again == folder and len(calls) == 2 and (again / "weights.bin").stat().st_size == 1000
    assert any(p.name.startswith(folder.name + ".corrupt-") for p in folder.parent.iterdir())
    assert "failed verification" in caplog.text and folder.name in caplog.text


def test_an_edited_file_is_detected(tmp_path):
    cache = ArtifactCache(tmp_path)
    folder = cache.get_or_compute("demo", {"k": 2}, lambda w: (w / "a.json").write_text('{"v": 1}'))
    (folder / "a.json").write_text('{"v": 2}')
    with pytest.raises(CorruptArtifact):
        ArtifactCache(tmp_path).verify(folder)


def _slow_build(args):
    root, tag = args
    cache = ArtifactCache(root)

    def build(work):
        time.sleep(1.0)
        (work / "who.txt").write_text(tag)

    folder, computed = cache.fetch("race", {"k": 1}, build)
    return (folder / "who.txt").read_text(), computed


def test_two_processes_asking_for_one_artifact_compute_it_once(tmp_path):
    ctx = mp.get_context("spawn")
    with ctx.Pool(2) as pool:
        results = pool.map(_slow_build, [(str(tmp_path), "a"), (str(tmp_path), "b")])
    assert sorted(c for _, c in results) == [False, True]                # one computed, the other waited
    assert results[0][0] == results[1][0]                                  # and both see the same artifact
    assert not list((tmp_path / "cache" / "race").glob("*.partial"))


def _pair_inputs(cfg, p):
    return {"a": Request("t-source", cfg, n=2), "b": Request("t-source", cfg, n=3)}


def _build_pair(ctx):
    CALLS.append(("pair",))
    (ctx.work / "value.json").write_text(json.dumps(ctx.inputs["a"] + ctx.inputs["b"]))


def test_a_busy_stage_is_skipped_without_waiting_and_the_rest_goes_on(toy_stages, tmp_path, monkeypatch):
    """``run --workers``: a process that finds a stage's lock taken (another process computing it)
    resolves the other inputs, then raises Busy; the cooperative run puts that request back and
    computes the other requests first, and waits only when nothing else is left."""
    import threading

    from filelock import FileLock

    from trcgl import views
    from trcgl.cache import Busy

    monkeypatch.setitem(REGISTRY, "t-pair", Stage("t-pair", _build_pair, _load, (), (), inputs=_pair_inputs))
    cfg = load_config("smoke")
    key = Runner(ArtifactCache(tmp_path / "other")).resolve(Request("t-source", cfg, n=2)).key   # keys travel
    CALLS.clear()
    (tmp_path / "cache" / "t-source").mkdir(parents=True)
    got, release = threading.Event(), threading.Event()

    def holder():      # another holder of the lock (in its own thread, as another process would be)
        lock = FileLock(str(tmp_path / "cache" / "t-source" / f"{key}.lock"))
        lock.acquire()
        got.set()
        release.wait()
        lock.release()

    thread = threading.Thread(target=holder)
    thread.start()
    got.wait()
    runner = Runner(ArtifactCache(tmp_path))
    runner.wait = False
    with pytest.raises(Busy):
        runner.resolve(Request("t-pair", cfg))
    assert CALLS == [("source", 3)]                 # the free input was computed before giving up
    # the cooperative loop: the busy request goes back in the queue, the free one is computed, then it waits
    CALLS.clear()
    monkeypatch.setattr(views, "target_requests", lambda cfg, target: [Request("t-double", cfg),
                                                                       Request("t-source", cfg, n=4)])
    def release_after_the_free_request():     # not a timer: imports alone can take seconds on a loaded machine
        deadline = time.monotonic() + 120
        while ("source", 4) not in CALLS and time.monotonic() < deadline:
            time.sleep(0.05)
        release.set()                          # a run that waited first gets the lock only now: wrong order

    threading.Thread(target=release_after_the_free_request, daemon=True).start()
    views.run(cfg, "toy", cache=ArtifactCache(tmp_path), cooperative=True)
    thread.join()
    assert CALLS == [("source", 4), ("source", 2), ("double",)]
