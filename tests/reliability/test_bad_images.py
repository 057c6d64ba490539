"""Bad and odd inputs: each image is used correctly or skipped with a one-line reason that is counted and listed.

One module-scoped tiny run (download, datablock, train, evaluate on the fast baseline) over a project whose paths
hold spaces and non-ASCII characters, with every kind of odd image mixed in; the tests then read its artifacts."""
from __future__ import annotations

import contextlib
import io
import json
import os
import pickletools
import struct
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageOps

from pipeline import config, runner
from pipeline.core.errors import PipelineError
from pipeline.core.workspace import Workspace
from pipeline.data import loaders
from pipeline import kinds
from tests.conftest import make_image_folder, training_fixture
from tests.reliability.conftest import write_config

UTF8_FS = sys.getfilesystemencoding().lower() in ("utf-8", "utf8")
CLASSES = ("class a", "ñandú", "NA")      # a space, non-ASCII, and a name pandas reads as missing by default
ORIENTATION = 0x0112


# ------------------------------------------------------------------------------------------- image makers

def rgb(seed: int = 0, size: int = 16) -> np.ndarray:
    return (np.random.default_rng(seed).random((size, size, 3)) * 255).astype("uint8")


def jpeg_bytes(arr: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90, **kw)
    return buf.getvalue()


def exif_rotated_jpeg(path: Path, seed: int = 0) -> Path:
    """A 24x12 (wide) JPEG whose EXIF says 'rotate 90° clockwise to view' (orientation 6): upright it is 12x24."""
    arr = (np.random.default_rng(seed).random((12, 24, 3)) * 80).astype("uint8")
    arr[:, :6] = 255  # a bright band on the stored left edge: the top edge once upright
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    path.write_bytes(jpeg_bytes(arr, exif=exif.tobytes()))
    return path


def i16_png(path: Path) -> Path:
    im = Image.new("I;16", (16, 16))
    im.frombytes((np.arange(256, dtype="<u2") * 257).tobytes())
    im.save(path)
    return path


def png_declaring(path: Path, width: int, height: int) -> Path:
    """A tiny PNG file whose header declares width x height pixels (a decompression bomb's calling card)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


def convert_in_place(path: Path, mode: str, suffix: str | None = None) -> Path:
    """Re-save the image at `path` in PIL `mode` (optionally as another format); returns the new path."""
    im = Image.open(path).convert(mode)
    new = path.with_suffix(suffix) if suffix else path
    im.save(new)
    if new != path:
        path.unlink()
    return new


def write_undecodable_name(folder: Path, raw_name: bytes, content: bytes) -> None:
    """A file whose name is not valid UTF-8 (as a Latin-1 tar archive produces)."""
    with open(os.fsencode(folder) + b"/" + raw_name, "wb") as f:
        f.write(content)


# ------------------------------------------------------------------------------------------- check_image

def _write(kind: str, d: Path) -> Path:
    full = jpeg_bytes(rgb(size=64))
    makers = {
        "truncated.jpg": lambda p: p.write_bytes(full[: len(full) // 2]),
        "header-only.jpg": lambda p: p.write_bytes(full[:300]),
        "truncated.png": lambda p: (Image.fromarray(rgb(size=64)).save(p), p.write_bytes(p.read_bytes()[:400])),
        "bomb.png": lambda p: png_declaring(p, 100_000, 100_000),
        "i16.png": i16_png,
        "int32.tif": lambda p: Image.fromarray((np.arange(256).reshape(16, 16) * 257).astype("int32")).save(p),
        "float.tif": lambda p: Image.fromarray(np.linspace(0, 1, 256, dtype="float32").reshape(16, 16)).save(p),
        "bad-exif.jpg": lambda p: p.write_bytes(jpeg_bytes(rgb(), exif=b"Exif\x00\x00not a tiff header")),
        "rgba.png": lambda p: Image.fromarray(np.dstack([rgb(), rgb(1)[..., 0]])).save(p),
        "palette.png": lambda p: Image.fromarray(rgb()).convert("P").save(p),
        "gray.png": lambda p: Image.fromarray(rgb()[..., 0]).save(p),
        "gray-alpha.png": lambda p: Image.fromarray(rgb()).convert("LA").save(p),
        "bilevel.png": lambda p: Image.fromarray(rgb()).convert("1").save(p),
        "cmyk.jpg": lambda p: Image.fromarray(rgb()).convert("CMYK").save(p),
        "exif-rotated.jpg": exif_rotated_jpeg,
    }
    path = d / kind
    makers[kind](path)
    return path


@pytest.mark.parametrize("kind, reason", [
    ("truncated.jpg", "truncated"),
    ("header-only.jpg", "OSError"),
    ("truncated.png", "truncated"),
    ("bomb.png", "too large: Image size (10000000000 pixels) exceeds limit"),
    ("i16.png", "unsupported I;16 pixels (16/32-bit)"),
    ("int32.tif", "unsupported I pixels"),
    ("float.tif", "unsupported F pixels"),
    ("bad-exif.jpg", "bad EXIF data: SyntaxError"),
    ("rgba.png", ""), ("palette.png", ""), ("gray.png", ""), ("gray-alpha.png", ""), ("bilevel.png", ""),
    ("cmyk.jpg", ""), ("exif-rotated.jpg", ""),
])
def test_check_image_gives_a_one_line_reason(tmp_path, kind, reason):
    got = loaders.check_image(_write(kind, tmp_path))
    assert (reason in got) if reason else got == "", got
    assert "\n" not in got


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_oversized_image_is_refused_before_decoding(tmp_path, monkeypatch):
    """Between PIL's warning and error thresholds PIL would decode it; check_image refuses from the header."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    Image.fromarray(rgb(size=40)).save(tmp_path / "big.png")  # 1,600 pixels: > limit, < 2x limit
    assert loaders.check_image(tmp_path / "big.png") == \
        "too large: 40x40 pixels exceeds PIL's decompression-bomb limit of 1,000 pixels"



def test_an_image_over_the_pixel_limit_is_one_line_before_decoding(tmp_path):
    """Under PIL's limit but over MAX_PIXELS (a real 9,400 x 9,400 PNG of 280 KB took serve to 3.6 GB and 38 s, and
    `predict` to 3.9 GB): refused from its header, in one line, by every reader (datablock, evaluate, predict,
    serve)."""
    Image.new("1", (8000, 7000)).save(tmp_path / "huge.png")  # 56 million pixels, a few kB
    assert loaders.check_image(tmp_path / "huge.png") == \
        "too large: 8000x7000 pixels exceeds the limit of 50,000,000 pixels (50 MP): downscale it"


# ------------------------------------------------------------------------------------------- a tiny run

@training_fixture(scope="module")
def run(tmp_path_factory):
    """One tiny run over odd data; yields (project, workspace, captured stdout)."""
    base = tmp_path_factory.mktemp("rel") / "my data ñ"
    train = make_image_folder(base / "train set", classes=CLASSES, per_class=12, size=16)
    a, n, na = (train / c for c in CLASSES)
    # odd but usable: must be kept, under their exact names
    convert_in_place(a / "class a_0.png", "RGBA")
    convert_in_place(a / "class a_1.png", "P")
    convert_in_place(n / "ñandú_0.png", "L")
    convert_in_place(n / "ñandú_1.png", "CMYK", ".jpg")
    convert_in_place(na / "NA_0.png", "LA")
    convert_in_place(na / "NA_1.png", "1")
    (a / "class a_2.png").rename(a / "foto 1, ñ #2.png")
    (n / "ñandú_2.png").rename(n / "日本語 \"quoted\" it's.png")
    exif_rotated_jpeg(na / "rotated.jpg")
    # bad: each excluded and listed in corrupt.csv with its reason
    (a / "trunc.jpg").write_bytes(jpeg_bytes(rgb(size=64))[:600])
    i16_png(n / "sixteen.png")
    png_declaring(na / "bomb.png", 100_000, 100_000)
    (na / "empty.jpg").write_bytes(b"")
    (a / "bad-exif.jpg").write_bytes(jpeg_bytes(rgb(), exif=b"Exif\x00\x00not a tiff header"))
    if UTF8_FS:
        write_undecodable_name(a, b"caf\xe9.png", (a / "class a_3.png").read_bytes())
    # not images at all: never listed
    for junk in (".DS_Store", "Thumbs.db", "notes.txt"):
        (a / junk).write_text("junk")
    (train / "zzz empty").mkdir()

    test = base / "test ü"
    test.mkdir()
    src = make_image_folder(base / "tsrc", classes=CLASSES, per_class=3, size=16, seed=5)
    for c in CLASSES[:2]:                                    # the test set lacks the model's class NA
        for i, f in enumerate(sorted((src / c).glob("*.png"))):
            f.rename(test / f"{c}__{i}.png")
    (test / "zebra__0.png").write_bytes((test / "class a__0.png").read_bytes())   # label not in the vocab
    (test / "README.png").write_bytes((test / "class a__0.png").read_bytes())     # regex does not match
    (test / "class a__9.jpg").write_bytes(jpeg_bytes(rgb(size=64))[:600])          # truncated
    if UTF8_FS:
        write_undecodable_name(test, b"class a__\xff.png", (test / "class a__0.png").read_bytes())
    exif_rotated_jpeg(test / "ñandú__7.jpg", seed=3)

    project = write_config(base / "project", f"path:{train}", train={"epochs": 2},
                           test_sets=[{"name": "t ü", "source": f"path:{test}", "label_regex": r"^(.+)__\S+$"}])
    cfg = config.load(None, cwd=project)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = runner.run(cfg, ["download", "datablock", "train", "evaluate"])
    assert result == {s: "ran" for s in ("download", "datablock", "train", "evaluate")}, out.getvalue()
    return project, Workspace.from_config(cfg), cfg, out.getvalue(), train, test


def test_bad_training_images_are_excluded_with_one_line_reasons(run):
    project, ws, cfg, log, train, _ = run
    corrupt = pd.read_csv(ws.artifact("datablock", "corrupt.csv"), keep_default_na=False)
    reasons = {Path(p).name: r for p, r in zip(corrupt["path"], corrupt["reason"])}
    expected = {"trunc.jpg": "runcated", "sixteen.png": "unsupported I;16 pixels", "bomb.png": "too large",
                "empty.jpg": "empty file", "bad-exif.jpg": "bad EXIF data"}
    if UTF8_FS:
        expected["caf\\xe9.png"] = "file name is not valid UTF-8"
    assert set(reasons) == set(expected), reasons
    assert all(expected[k] in reasons[k] and "\n" not in reasons[k] for k in expected), reasons
    meta = json.loads(ws.artifact("datablock", "vocab.json").read_text())
    assert meta["n_corrupt"] == len(expected)
    assert f"{len(expected) - UTF8_FS} unreadable image(s) excluded" in log
    if UTF8_FS:
        assert "1 file(s) with names that are not valid UTF-8 excluded" in log
    assert "DecompressionBombWarning" not in log
    dataset = json.loads(ws.artifact("download", "dataset.json").read_text())
    assert dataset["empty_classes"] == ["zzz empty"]
    assert "skipped 1 class folder(s) with no images: zzz empty" in log


def test_odd_modes_and_names_are_trained_on_under_their_exact_names(run):
    project, ws, cfg, log, train, _ = run
    split = pd.read_csv(ws.artifact("datablock", "splits.csv"), dtype=str, keep_default_na=False)
    assert sorted(set(split["label"])) == sorted(CLASSES)
    assert json.loads(ws.artifact("datablock", "vocab.json").read_text())["vocab"] == sorted(CLASSES)
    names = set(split["path"])
    for kept in ("class a/class a_0.png", "class a/class a_1.png", "ñandú/ñandú_0.png", "ñandú/ñandú_1.jpg",
                 "NA/NA_0.png", "NA/NA_1.png", "class a/foto 1, ñ #2.png", "ñandú/日本語 \"quoted\" it's.png",
                 "NA/rotated.jpg"):
        assert kept in names, kept
    assert len(split) == 3 * 12 + 1
    assert all((train / p).is_file() for p in split["path"])
    history = pd.read_csv(ws.artifact("train", "history.csv"))
    assert len(history) == 2 and history["train_loss"].notna().all()
    xb, _ = kinds.of(cfg).dataloaders(ws, cfg).one_batch()
    assert xb.shape[1:] == (3, 16, 16)                            # every mode became 3-channel RGB


def test_exif_orientation_is_applied_in_training_and_by_the_exported_learner(run):
    project, ws, cfg, log, train, test = run
    upright = ImageOps.exif_transpose(Image.open(train / "NA/rotated.jpg")).convert("RGB")
    assert upright.size == (12, 24)
    dls = kinds.of(cfg).dataloaders(ws, cfg)
    split = pd.read_csv(ws.artifact("datablock", "splits.csv"), dtype=str, keep_default_na=False)
    row = split.index[split["path"] == "NA/rotated.jpg"][0]
    ds = dls.valid_ds if split.loc[row, "is_valid"] == "True" else dls.train_ds
    same_side = split[split["is_valid"] == split.loc[row, "is_valid"]].reset_index()
    item, _ = ds[int(same_side.index[same_side["path"] == "NA/rotated.jpg"][0])]
    assert item.size == upright.size and np.array_equal(np.array(item), np.array(upright))

    # the exported learner needs no project code to do the same at predict time
    with zipfile.ZipFile(ws.learner) as zf:
        pickled = zf.read(next(n for n in zf.namelist() if n.endswith("data.pkl")))
    modules = {arg.split(" ")[0] for op, arg, _ in pickletools.genops(pickled) if op.name == "GLOBAL"}
    assert "PIL.ImageOps" in modules
    assert not [m for m in modules if m.split(".")[0] in ("pipeline", "stages", "tests")], modules
    from fastai.learner import load_learner
    learn = load_learner(ws.learner)
    (x,) = learn.dls.test_dl([test / "ñandú__7.jpg"]).dataset[0]
    assert x.size == (12, 24)


def test_evaluate_counts_every_skip_and_names_the_missing_class(run):
    project, ws, cfg, log, _, test = run
    out = ws.stage_dir("evaluate") / "t ü"
    m = json.loads((out / "metrics.json").read_text())
    n_bad_names = int(UTF8_FS)
    assert (m["unmatched"], m["out_of_vocab"], m["unreadable"]) == (1, 1, 1 + n_bad_names), m
    assert m["scored"] == 6 + 1 and m["images"] == 6 + 1 + 3 + n_bad_names
    assert m["missing_classes"] == ["NA"]
    assert "t ü: no test images for 1 of the model's 3 classes (NA)" in log
    skipped = pd.read_csv(out / "skipped.csv", keep_default_na=False)
    reasons = dict(zip(skipped["file"], skipped["reason"]))
    assert reasons["README.png"] == "label regex did not match"
    assert reasons["zebra__0.png"] == "label not in the model's vocab"
    assert reasons["class a__9.jpg"].startswith("unreadable: OSError:") and "runcated" in reasons["class a__9.jpg"]
    if UTF8_FS:
        assert reasons["class a__\\xff.png"] == "unreadable: file name is not valid UTF-8: rename it"
    preds = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    assert set(preds["true"]) == {"class a", "ñandú"} and "ñandú__7.jpg" in set(preds["file"])
    tallies = pd.read_csv(out / "tallies.csv", keep_default_na=False)
    assert list(tallies["category"]) == ["class a", "ñandú"]


# ------------------------------------------------------------------------------------------- predict and the pickle check

def test_predict_skips_and_lists_unusable_images_as_evaluate_does(run, capsys):
    from pipeline import cli

    project, ws, cfg, log, train, _ = run
    assert cli.main(["predict", "--learner", str(ws.learner), str(train / "NA"), str(train / "class a"), "--csv"]) == 0
    out, err = capsys.readouterr()
    skipped = dict(line.removeprefix("skipped ").split(": ", 1) for line in err.splitlines() if line.startswith("skipped "))
    assert skipped[str(train / "NA" / "bomb.png")].startswith("too large: ")
    assert skipped[str(train / "class a" / "bad-exif.jpg")].startswith("bad EXIF data: SyntaxError")
    rows = out.splitlines()
    assert rows[0] == "file,label,confidence" and len(rows) > 20
    assert not {r.split(",")[0] for r in rows} & set(skipped)


def test_predict_sha256_and_batch_size_are_checked(run, capsys):
    from pipeline import cli

    project, ws, cfg, log, train, _ = run
    image = str(train / "NA" / "NA_2.png")
    assert cli.main(["predict", "--learner", str(ws.learner), image, "--sha256", "0" * 64]) == 2
    assert "does not match the expected sha256 (000000000000…): refusing to unpickle" in capsys.readouterr().err
    assert cli.main(["predict", "--learner", str(ws.learner), image, "--sha256", "5"]) == 2
    assert capsys.readouterr().err == "error: --sha256 '5' is not a sha256 (64 hex digits)\n"
    assert cli.main(["predict", "--learner", str(ws.learner), image, "--batch-size", "0"]) == 2
    assert capsys.readouterr().err == "error: --batch-size must be >= 1, got 0\n"
    good = json.loads(ws.model_card.read_text())["sha256"]
    assert cli.main(["predict", "--learner", str(ws.learner), image, "--sha256", good.upper()]) == 0
    assert capsys.readouterr().out.startswith(f"{image}\t")


def test_evaluate_checks_the_hash_train_recorded_not_the_card_beside_the_file(run):
    """A replaced .pkl with a card to match (a swapped pair) passes the card check; evaluate trusts only train's
    manifest."""
    from pipeline.core.workspace import sha256_file

    project, ws, cfg, log, train, _ = run
    pkl, card = ws.learner.read_bytes(), ws.model_card.read_text()
    try:
        ws.learner.write_bytes(pkl + b"\0")
        ws.model_card.write_text(json.dumps({**json.loads(card), "sha256": sha256_file(ws.learner)}))
        with pytest.raises(PipelineError, match=r"r.pkl sha256 .* does not match the expected sha256 .*refusing"):
            runner.run(cfg, ["evaluate"], force=True)
    finally:
        ws.learner.write_bytes(pkl)
        ws.model_card.write_text(card)
