"""Sign-Language-MNIST CSV -> image folders."""

import gzip
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.core.errors import PipelineError
from pipeline.data.sign_mnist import (
    FLAT_LABEL_RE, HEADER, LETTERS, convert, find_csv, read_csv, write_image_folder,
)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SHARED_DATA", REPO.parent / "shared" / "data")) / "sign_mnist"

LABELS = [0, 8, 10, 24, 1, 2, 3, 4, 5, 6, 7, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23,
          0, 8, 10, 24, 24, 0]  # 30 rows, every label except 9 (J) and 25 (Z)


def make_frame(labels=LABELS, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(len(labels), 784))
    pixels[0, :4] = [0, 255, 0, 255]  # make sure the extremes are present
    return pd.DataFrame(np.column_stack([labels, pixels]), columns=HEADER)


def write_csv(path: Path, frame: pd.DataFrame | None = None) -> Path:
    (make_frame() if frame is None else frame).to_csv(path, index=False)  # pandas gzips *.gz by suffix
    return path


@pytest.fixture
def csv_path(tmp_path):
    return write_csv(tmp_path / "sign_mnist_train.csv")


def test_read_csv(csv_path):
    labels, pixels = read_csv(csv_path)
    frame = make_frame()
    assert labels.dtype == np.int64 and labels.tolist() == LABELS
    assert pixels.dtype == np.uint8 and pixels.shape == (30, 28, 28)
    np.testing.assert_array_equal(pixels.reshape(30, -1), frame.iloc[:, 1:].to_numpy())


def test_read_csv_gz(tmp_path, csv_path):
    gz = tmp_path / "x.csv.gz"
    with open(csv_path, "rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    a_labels, a_pixels = read_csv(csv_path)
    b_labels, b_pixels = read_csv(gz)
    np.testing.assert_array_equal(a_labels, b_labels)
    np.testing.assert_array_equal(a_pixels, b_pixels)


@pytest.mark.parametrize("bad_label,letter", [(9, "J"), (25, "Z")])
def test_rejects_j_and_z(tmp_path, bad_label, letter):
    labels = list(LABELS)
    labels[6] = bad_label
    path = write_csv(tmp_path / "bad.csv", make_frame(labels))
    with pytest.raises(PipelineError, match=rf"row 7 has label {bad_label} \({letter}\)"):
        read_csv(path)


def test_rejects_label_out_of_range(tmp_path):
    labels = list(LABELS)
    labels[2] = 26
    with pytest.raises(PipelineError, match=r"row 3 has label 26, outside 0..25"):
        read_csv(write_csv(tmp_path / "bad.csv", make_frame(labels)))


def test_rejects_pixel_out_of_range(tmp_path):
    frame = make_frame()
    frame.iloc[4, 100] = 256
    with pytest.raises(PipelineError, match=r"row 5 has a pixel value outside 0..255"):
        read_csv(write_csv(tmp_path / "bad.csv", frame))


def test_rejects_missing_value(tmp_path):
    frame = make_frame().astype(object)
    frame.iloc[1, 10] = ""
    with pytest.raises(PipelineError, match=r"row 2 has a missing or non-integer value"):
        read_csv(write_csv(tmp_path / "bad.csv", frame))


@pytest.mark.parametrize("header", [
    ["Label"] + HEADER[1:],                      # wrong name
    HEADER[:-1],                                 # 783 pixels
    ["label"] + [f"p{i}" for i in range(784)],   # wrong pixel names
])
def test_rejects_bad_header(tmp_path, header):
    frame = make_frame().iloc[:, : len(header)]
    frame.columns = header
    with pytest.raises(PipelineError, match="expected header label,pixel1..pixel784"):
        read_csv(write_csv(tmp_path / "bad.csv", frame))


def test_rejects_missing_and_non_csv(tmp_path):
    with pytest.raises(PipelineError, match="not found"):
        read_csv(tmp_path / "nope.csv")
    junk = tmp_path / "junk.csv.gz"
    junk.write_bytes(b"this is not gzip")
    with pytest.raises(PipelineError, match="cannot read"):
        read_csv(junk)


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode == "L" and im.format == "PNG"
        return np.asarray(im)


def test_write_folders_layout_round_trips(tmp_path, csv_path):
    labels, pixels = read_csv(csv_path)
    dest = tmp_path / "out" / "train"
    counts = write_image_folder(labels, pixels, dest, "folders")
    assert counts == {LETTERS[k]: LABELS.count(k) for k in sorted(set(LABELS))}
    assert counts["A"] == 3 and counts["I"] == 2 and counts["K"] == 2 and counts["Y"] == 3
    folders = sorted(p.name for p in dest.iterdir())
    assert folders == sorted(counts) and "J" not in folders and "Z" not in folders
    for row, k in enumerate(LABELS):
        path = dest / LETTERS[k] / f"{LETTERS[k]}_{row:05d}.png"
        np.testing.assert_array_equal(read_png(path), pixels[row])
    assert sum(1 for _ in dest.rglob("*.png")) == 30
    assert not [p for p in dest.parent.iterdir() if p.name != "train"]  # temp dir renamed away


def test_write_flat_layout(tmp_path, csv_path):
    labels, pixels = read_csv(csv_path)
    dest = tmp_path / "test"
    write_image_folder(labels, pixels, dest, "flat")
    files = sorted(dest.iterdir())
    assert len(files) == 30 and all(p.is_file() for p in files)
    for p in files:
        m = re.match(FLAT_LABEL_RE, p.name)
        assert m, p.name
        row = int(p.stem.split("_")[1])
        assert m.group(1) == LETTERS[LABELS[row]]
        np.testing.assert_array_equal(read_png(p), pixels[row])
    assert {"A_00000.png", "I_00001.png", "K_00002.png", "Y_00003.png"} <= {p.name for p in files}


def test_write_replaces_existing_dest(tmp_path, csv_path):
    labels, pixels = read_csv(csv_path)
    dest = tmp_path / "test"
    dest.mkdir()
    (dest / "stale.png").write_bytes(b"x")
    write_image_folder(labels[:5], pixels[:5], dest, "flat")
    assert len(list(dest.iterdir())) == 5 and not (dest / "stale.png").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name != csv_path.name] == ["test"]


def test_write_rejects_bad_input(tmp_path):
    with pytest.raises(PipelineError, match="layout"):
        write_image_folder(np.zeros(2, np.int64), np.zeros((2, 28, 28), np.uint8), tmp_path / "x", "tree")
    with pytest.raises(PipelineError, match="uint8"):
        write_image_folder(np.zeros(2, np.int64), np.zeros((2, 28, 28), np.float32), tmp_path / "x", "flat")
    with pytest.raises(PipelineError, match="pixels must be"):
        write_image_folder(np.zeros(3, np.int64), np.zeros((2, 28, 28), np.uint8), tmp_path / "x", "flat")
    assert not (tmp_path / "x").exists()


def make_kaggle_zip_tree(root: Path, gz: bool = False) -> Path:
    """Kaggle's zip nests each CSV one folder down: sign_mnist_train/sign_mnist_train.csv."""
    ext = ".csv.gz" if gz else ".csv"
    for name, seed in (("sign_mnist_train", 0), ("sign_mnist_test", 1)):
        (root / name).mkdir(parents=True)
        write_csv(root / name / f"{name}{ext}", make_frame(seed=seed))
    return root


def test_convert_and_idempotent(tmp_path):
    src = make_kaggle_zip_tree(tmp_path / "download" / "sign-language-mnist", gz=True)
    dest = tmp_path / "images"
    assert convert(tmp_path / "download", dest) == dest  # CSVs two levels down
    assert (dest / ".complete").is_file()
    train_letters = sorted(p.name for p in (dest / "train").iterdir())
    assert train_letters == sorted({LETTERS[k] for k in LABELS})
    assert all(p.is_file() and re.match(FLAT_LABEL_RE, p.name) for p in (dest / "test").iterdir())
    assert len(list((dest / "test").iterdir())) == 30
    _, test_pixels = read_csv(src / "sign_mnist_test" / "sign_mnist_test.csv.gz")
    np.testing.assert_array_equal(read_png(dest / "test" / "K_00002.png"), test_pixels[2])

    watched = [dest / ".complete", dest / "train" / "A" / "A_00000.png", dest / "test" / "Y_00003.png"]
    before = [p.stat().st_mtime_ns for p in watched]
    os.utime(watched[1], ns=(1, 1))  # an untouched file keeps even an odd mtime
    assert convert(tmp_path / "download", dest) == dest
    assert [p.stat().st_mtime_ns for p in watched[::2]] == before[::2]
    assert watched[1].stat().st_mtime_ns == 1
    # the source is not even needed once dest is complete
    shutil.rmtree(tmp_path / "download")
    assert convert(tmp_path / "download", dest) == dest


def test_convert_redoes_incomplete(tmp_path):
    src = make_kaggle_zip_tree(tmp_path / "src")
    dest = tmp_path / "images"
    (dest / "train" / "A").mkdir(parents=True)  # a half-finished earlier run: no .complete
    (dest / "train" / "A" / "junk.png").write_bytes(b"x")
    convert(src, dest)
    assert not (dest / "train" / "A" / "junk.png").exists()
    assert (dest / ".complete").is_file()


def test_find_csv_prefers_shallowest(tmp_path):
    make_kaggle_zip_tree(tmp_path)
    write_csv(tmp_path / "sign_mnist_train.csv")  # Kaggle's zip also has a top-level copy
    assert find_csv(tmp_path, "sign_mnist_train") == tmp_path / "sign_mnist_train.csv"
    assert find_csv(tmp_path, "sign_mnist_test") == tmp_path / "sign_mnist_test" / "sign_mnist_test.csv"


def test_convert_missing_csv(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    write_csv(src / "sign_mnist_train.csv")
    with pytest.raises(PipelineError, match=r"no sign_mnist_test\.csv or sign_mnist_test\.csv\.gz found in"):
        convert(src, tmp_path / "out")
    assert not (tmp_path / "out" / ".complete").exists()
    with pytest.raises(PipelineError, match="source folder not found"):
        convert(tmp_path / "nowhere", tmp_path / "out")


@pytest.mark.shared_data
def test_real_sign_mnist_csvs():
    train_csv, test_csv = SHARED / "sign_mnist_train.csv.gz", SHARED / "sign_mnist_test.csv.gz"
    if not (train_csv.is_file() and test_csv.is_file()):
        pytest.skip(f"Sign-MNIST CSVs not found in {SHARED} (set SHARED_DATA)")
    assert find_csv(SHARED, "sign_mnist_train") == train_csv
    for path, n_rows in ((train_csv, 27455), (test_csv, 7172)):
        labels, pixels = read_csv(path)
        assert labels.shape == (n_rows,) and pixels.shape == (n_rows, 28, 28)
        distinct = set(np.unique(labels).tolist())
        assert len(distinct) == 24 and distinct == set(range(25)) - {9}
        assert not np.isin(labels, (9, 25)).any()
        assert pixels.max() > 200 and pixels.min() < 50


def test_convert_refuses_a_training_csv_of_one_class(tmp_path):
    """As IDX's (issue 36): every training row of one letter was "no class folders … (30 loose images)" from the
    folder search, which took train/A for the image root. Say "one class", naming the file."""
    src = make_kaggle_zip_tree(tmp_path / "src")
    train = write_csv(src / "sign_mnist_train" / "sign_mnist_train.csv", make_frame(labels=[0] * 30))
    with pytest.raises(PipelineError) as err:
        convert(src, tmp_path / "images")
    assert str(err.value) == f"{train}: every training label is A: one class, and a classifier needs at least two"
    assert not (tmp_path / "images" / ".complete").exists()
