import numpy as np
import pytest
import torch

from trcgl import load_config
from trcgl.data import datasets
from trcgl.data.datasets import ImageSet, split_rows, training_dataset
from trcgl.data.padchest import DataError, build_cohort
from trcgl.stages import build_image_set
from trcgl.errors import TrcglError

OVERRIDES = {"data.n_train": 60, "data.n_test": 40, "data.min_train_positives": 1,
             "data.min_test_positives": 1, "data.image_size": 16, "phantom.render_size": 32}


@pytest.fixture(scope="module")
def cohort(real_table):
    return build_cohort(real_table, "paper", 42)


def test_image_set_matches_its_rows_and_is_cached(cohort, session_cache):
    cfg = load_config("smoke", OVERRIDES)
    first = build_image_set(cfg, cohort, "train", session_cache)
    assert first.images.shape == (60, 16, 16) and first.images.dtype == np.uint8
    idx = split_rows(cfg, cohort, "train")
    assert np.array_equal(first.Y, cohort.Y[idx])
    assert first.rows.ImageID.tolist() == cohort.frame.ImageID.iloc[idx].tolist()
    assert first.masks(0).shape == (30, 16, 16)
    # a class's mask is present only where its label is
    for n in range(len(first)):
        drawn = first.masks(n).any(axis=(1, 2))
        assert not (drawn & (first.Y[n] == 0)).any()
    from trcgl.graph import Request, Runner
    from trcgl.stages import const_cohort

    hits = session_cache.hits       # a new process (a new runner) finds it in the cache
    again = Runner(session_cache).value(Request("image-set", cfg, rows="train", cohort=const_cohort(cohort)))
    assert session_cache.hits == hits + 1 and np.array_equal(again.images, first.images)
    test = build_image_set(cfg, cohort, "test", session_cache)
    assert not set(test.rows.PatientID) & set(first.rows.PatientID)


def test_hidden_classes_keep_their_labels_and_lose_their_lesions(cohort, session_cache):
    cfg = load_config("smoke", OVERRIDES)
    shown = build_image_set(cfg, cohort, "train", session_cache)
    counts = shown.Y.sum(0)
    hide = [cohort.class_set.classes[k] for k in np.argsort(-counts)[1:3]]  # two frequent findings
    hidden = build_image_set(cfg.replace({"phantom.hidden_classes": hide}), cohort, "train", session_cache)
    assert np.array_equal(hidden.Y, shown.Y)
    k = [cohort.class_set.classes.index(c) for c in hide]
    drawn = np.stack([hidden.masks(n).any(axis=(1, 2)) for n in range(len(hidden))])
    assert not drawn[:, k].any() and drawn.any()
    assert not np.array_equal(hidden.images, shown.images)
    with pytest.raises(TrcglError, match="hidden_classes"):
        build_image_set(cfg.replace({"phantom.hidden_classes": ["Support Devices"]}), cohort, "train", session_cache)


def test_interrupted_rendering_resumes_at_the_last_chunk(cohort, tmp_path, monkeypatch):
    from trcgl.cache import ArtifactCache

    cache = ArtifactCache(tmp_path)
    cfg = load_config("smoke", OVERRIDES)
    monkeypatch.setattr(datasets, "CHUNK", 16)
    monkeypatch.setenv("TRCGL_RENDER_PROCESSES", "1")     # in this process, so the patch below applies
    calls = {"n": 0}
    real_render = datasets.PhantomRenderer.render

    def flaky(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 40:
            raise KeyboardInterrupt
        return real_render(self, *args, **kwargs)

    monkeypatch.setattr(datasets.PhantomRenderer, "render", flaky)
    with pytest.raises(KeyboardInterrupt):
        build_image_set(cfg, cohort, "train", cache)
    assert not any(r["bytes"] for r in cache.listing())  # nothing looks finished
    calls["n"] = 1000
    resumed = build_image_set(cfg, cohort, "train", cache)
    assert calls["n"] - 1000 == 60 - 32  # two chunks of 16 were kept
    fresh = build_image_set(cfg, cohort, "train", ArtifactCache(tmp_path / "fresh"))
    assert np.array_equal(resumed.images, fresh.images)


def rendered_in_chunks_of_8(cohort, n, folder, monkeypatch):
    """The first ``n`` training rows rendered serially into ``folder`` in chunks of 8: the config,
    the rows and the image set, the reference the chunked and resumed builds must equal."""
    cfg = load_config("smoke", OVERRIDES)
    monkeypatch.setattr(datasets, "CHUNK", 8)
    index = split_rows(cfg, cohort, "train")[:n]
    folder.mkdir()
    datasets.write_image_set(cfg, cohort, index, "train", folder, processes=1)
    return cfg, index, datasets.load_image_set(folder)


def test_parallel_rendering_gives_the_serial_pixels_and_resumes_per_chunk(cohort, tmp_path, monkeypatch):
    """Chunks rendered by a pool of processes are the serial path's pixels and masks, byte for
    byte; a chunk file left by an interrupted build is kept, not rendered again."""
    from trcgl.data import render

    cfg, index, one = rendered_in_chunks_of_8(cohort, 40, tmp_path / "serial", monkeypatch)     # 5 chunks

    # chunk 1 already on disk (marked: all zeros), as an interrupted build leaves it
    work = tmp_path / "pool"
    work.mkdir()
    mark = np.zeros((8, 16, 16), np.uint8)
    np.savez(work / "chunk0001.npz", images=mark, masks=one.masks_packed[8:16])
    used = []
    real = render.render_chunks
    monkeypatch.setattr(render, "render_chunks", lambda *a, **k: used.append(real(*a, **k)) or used[-1])
    datasets.write_image_set(cfg, cohort, index, "train", work, processes=2)
    pool = datasets.load_image_set(work)
    assert used == [2]                                      # 4 missing chunks: two processes rendered them
    assert np.array_equal(pool.images[8:16], mark)          # the finished chunk was kept
    rest = np.r_[0:8, 16:40]
    assert np.array_equal(pool.images[rest], one.images[rest]) and one.images.std() > 0
    assert np.array_equal(pool.masks_packed, one.masks_packed) and pool.rows.equals(one.rows)
    assert not list(work.glob("chunk*.npz"))                # chunks are removed once assembled


def test_render_processes_come_from_the_environment(monkeypatch):
    from trcgl.data.render import RenderError, render_processes

    monkeypatch.setenv("TRCGL_RENDER_PROCESSES", "3")
    assert render_processes() == 3
    monkeypatch.delenv("TRCGL_RENDER_PROCESSES")
    assert render_processes() >= 1
    monkeypatch.setenv("TRCGL_RENDER_PROCESSES", "0")
    with pytest.raises(RenderError, match="whole number >= 1"):
        render_processes()


def test_datasets_normalise_and_carry_weights(cohort, session_cache):
    cfg = load_config("smoke", OVERRIDES)
    real = build_image_set(cfg, cohort, "train", session_cache)
    x, y, w = training_dataset(real)[3]
    assert x.shape == (1, 16, 16) and y.shape == (30,) and float(w) == 1.0
    extra = ImageSet(real.images[:5], real.Y[:5], np.full(5, 0.5, np.float32), real.rows.iloc[:5], real.classes)
    both = training_dataset(real, extra)
    assert len(both) == 65
    assert float(both[62][2]) == 0.5
    xs = torch.stack([training_dataset(real)[i][0] for i in range(len(real))])
    assert abs(float(xs.mean())) < 1e-3 and abs(float(xs.std()) - 1) < 1e-2
    small = ImageSet(real.images[:5, :8, :8], real.Y[:5], np.ones(5, np.float32), real.rows.iloc[:5], real.classes)
    with pytest.raises(DataError, match="8px"):
        training_dataset(real, small)


def test_padchest_source_without_a_folder_is_a_clear_error(cohort, tmp_path, monkeypatch):
    from trcgl.cache import ArtifactCache

    monkeypatch.delenv("PADCHEST_ROOT", raising=False)
    cfg = load_config("smoke", {**OVERRIDES, "data.source": "padchest"})
    with pytest.raises(DataError, match="PADCHEST_ROOT"):
        build_image_set(cfg, cohort, "train", ArtifactCache(tmp_path))


def test_padchest_source_reads_the_selected_rows_from_disk(cohort, tmp_path, monkeypatch):
    """The real-image source: same rows, same labels, pixels from <root>/<ImageDir>/<ImageID>."""
    from PIL import Image

    from trcgl.cache import ArtifactCache

    cfg = load_config("smoke", {**OVERRIDES, "data.source": "padchest", "data.on_missing": "skip"})
    idx = split_rows(cfg, cohort, "train")
    root = tmp_path / "padchest"
    rows = cohort.frame.iloc[idx]
    for k, (image_dir, image_id) in enumerate(zip(rows.ImageDir, rows.ImageID)):
        if k == 5:
            continue  # one file missing: counted and skipped in 'skip' mode
        folder = root / str(int(float(image_dir)))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((20, 20), 1000 + k, np.uint16)).save(folder / image_id)
    monkeypatch.setenv("PADCHEST_ROOT", str(root))
    real = build_image_set(cfg, cohort, "train", ArtifactCache(tmp_path / "runs"))
    assert len(real) == len(idx) - 1 and real.source == "padchest"
    assert np.array_equal(real.Y, np.delete(cohort.Y[idx], 5, axis=0))
    with pytest.raises(DataError, match="no lesion masks"):
        real.masks(0)


def test_unusable_chunks_of_an_interrupted_build_are_set_aside_and_rendered_again(cohort, tmp_path, monkeypatch,
                                                                                   caplog):
    """A chunk file that cannot be read (truncated, garbled) or is not the chunk's shape is moved out
    of the ``.partial`` folder with a warning and rendered again; the set is the uninterrupted one."""
    import io
    import logging

    cfg, index, one = rendered_in_chunks_of_8(cohort, 32, tmp_path / "serial.partial", monkeypatch)     # 4 chunks
    work = tmp_path / "k.partial"
    work.mkdir()
    buffer = io.BytesIO()
    np.savez(buffer, images=one.images[:8], masks=one.masks_packed[:8])
    whole = buffer.getvalue()
    (work / "chunk0000.npz").write_bytes(whole[: len(whole) // 2])                       # truncated
    garbled = bytearray(whole)
    garbled[200:264] = bytes(range(64))
    (work / "chunk0001.npz").write_bytes(bytes(garbled))                                # garbled inside the pixels
    np.savez(work / "chunk0002.npz", images=one.images[16:20], masks=one.masks_packed[16:20])   # 4 rows, not 8
    with caplog.at_level(logging.WARNING):
        datasets.write_image_set(cfg, cohort, index, "train", work, processes=1)
    again = datasets.load_image_set(work)
    assert np.array_equal(again.images, one.images) and np.array_equal(again.masks_packed, one.masks_packed)
    aside = sorted(p.name.split(".corrupt-")[0] for p in tmp_path.iterdir() if "corrupt-" in p.name)
    assert aside == [f"k.partial.chunk000{k}.npz" for k in range(3)]
    assert caplog.text.count("unusable rendered chunk") == 3 and str(work / "chunk0001.npz") in caplog.text
