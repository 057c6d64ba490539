"""IDX files (MNIST's format) -> image folders: parsing, finding the files, converting, and the `mnist:` source."""
from __future__ import annotations

import gzip
import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline import config
from pipeline.core.errors import PipelineError
from pipeline.data import datasets, sources
from pipeline.data.idx import FLAT_LABEL_RE, PUBLISHED_FILES, convert, find_files, read_idx, read_pair
from tests.conftest import payload_server
from tests.helpers import idx_bytes

LABELS = [5, 0, 4, 1, 9, 2, 1]
TEST_LABELS = [7, 2, 1]


def images_for(labels, seed=0, shape=(4, 5)) -> np.ndarray:
    """Distinct images for `labels` (4x5: rows and columns must not be swapped)."""
    images = np.random.default_rng(seed).integers(0, 256, size=(len(labels), *shape), dtype=np.uint8)
    images[0, 0, :2] = [0, 255]
    return images


def write(path: Path, array: np.ndarray, gz: bool | None = None) -> Path:
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if (path.suffix == ".gz" if gz is None else gz) else data)
    return path


def mnist_folder(root: Path, gz: bool = True) -> Path:
    """The four MNIST files (tiny) under `root`, named as published (without .gz when not `gz`)."""
    root.mkdir(parents=True, exist_ok=True)
    arrays = (images_for(LABELS), np.array(LABELS), images_for(TEST_LABELS, 1), np.array(TEST_LABELS))
    for name, array in zip(PUBLISHED_FILES, arrays):
        write(root / (name if gz else name.removesuffix(".gz")), array)
    return root


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode == "L" and im.format == "PNG"
        return np.asarray(im)


# ------------------------------------------------------------------------------------------------ parsing

@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_raw_and_gzipped(tmp_path, gz):
    images = images_for(LABELS)
    got = read_idx(write(tmp_path / "x-images-idx3-ubyte", images, gz), "images")
    assert got.dtype == np.uint8 and got.shape == (7, 4, 5)
    np.testing.assert_array_equal(got, images)
    labels = read_idx(write(tmp_path / "x-labels-idx1-ubyte", np.array(LABELS), gz), "labels")
    assert labels.tolist() == LABELS


def test_read_idx_rejects_a_bad_magic_number(tmp_path):
    labels = write(tmp_path / "train-labels-idx1-ubyte", np.array(LABELS))
    with pytest.raises(PipelineError, match=rf"^{re.escape(str(labels))}: not an IDX images file: magic number "
                                            r"0x00000801, expected 0x00000803$"):
        read_idx(labels, "images")
    wide = tmp_path / "wide"
    wide.write_bytes(bytes([0, 0, 0x0D, 1]) + (1).to_bytes(4, "big") + b"\0\0\0\0")  # float32 labels
    with pytest.raises(PipelineError, match=r"magic number 0x00000d01, expected 0x00000801"):
        read_idx(wide, "labels")
    csv = tmp_path / "sign_mnist_train.csv"
    csv.write_text("label,pixel1\n3,0\n")
    with pytest.raises(PipelineError, match=r"not an IDX labels file: magic number 0x6c616265"):
        read_idx(csv, "labels")
    with pytest.raises(PipelineError, match=r"not an IDX labels file: magic number only 0 bytes"):
        read_idx(write_empty(tmp_path / "empty"), "labels")


def write_empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_rejects_truncation(tmp_path, gz):
    data = idx_bytes(images_for(LABELS))
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(gzip.compress(data[:-3]) if gz else data[:-3])  # a download cut short, then (re)zipped
    with pytest.raises(PipelineError, match=rf"^{re.escape(str(path))}: truncated: its header promises "
                                            r"7 x 4 x 5 = 140 bytes of images, the file holds 137$"):
        read_idx(path, "images")
    path.write_bytes(data[:10])  # inside the header
    with pytest.raises(PipelineError, match=r": truncated: 10 bytes, shorter than its 16-byte header$"):
        read_idx(path, "images")
    path.write_bytes(gzip.compress(data)[:-20])  # the gzip stream itself cut short
    with pytest.raises(PipelineError, match=r": truncated gzip file"):
        read_idx(path, "images")
    path.write_bytes(data + b"\0")
    with pytest.raises(PipelineError, match=r": 1 bytes after the 7 x 4 x 5 images its header promises"):
        read_idx(path, "images")


def test_read_idx_rejects_a_header_whose_size_overflows(tmp_path):
    """65536 x 2**24 x 2**24 is 2**64 bytes: numpy's int64 product wrapped to 0, so the empty data "matched" and
    reshape failed (issue 36)."""
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in (65536, 2**24, 2**24)))
    with pytest.raises(PipelineError) as err:
        read_idx(path, "images")
    assert str(err.value) == (f"{path}: truncated: its header promises 65536 x 16777216 x 16777216 = "
                              f"{2**64} bytes of images, the file holds 0")


@pytest.mark.parametrize("shape", [(3, 0, 0), (3, 0, 5), (3, 4, 0)])
def test_read_idx_rejects_images_without_pixels(tmp_path, shape):
    """0 x 0 images got as far as PIL's `cannot write empty image` (issue 36)."""
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(idx_bytes(np.zeros(shape, np.uint8)))
    with pytest.raises(PipelineError) as err:
        read_idx(path, "images")
    assert str(err.value) == f"{path}: its images are {shape[1]} x {shape[2]} pixels: no image to read"


def test_convert_refuses_training_labels_of_one_class(tmp_path):
    """Every training label 0: the error was "no class folders … (30 loose images)" from the folder search, which
    took train/0 for the image root (issue 36). Say "one class"."""
    src = mnist_folder(tmp_path / "src")
    labels = write(src / PUBLISHED_FILES[1], np.zeros(len(LABELS), np.uint8))
    with pytest.raises(PipelineError) as err:
        convert(src, tmp_path / "out")
    assert str(err.value) == (f"{labels}: every training label is 0: one class, and a classifier needs at least "
                              "two")
    assert not (tmp_path / "out" / ".complete").exists()


def test_read_pair_rejects_a_count_mismatch(tmp_path):
    images = write(tmp_path / "train-images-idx3-ubyte.gz", images_for(LABELS))
    labels = write(tmp_path / "train-labels-idx1-ubyte.gz", np.array(LABELS[:-1]))
    with pytest.raises(PipelineError) as err:
        read_pair(images, labels)
    assert str(err.value) == f"{labels} holds 6 labels but {images} holds 7 images: not the same set"
    labels = write(labels, np.array(LABELS))
    got_labels, got_images = read_pair(images, labels)
    assert got_labels.dtype == np.int64 and got_labels.tolist() == LABELS and got_images.shape == (7, 4, 5)


# ------------------------------------------------------------------------------------------------ files

def test_find_files_published_names_renames_and_nesting(tmp_path):
    mnist_folder(tmp_path / "a")
    assert {k: p.name for k, p in find_files(tmp_path / "a").items()} == {
        ("train", "images"): PUBLISHED_FILES[0], ("train", "labels"): PUBLISHED_FILES[1],
        ("test", "images"): PUBLISHED_FILES[2], ("test", "labels"): PUBLISHED_FILES[3]}
    # Kaggle's hojjatk/mnist-dataset: dotted names at the top, a same-named folder per file below them
    b = tmp_path / "b" / "download"
    b.mkdir(parents=True)
    for name in PUBLISHED_FILES:
        stem = name.removesuffix(".gz")
        dotted = stem.replace("-idx", ".idx")
        write(b / dotted, np.array(LABELS) if "labels" in name else images_for(LABELS))
        (b / stem).mkdir()
        write(b / stem / stem, np.array(LABELS) if "labels" in name else images_for(LABELS))
    assert {p.name for p in find_files(tmp_path / "b").values()} == {
        "train-images.idx3-ubyte", "train-labels.idx1-ubyte", "t10k-images.idx3-ubyte", "t10k-labels.idx1-ubyte"}
    # an uncompressed copy beside the .gz is read instead of it; EMNIST's names have a prefix and say "test"
    c = tmp_path / "c"
    c.mkdir()
    for split, n in (("train", 7), ("test", 3)):
        write(c / f"emnist-digits-{split}-images-idx3-ubyte.gz", images_for(LABELS[:n]))
        write(c / f"emnist-digits-{split}-labels-idx1-ubyte.gz", np.array(LABELS[:n]))
    write(c / "emnist-digits-test-labels-idx1-ubyte", np.array(LABELS[:3]))
    assert find_files(c)["test", "labels"].name == "emnist-digits-test-labels-idx1-ubyte"
    assert find_files(c)["train", "labels"].name == "emnist-digits-train-labels-idx1-ubyte.gz"


def test_find_files_names_what_is_missing_or_ambiguous(tmp_path):
    mnist_folder(tmp_path)
    (tmp_path / PUBLISHED_FILES[3]).unlink()
    with pytest.raises(PipelineError, match=r"^no test labels IDX file found in .*train-images-idx3-ubyte\.gz"):
        find_files(tmp_path)
    write(tmp_path / "emnist-letters-test-labels-idx1-ubyte.gz", np.array(LABELS))
    write(tmp_path / "emnist-digits-test-labels-idx1-ubyte.gz", np.array(LABELS))
    with pytest.raises(PipelineError, match=r"^several test labels IDX files in .*: emnist-digits-test-labels-idx1"
                                            r"-ubyte\.gz, emnist-letters-test-labels-idx1-ubyte\.gz; point"):
        find_files(tmp_path)


# ------------------------------------------------------------------------------------------------ convert

@pytest.mark.parametrize("gz", [True, False])
def test_convert_writes_class_folders_and_a_flat_test_folder_once(tmp_path, gz):
    src = mnist_folder(tmp_path / "src", gz=gz)
    dest = convert(src, tmp_path / "out")
    assert sorted(p.name for p in (dest / "train").iterdir()) == ["0", "1", "2", "4", "5", "9"]
    train_images = images_for(LABELS)
    for i, k in enumerate(LABELS):
        np.testing.assert_array_equal(read_png(dest / "train" / str(k) / f"{k}_{i:05d}.png"), train_images[i])
    test_names = sorted(p.name for p in (dest / "test").iterdir())
    assert test_names == ["1_00002.png", "2_00001.png", "7_00000.png"]
    assert [re.match(FLAT_LABEL_RE, n).group(1) for n in test_names] == ["1", "2", "7"]
    np.testing.assert_array_equal(read_png(dest / "test" / "2_00001.png"), images_for(TEST_LABELS, 1)[1])
    marker = (dest / ".complete").read_text()
    assert marker.startswith("train\tfolders\t7\t") and "\ntest\tflat\t3\t" in marker
    (src / PUBLISHED_FILES[0]).unlink(missing_ok=True)  # once complete, the source is not read again
    assert convert(src, dest) == dest


def test_convert_leaves_no_marker_when_a_file_is_bad(tmp_path):
    src = mnist_folder(tmp_path / "src")
    bad = src / PUBLISHED_FILES[3]
    bad.write_bytes(gzip.compress(idx_bytes(np.array(TEST_LABELS))[:-1]))
    with pytest.raises(PipelineError, match=rf"^{re.escape(str(bad))}: truncated"):
        convert(src, tmp_path / "out")
    assert not (tmp_path / "out" / ".complete").exists()


# ------------------------------------------------------------------------------------------------ mnist: source

def test_mnist_path_source_through_config_and_datasets(tmp_path):
    mnist_folder(tmp_path / "data" / "mnist")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "x.toml").write_text('[download]\nsource = "mnist:path:../data/mnist"\nsubdir = "train"\n')
    cfg = config.load(tmp_path / "c" / "x.toml")
    assert cfg.download.source == f"mnist:path:{tmp_path / 'data' / 'mnist'}"
    logs = []
    root = datasets.image_root(cfg.download.source, "train", tmp_path / "cache", logs.append)
    assert root.name == "train" and len(sources.list_images(root)) == 7
    assert any("converting IDX files" in m for m in logs)
    assert datasets.local_fingerprint(cfg.download.source, "train") == ""  # cached by name, like sign_mnist:
    logs.clear()
    assert datasets.image_root(cfg.download.source, "test", tmp_path / "cache", logs.append).name == "test"
    assert not any("converting" in m for m in logs)


@pytest.mark.parametrize("source,ok", [
    ("mnist:url:https://ossci-datasets.s3.amazonaws.com/mnist/", True),
    ("mnist:url:https://h/d/mnist.tar.gz", True), ("mnist:kaggle:hojjatk/mnist-dataset", True),
    ("mnist:path:/x", True), ("url:https://h/mnist/", False), ("sign_mnist:url:https://h/d/", False),
    ("mnist:url:https://h/d/train-images-idx3-ubyte.gz", False), ("mnist:/x", False)])
def test_mnist_source_forms(source, ok):
    if ok:
        sources.check(source)
    else:
        with pytest.raises(PipelineError, match="mnist: .IDX files"):
            sources.check(source)


def test_mnist_url_folder_downloads_the_published_files_once(tmp_path, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    files = mnist_folder(tmp_path / "published")
    served = {f"/exdb/mnist/{name}": (files / name).read_bytes() for name in PUBLISHED_FILES}
    seen = []

    def status(request):
        seen.append(request.path)
        return 200

    with payload_server(served, status) as base:
        source = f"mnist:url:http://user:secret@{base.removeprefix('http://')}/exdb/mnist/?token=abc"
        logs = []
        root = datasets.image_root(source, "train", tmp_path / "cache", logs.append)
        assert sorted(p.name for p in root.iterdir()) == ["0", "1", "2", "4", "5", "9"]
        assert seen == [f"/exdb/mnist/{name}?token=abc" for name in PUBLISHED_FILES]
        assert datasets.image_root(source, "test", tmp_path / "cache", logs.append).name == "test"
        assert len(seen) == 4  # cached: no second download
        assert logs and not any("secret" in m or "abc" in m for m in logs)
        assert sources.redact_source(source).endswith("/exdb/mnist/?token=***") and "secret" not in \
            sources.redact_source(source)
        with pytest.raises(PipelineError, match=r"download failed: .*/nowhere/train-images-idx3-ubyte\.gz answered "
                                                r"HTTP 404"):
            datasets.materialise(f"mnist:url:{base}/nowhere/", tmp_path / "cache", logs.append)


# ------------------------------------------------------------------------------------------------ real files

MNIST_MD5 = {"train-images-idx3-ubyte.gz": "6bbc9ace898e44ae57da46a324031adb",
             "t10k-labels-idx1-ubyte.gz": "27ae3e4e09519cfbb04c329615203637"}  # of the unzipped files


@pytest.mark.slow
@pytest.mark.shared_data
def test_real_mnist_files_convert(tmp_path, shared_data):
    src = shared_data / "mnist"
    if not all((src / name).is_file() for name in PUBLISHED_FILES):
        pytest.skip(f"the MNIST IDX files are not in {src}")
    for name, md5 in MNIST_MD5.items():
        assert hashlib.md5(gzip.decompress((src / name).read_bytes())).hexdigest() == md5
    dest = convert(src, tmp_path / "mnist")
    train = sources.list_images(dest / "train")
    test = sources.list_images(dest / "test")
    assert len(train) == 60000 and len(test) == 10000
    label_of = {int(p.stem.split("_")[1]): int(p.parent.name) for p in train}
    assert [label_of[i] for i in range(10)] == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert sorted(p.name for p in (dest / "train").iterdir()) == [str(k) for k in range(10)]
    assert all(re.match(FLAT_LABEL_RE, p.name) for p in test)
    assert read_png(dest / "train" / "5" / "5_00000.png").shape == (28, 28)
