"""The content store heals: a damaged file (a corrupt page, truncated, garbage) is moved aside with one warning and
rebuilt from what is asked for; a value whose bytes changed is recomputed and counted; a read-only store is one
line; two processes fill one store at once and every value stays right."""
from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline import config, runner
from pipeline.core import artifacts
from pipeline.core.workspace import Workspace, read_json
from pipeline.data import content_store
from pipeline.data.content_store import ContentStore
from tests.conftest import make_image_folder, tiny_config
from tests.helpers import compute
from tests.reliability.conftest import env

PAGE = 4096  # SQLite's default page size


def damage(path: Path, how: str) -> None:
    """Damage the store file `path` as a disk or a careless copy would."""
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(0)
    if how == "corrupt_page":  # 2 KB of garbage at the start of a page in the middle
        at = len(data) // PAGE // 2 * PAGE
        data[at:at + 2048] = rng.bytes(2048)
    elif how == "truncated":
        data = data[:len(data) // 3]
    elif how == "garbage":
        data = bytearray(rng.bytes(len(data)))
    path.write_bytes(bytes(data))


def flip_a_byte_of(path: Path, value: bytes) -> None:
    """Flip one bit inside the stored bytes `value`, where SQLite itself cannot notice."""
    data = bytearray(path.read_bytes())
    at = data.find(value)
    assert at >= 0 and data.find(value, at + 1) < 0
    data[at + len(value) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def images(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        (p := folder / f"{i}.bin").write_bytes(f"image {i}".encode() * 20)
        out.append(p)
    return out


def features(store: ContentStore, paths: list[Path]) -> tuple[list, int]:
    """What hands.extract does with a store: the stored rows, the rest computed and added; and how many were computed."""
    rows = store.get(paths)
    todo = [p for p, r in zip(paths, rows) if r is None]
    store.put(todo, [compute(p) for p in todo])
    done = iter(compute(p) for p in todo)
    return [r if r is not None else next(done) for r in rows], len(todo)


@pytest.mark.parametrize("how", ["corrupt_page", "truncated", "garbage"])
def test_a_damaged_store_is_moved_aside_with_one_warning_and_rebuilt(tmp_path, how):
    paths = images(tmp_path / "imgs", 300)
    clean = [compute(p) for p in paths]
    store_path = tmp_path / "data" / "features.sqlite"
    assert features(ContentStore(store_path, {"v": 1}, log=pytest.fail), paths) == (clean, 300)
    damage(store_path, how)

    said = []
    got, computed = features(ContentStore(store_path, {"v": 1}, log=said.append), paths)
    assert got == clean
    assert computed == 300                                        # what the damaged file held is computed again
    (line,) = said
    assert line.startswith(f"warning: the store {store_path} was damaged (") and "moved aside" in line
    (aside,) = store_path.parent.glob("features.sqlite.corrupt-*")
    assert aside.name in line
    assert features(ContentStore(store_path, {"v": 1}, log=pytest.fail), paths) == (clean, 0)  # rebuilt


@pytest.mark.parametrize("at", [0.2, 0.35, 0.5, 0.62, 0.8, 0.93])
def test_random_bytes_anywhere_in_a_store_are_misses_or_move_it_aside(tmp_path, at):
    """2 KB of random bytes written anywhere in the file (not only at a page's start, where SQLite always sees the
    damage: inside a page's cells it reads the garbage back as a key, a value or a checksum that does not decode):
    the run gets the clean features, each warning is one line, and the next run gets them too."""
    paths = images(tmp_path / "imgs", 300)
    clean = [compute(p) for p in paths]
    store_path = tmp_path / "data" / "features.sqlite"
    assert features(ContentStore(store_path, {"v": 1}, log=pytest.fail), paths) == (clean, 300)
    data = bytearray(store_path.read_bytes())
    offset = int(len(data) * at) + 1000  # within a page, never at its start
    data[offset:offset + 2048] = np.random.default_rng(int(at * 100)).bytes(2048)
    store_path.write_bytes(bytes(data))

    said = []
    got, computed = features(ContentStore(store_path, {"v": 1}, log=said.append), paths)
    assert got == clean and 0 < computed
    assert len(said) == len(set(said)) <= 2 and all(line.startswith("warning: ") for line in said), said
    assert features(ContentStore(store_path, {"v": 1}, log=lambda m: None), paths)[0] == clean


@pytest.mark.parametrize("table", ["vals (key TEXT PRIMARY KEY, value BLOB)", "vals (key INTEGER)"])
def test_a_store_whose_table_is_not_this_versions_is_moved_aside_and_rebuilt(tmp_path, table):
    """A valid SQLite file whose `vals` lacks a column this version reads was `cannot read the store …: no such
    column: sha256` on every run, for ever, each recomputing everything (probed for issue 36): it is damage too."""
    paths = images(tmp_path / "imgs", 5)
    clean = [compute(p) for p in paths]
    store_path = tmp_path / "data" / content_store.DECODED
    store_path.parent.mkdir()
    with contextlib.closing(sqlite3.connect(store_path)) as db, db:
        db.execute(f"CREATE TABLE {table}")
    said = []
    assert features(ContentStore(store_path, {}, log=said.append), paths) == (clean, 5)
    (line,) = said
    assert line.startswith(f"warning: the store {store_path} was damaged (malformed store: its table vals has the "
                           "columns ") and "moved aside" in line, line
    assert features(ContentStore(store_path, {}, log=pytest.fail), paths) == (clean, 0)


def test_a_flipped_byte_inside_a_stored_value_is_recomputed_and_counted(tmp_path):
    paths = images(tmp_path / "imgs", 50)
    clean = [compute(p) for p in paths]
    store_path = tmp_path / "store.sqlite"
    features(ContentStore(store_path, {}), paths)
    flip_a_byte_of(store_path, json.dumps(clean[17]).encode())

    said = []
    store = ContentStore(store_path, {}, log=said.append)
    got, computed = features(store, paths)
    assert got == clean and computed == 1 and store.damaged == 1
    assert said == [f"warning: 1 value(s) in the store {store_path} did not match their checksum: computed again"]
    assert features(ContentStore(store_path, {}, log=pytest.fail), paths) == (clean, 0)  # stored anew


def test_a_store_of_an_earlier_version_keeps_its_values(tmp_path):
    """The table before checksums (`rows`: key, row) is taken over, each value with its checksum from now on."""
    paths = images(tmp_path / "imgs", 3)
    store_path = tmp_path / "store.sqlite"
    store = ContentStore(store_path, {})
    keys = [store._key(str(p)) for p in paths]
    store_path.unlink()
    with contextlib.closing(sqlite3.connect(store_path)) as db, db:
        db.execute("CREATE TABLE rows (key TEXT PRIMARY KEY, row BLOB NOT NULL)")
        db.executemany("INSERT INTO rows VALUES (?, ?)", [(k, json.dumps(compute(p))) for k, p in zip(keys, paths)])
    assert features(ContentStore(store_path, {}, log=pytest.fail), paths) == ([compute(p) for p in paths], 0)


def forge(store: ContentStore, keys: list[str], values: list) -> None:
    """Store `values` under the store keys `keys`, each with the checksum the store itself gives it: values that are
    decodable and pass the checksum, as a bug or another tool could leave them."""
    fake = [f"/forged/{i}" for i in range(len(keys))]
    store._keys.update(zip(fake, keys))
    store.put(fake, values)


def stored_keys(store_path: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(store_path)) as db:
        return [k for (k,) in db.execute("SELECT key FROM vals ORDER BY key")]


def test_detections_of_the_wrong_shape_are_recomputed_and_counted(tmp_path):
    """Every landmarks.sqlite value `[1, 2, 3]`, each with its matching checksum, was pandas' `67 columns passed,
    passed data had 3` (issue 36): a value of the detection store of the wrong shape or type is a miss, counted,
    said once, recomputed."""
    pytest.importorskip("mediapipe", reason="the [hands] extra is not installed")
    from PIL import Image

    from pipeline.data import hands

    paths = []
    for i in range(3):
        Image.new("RGB", (64, 64), (100 + i, 100, 100)).save(p := tmp_path / f"gray{i}.png")
        paths.append(p)
    folder = tmp_path / "data"
    clean = hands.extract(paths, log=lambda m: None, store=hands.store(folder, log=pytest.fail))
    store = hands.store(folder, log=pytest.fail)
    keys = stored_keys(store.path)
    forge(store, keys, [[1, 2, 3]] * 3)

    said = []
    store = hands.store(folder, log=said.append)
    got = hands.extract(paths, log=lambda m: None, store=store)
    assert got.equals(clean) and got.attrs["extracted"] == 3 and store.misshapen == 3
    assert said == [f"warning: 3 value(s) in the store {store.path} are not what it holds (a wrong shape or type): "
                    "computed again"]
    again = hands.extract(paths, log=lambda m: None, store=hands.store(folder, log=pytest.fail))
    assert again.equals(clean) and again.attrs["extracted"] == 0                      # stored anew


def every_store(which: str):
    """(store factory over a folder, a value it holds, one of the wrong shape or type) for the store `which`."""
    from PIL import Image

    from pipeline.data import hands
    from pipeline.kinds.hand_crop import data as hand_crops
    from pipeline.kinds.hand_fused import embeddings

    def png(side):
        return hand_crops.png(Image.new("RGB", (side, side)))

    row, detection = [False, "", 0.0] + [0.0] * 64, [False, "", 0.0] + [0.0] * 126
    return {"detections": (hands.store, detection, row),
            "crops": (lambda f: hand_crops.crop_store(f, 32), png(32), png(16)),
            "decoded": (lambda f: content_store.decoded(f, {}, shape=(3, 8, 8)), np.ones((3, 8, 8), np.uint8),
                        np.ones((3, 8, 9), np.uint8)),
            "embeddings": (lambda f: embeddings.store(f, {}), np.ones(5, np.float32), np.ones((2, 5)))}[which]


@pytest.mark.parametrize("which", ["detections", "crops", "decoded", "embeddings"])
def test_every_store_checks_the_shape_of_what_it_reads(tmp_path, which):
    pytest.importorskip("mediapipe", reason="the [hands] extra is not installed")
    make, good, bad = every_store(which)
    paths = images(tmp_path / "imgs", 2)
    make(tmp_path).put(paths, [good, bad])
    store = make(tmp_path)
    got = store.get(paths)
    assert got[1] is None and store.misshapen == 1
    assert (got[0] == good).all() if isinstance(good, np.ndarray) else got[0] == good


@pytest.mark.parametrize("bad", [[1, 2, 3], "a row", {"row": 1}, None, [True, "Left", 0.9] + [0.0] * 64,
                                 ["yes", "Left", 0.9] + [0.0] * 126, [True, "Left", 0.9] + ["0"] * 126])
def test_a_detection_of_another_shape_or_type_is_not_one(bad):
    from pipeline.data import hands

    assert hands.is_detection([True, "Left", 0.9] + [0.0] * 126) and not hands.is_detection(bad)


@pytest.mark.slow
def test_a_datablock_rerun_over_decoded_values_of_the_wrong_shape_gives_the_same_cache(tmp_path, capsys):
    """The decoded-image store: arrays of another size or type (with matching checksums) are computed again."""
    src = make_image_folder(tmp_path / "src", classes=("A", "B", "C"), per_class=4, size=20)
    tiny_config(tmp_path, {"download.source": f"path:{src}", "download.subdir": "", "datablock.cache": True,
                           "train.image_size": 24})
    cfg = config.load(None, cwd=tmp_path)
    ws = Workspace.from_config(cfg)
    runner.run(cfg, ["download", "datablock"])
    cache = ws.artifact("datablock", artifacts.CACHE)
    clean = cache.read_bytes()
    store_path = ws.data / content_store.DECODED
    keys = stored_keys(store_path)
    wrong = [np.zeros((3, 5, 5), np.uint8), np.zeros((3, 24, 24), np.float32), np.zeros((1, 24, 24), np.uint8)]
    forge(content_store.decoded(ws.data, {}), keys, [wrong[i % 3] for i in range(len(keys))])
    capsys.readouterr()

    assert runner.run(cfg, ["datablock"], force=True) == {"datablock": "ran"}
    warnings = [line for line in capsys.readouterr().out.splitlines() if "warning:" in line]
    assert len(warnings) == 1 and warnings[0].endswith(
        f"warning: {len(keys)} value(s) in the store {store_path} are not what it holds (a wrong shape or type): "
        "computed again"), warnings
    assert cache.read_bytes() == clean
    assert read_json(ws.artifact("datablock", artifacts.CACHE_META))["from_store"] == 0


def test_values_shuffled_among_keys_are_recomputed_and_counted(tmp_path):
    """A value's checksum covers its key too (issue 36): values moved to other keys, each with its own checksum,
    went unnoticed."""
    paths = images(tmp_path / "imgs", 6)
    clean = [compute(p) for p in paths]
    store_path = tmp_path / "store.sqlite"
    features(ContentStore(store_path, {}), paths)
    with contextlib.closing(sqlite3.connect(store_path)) as db, db:
        rows = db.execute("SELECT key, value, sha256 FROM vals ORDER BY key").fetchall()
        shuffled = [(k, v, s) for (k, _, _), (_, v, s) in zip(rows, rows[1:] + rows[:1])]
        db.executemany("UPDATE vals SET value = ?, sha256 = ? WHERE key = ?", [(v, s, k) for k, v, s in shuffled])

    said = []
    store = ContentStore(store_path, {}, log=said.append)
    got, computed = features(store, paths)
    assert got == clean and computed == 6 and store.damaged == 6
    assert said == [f"warning: 6 value(s) in the store {store_path} did not match their checksum: computed again"]
    assert features(ContentStore(store_path, {}, log=pytest.fail), paths) == (clean, 0)


def test_values_checked_by_an_earlier_version_are_recomputed_once(tmp_path):
    """A store whose checksums cover the value alone (before issue 36): each value is computed again once, said
    once; then it is kept under the new checksum."""
    paths = images(tmp_path / "imgs", 4)
    clean = [compute(p) for p in paths]
    store_path = tmp_path / "store.sqlite"
    features(ContentStore(store_path, {}), paths)
    with contextlib.closing(sqlite3.connect(store_path)) as db, db:
        for k, v in db.execute("SELECT key, value FROM vals").fetchall():
            db.execute("UPDATE vals SET sha256 = ? WHERE key = ?", (hashlib.sha256(v).hexdigest(), k))

    said = []
    store = ContentStore(store_path, {}, log=said.append)
    assert features(store, paths) == (clean, 4) and store.outdated == 4 and store.damaged == 0
    assert said == [f"warning: 4 value(s) in the store {store_path} carry an earlier version's checksum (of the "
                    "value alone, not its key): computed again, once"]
    assert features(ContentStore(store_path, {}, log=pytest.fail), paths) == (clean, 0)


def read_only(monkeypatch) -> None:
    """Every store opens read-only (SQLite's `mode=ro`), as on a read-only disk: a test running as root too."""
    real = sqlite3.connect

    def connect(path, *args, **kwargs):
        return real(f"file:{path}?mode=ro", *args, uri=True, **kwargs)

    monkeypatch.setattr(content_store.sqlite3, "connect", connect)


def test_a_read_only_store_is_one_line_naming_it(tmp_path, monkeypatch, capsys):
    """datablock's cache puts into the decoded-image store once per batch of 256: a store that cannot be written
    says so once, not once per batch, and the run goes on with the same cache."""
    src = make_image_folder(tmp_path / "src", classes=("A", "B", "C"), per_class=100, size=12)
    tiny_config(tmp_path, {"download.source": f"path:{src}", "download.subdir": "", "datablock.cache": True,
                           "datablock.verify": False, "train.image_size": 8})
    cfg = config.load(None, cwd=tmp_path)
    ws = Workspace.from_config(cfg)
    runner.run(cfg, ["download", "datablock"])
    clean = ws.artifact("datablock", artifacts.CACHE).read_bytes()
    store_path = ws.data / content_store.DECODED
    store_path.unlink()
    ContentStore(store_path, {})  # an empty store, then the disk turns read-only
    read_only(monkeypatch)
    capsys.readouterr()

    assert runner.run(cfg, ["datablock"], force=True) == {"datablock": "ran"}
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if str(store_path) in line and "cannot" in line]
    assert len(lines) == 1, out
    assert "cannot write the store" in lines[0] and "readonly" in lines[0]
    assert ws.artifact("datablock", artifacts.CACHE).read_bytes() == clean
    assert read_json(ws.artifact("datablock", artifacts.CACHE_META))["from_store"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("how", ["corrupt_page", "garbage", "flipped_byte"])
def test_a_datablock_rerun_over_a_damaged_decoded_store_warns_once_and_gives_the_same_cache(tmp_path, capsys, how):
    """End to end: the decoded-image store (the keypoint store's twin: same class, no MediaPipe needed)."""
    src = make_image_folder(tmp_path / "src", classes=("A", "B", "C"), per_class=12, size=20)
    tiny_config(tmp_path, {"download.source": f"path:{src}", "download.subdir": "", "datablock.cache": True,
                           "train.image_size": 24})
    cfg = config.load(None, cwd=tmp_path)
    ws = Workspace.from_config(cfg)
    runner.run(cfg, ["download", "datablock"])
    cache = ws.artifact("datablock", artifacts.CACHE)
    clean = cache.read_bytes()
    store_path = ws.data / content_store.DECODED
    if how == "flipped_byte":
        flip_a_byte_of(store_path, np.load(cache)[5].tobytes())
    else:
        damage(store_path, how)
    capsys.readouterr()

    assert runner.run(cfg, ["datablock"], force=True) == {"datablock": "ran"}
    out = capsys.readouterr().out
    warnings = [line for line in out.splitlines() if "warning:" in line]
    assert len(warnings) == 1 and str(store_path) in warnings[0], out
    assert cache.read_bytes() == clean
    meta = read_json(ws.artifact("datablock", artifacts.CACHE_META))
    assert meta["from_store"] == (meta["rows"] - 1 if how == "flipped_byte" else 0)
    assert runner.run(cfg, ["datablock"], force=True) == {"datablock": "ran"}   # the store was rebuilt
    assert read_json(ws.artifact("datablock", artifacts.CACHE_META))["from_store"] == meta["rows"]
    assert "warning:" not in capsys.readouterr().out


FILLER = """
import json, sys
from pathlib import Path
from pipeline.data.content_store import ContentStore
from tests.helpers import compute
paths = [Path(p) for p in json.loads(sys.argv[1])]
said = []
store = ContentStore(Path(sys.argv[2]), {}, log=said.append)
for i in range(0, len(paths), 5):
    chunk = paths[i:i + 5]
    got = store.get(chunk)
    assert all(g is None or g == compute(p) for g, p in zip(got, chunk)), "a wrong value"
    store.put(chunk, [compute(p) for p in chunk])
assert not said, said
"""


def test_two_processes_fill_one_store_at_once(tmp_path):
    paths = images(tmp_path / "imgs", 400)
    store_path = tmp_path / "store.sqlite"
    order = [json.dumps([str(p) for p in paths]), json.dumps([str(p) for p in reversed(paths)])]
    procs = [subprocess.Popen([sys.executable, "-c", FILLER, o, str(store_path)], env=env(), stderr=subprocess.PIPE,
                              text=True) for o in order]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()
    assert features(ContentStore(store_path, {}, log=pytest.fail), paths) == ([compute(p) for p in paths], 0)
