"""The preprocessing cache: same pixels as the file pipeline, same split and labels, fingerprinted, and the
export still predicts from image files."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline import config, runner
from pipeline.core import artifacts
from pipeline.core.errors import PipelineError
from pipeline.core.workspace import Workspace, read_json
from pipeline.data import cache, loaders
from pipeline import kinds
from tests.conftest import make_image_folder, tiny_config


@pytest.fixture
def project(tmp_path):
    src = make_image_folder(tmp_path / "src", classes=("A", "B", "C"), per_class=12, size=20)
    # a non-square and an RGBA image: the cache must hold what fastai's own valid-time transforms make of them
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (20, 31, 3), dtype=np.uint8)).save(src / "A" / "wide.png")
    Image.fromarray(np.random.default_rng(2).integers(0, 255, (17, 17, 4), dtype=np.uint8), "RGBA").save(src / "B" / "rgba.png")
    tiny_config(tmp_path, {"run.name": "c", "download.source": f"path:{src}", "download.subdir": "",
                           "datablock.valid_pct": 0.25, "datablock.cache": True, "train.method": "fit",
                           "train.epochs": 2, "train.image_size": 12,
                           "evaluate.test_sets": [{"name": "same", "source": f"path:{src}"}]})
    return tmp_path


def _stages(cfg, names):
    return runner.run(cfg, [n for n in runner.STAGE_NAMES if n in names])


@pytest.mark.slow
def test_cache_holds_exactly_what_the_file_pipeline_feeds_the_model(project):
    cfg = config.load(None, cwd=project)
    _stages(cfg, {"download", "datablock"})
    ws = Workspace.from_config(cfg)
    df, _, vocab = loaders.load_split(ws)
    arr = np.load(ws.artifact("datablock", artifacts.CACHE))
    assert arr.shape == (len(df), 3, 12, 12) and arr.dtype == np.uint8

    files = kinds.of(cfg).dataloaders(ws, cfg)
    cached = cache.training_dataloaders(ws, files)
    # the validation loaders (no shuffling, no random crop) give identical batches, labels included
    for (xf, yf), (xc, yc) in zip(files.valid, cached.valid, strict=True):
        assert torch.equal(xf, xc) and torch.equal(yf, yc)
        assert type(xf) is type(xc)
    # every training row: the cached pixels are fastai's valid-time item transforms of that file
    one = files.test_dl(df, with_labels=False, after_batch=[], bs=len(df))
    (xb,) = one.one_batch()
    assert np.array_equal(arr, xb.numpy())
    # the training loader covers the training rows once per epoch, shuffled, with their labels
    seen = torch.cat([y for _, y in cached.train])
    train_labels = sorted(vocab.index(lbl) for lbl in df.loc[~df["is_valid"], "label"])
    assert len(seen) == len(cached.train) * 8 and len(seen) <= len(train_labels)
    assert sorted(seen.tolist()) != seen.tolist() or len(set(train_labels)) == 1


@pytest.mark.slow
def test_train_uses_the_cache_and_the_export_predicts_from_files(project, capsys):
    cfg = config.load(None, cwd=project)
    assert set(runner.run(cfg, list(runner.STAGE_NAMES)).values()) == {"ran"}
    out = capsys.readouterr().out
    assert "[datablock] caching" in out and "[train] training from the preprocessing cache" in out
    assert "[lr_find] training from the preprocessing cache" in out
    from fastai.learner import load_learner

    learn = load_learner(project / "exports" / "c.pkl")
    assert "cache" not in type(learn.dls.train).__module__ and type(learn.dls.train).__name__ == "TfmdDL"
    pred, _, _ = learn.predict(next((project / "src" / "A").glob("A_*.png")))
    assert pred in ("A", "B", "C")


@pytest.mark.slow
def test_cache_settings_are_part_of_the_fingerprint(project):
    cfg = config.load(None, cwd=project)
    _stages(cfg, {"download", "datablock"})
    assert runner.status(cfg)[1] == ("datablock", "up to date")
    bigger = config.load(None, cwd=project, overrides=["train.image_size=16"])
    assert runner.status(bigger)[1] == ("datablock", "config changed")
    ws = Workspace.from_config(cfg)
    assert cache.available(ws, True, cfg.train.image_size)
    # lr_find/train alone would read files, not a cache of the wrong size
    assert not cache.available(ws, True, bigger.train.image_size)
    off = config.load(None, cwd=project, overrides=["datablock.cache=false"])
    _stages(off, {"datablock"})
    assert not ws.artifact("datablock", artifacts.CACHE).exists()
    # with the cache off, image size is not a datablock input
    off_bigger = config.load(None, cwd=project, overrides=["datablock.cache=false", "train.image_size=16"])
    assert runner.status(off_bigger)[1] == ("datablock", "up to date")


@pytest.mark.slow
def test_truncated_cache_is_a_clear_error(project):
    cfg = config.load(None, cwd=project)
    _stages(cfg, {"download", "datablock"})
    ws = Workspace.from_config(cfg)
    path = ws.artifact("datablock", artifacts.CACHE)
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 100)
    reader = cache.Reader(path)
    with pytest.raises(PipelineError, match="truncated"):
        reader.read([len(reader) - 1])
    assert runner.status(cfg)[1][1].startswith("output") and "modified" in runner.status(cfg)[1][1]


@pytest.mark.slow
def test_another_split_takes_the_decoded_images_from_the_store(project):
    """A second datablock run with another split (a crossval fold, a new seed) decodes nothing: each image comes
    from the content store, and each row holds the same pixels as a fresh decode gives."""
    cfg = config.load(None, cwd=project)
    _stages(cfg, {"download", "datablock"})
    ws = Workspace.from_config(cfg)
    first = dict(zip(loaders.load_split(ws)[0]["path"], np.load(ws.artifact("datablock", artifacts.CACHE))))
    assert read_json(ws.artifact("datablock", artifacts.CACHE_META))["from_store"] == 0
    reseeded = config.load(None, ["run.seed=7", "datablock.valid_pct=0.4"], cwd=project)
    _stages(reseeded, {"datablock"})
    again = np.load(ws.artifact("datablock", artifacts.CACHE))
    df = loaders.load_split(ws)[0]
    assert read_json(ws.artifact("datablock", artifacts.CACHE_META))["from_store"] == len(df) == len(first)
    assert all(np.array_equal(first[p], a) for p, a in zip(df["path"], again))
    _stages(config.load(None, ["train.image_size=10"], cwd=project), {"datablock"})  # other settings: decoded anew
    assert read_json(ws.artifact("datablock", artifacts.CACHE_META))["from_store"] == 0


def test_a_cache_that_does_not_fit_is_an_os_error_before_anything_is_mapped(tmp_path, monkeypatch):
    """Where no small disk can be mounted (tests/reliability/test_full_disk.py does it for real): the free space is
    checked before the memory map, and the error says what is needed and what is free."""
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**7, 10**7 - 2_100_000, 2_100_000))
    with pytest.raises(OSError, match=r"^\[Errno 28\] No space left on device \(needs 5\.3 MB, 2\.1 MB free\); free "
                                      r"some, or set datablock.cache = false$"):
        cache._allocated(tmp_path / "c.npy", (12, 3, 384, 384))
    assert not (tmp_path / "c.npy").exists()
    monkeypatch.undo()
    out = cache._allocated(tmp_path / "c.npy", (2, 3, 4, 4))
    assert out.shape == (2, 3, 4, 4) and os.stat(tmp_path / "c.npy").st_blocks * 512 >= out.nbytes
