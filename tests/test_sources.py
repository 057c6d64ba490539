"""Tests for pipeline.data.sources: parsing, safe extraction, caching, url/kaggle/sklearn sources, image discovery."""
from __future__ import annotations

import io
import json
import os
import re
import tarfile
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from pipeline.core.errors import PipelineError
from pipeline.data import fetchers, sources
from pipeline.data.sources import find_image_root, list_images, materialise, parse_source, safe_extract
from tests.conftest import payload_server

try:
    from tests.kaggle_standin import KaggleStandin
except ImportError:
    from kaggle_standin import KaggleStandin

SHARED = Path(os.environ.get("SIGNPIPE_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))


def png_bytes(value: int = 128) -> bytes:
    """A tiny PNG whose pixels are all `value`."""
    buf = io.BytesIO()
    Image.new("L", (4, 4), value).save(buf, format="PNG")
    return buf.getvalue()


def class_zip(classes=("A", "B"), per_class=3, top="signs") -> bytes:
    """A zip of `top`/<class>/<class><i>.png images plus junk entries."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for c in classes:
            for i in range(per_class):
                zf.writestr(f"{top}/{c}/{c}{i}.png", png_bytes(i))
        zf.writestr("__MACOSX/._junk.png", b"x")
        zf.writestr(f"{top}/.DS_Store", b"x")
    return buf.getvalue()


def tar_with(tmp_path: Path, name: str, *members: tuple[tarfile.TarInfo, bytes | None]) -> Path:
    """Write a tar.gz holding `members` and return its path."""
    path = tmp_path / name
    with tarfile.open(path, "w:gz") as tf:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def tar_info(name: str, kind=tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


@pytest.fixture
def no_proxy(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


# ---------------------------------------------------------------------------------------- parse_source

@pytest.mark.parametrize("source,expected", [
    ("kaggle:grassknoted/asl-alphabet", ("kaggle", "grassknoted/asl-alphabet")),
    ("path:/data/x.tar.gz", ("path", "/data/x.tar.gz")),
    ("url:https://example.org/d/set.TGZ", ("url", "https://example.org/d/set.TGZ")),
    ("url:http://127.0.0.1:8000/x.zip?token=1", ("url", "http://127.0.0.1:8000/x.zip?token=1")),
    ("sklearn:digits", ("sklearn", "digits")),
])
def test_parse_source_accepts_the_four_forms(source, expected):
    assert parse_source(source) == expected


@pytest.mark.parametrize("source", ["grassknoted/asl-alphabet", "kaggle:noslash", "kaggle:a/b/c", "path:",
                                    "url:ftp://h/x.zip", "url:https://h/x.rar", "sklearn:iris", "s3:b/k"])
def test_parse_source_rejects_bad_forms_listing_all(source):
    with pytest.raises(PipelineError) as err:
        parse_source(source)
    assert all(form in str(err.value) for form in ("kaggle:OWNER/SLUG", "path:", "url:", "sklearn:digits"))
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------------------------------- safe_extract

def test_safe_extract_zip_and_tar(tmp_path):
    archive = tmp_path / "ok.zip"
    archive.write_bytes(class_zip())
    safe_extract(archive, tmp_path / "z")
    assert (tmp_path / "z/signs/A/A0.png").read_bytes() == png_bytes(0)
    tgz = tar_with(tmp_path, "ok.tar.gz", (tar_info("d", tarfile.DIRTYPE), None), (tar_info("d/f.png"), b"abc"))
    safe_extract(tgz, tmp_path / "t")
    assert (tmp_path / "t/d/f.png").read_bytes() == b"abc"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.tar.gz", "ok.zip", "t", "z"]  # no temp dirs left


@pytest.mark.parametrize("entry", ["../evil", "a/../../evil", "/tmp/evil_abs", "C:/evil", "..\\evil"])
def test_safe_extract_refuses_escaping_zip_entries(tmp_path, entry):
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("fine.txt", b"ok")
        zf.writestr(zipfile.ZipInfo(entry), b"evil")
    with pytest.raises(PipelineError, match=re.escape(repr(entry))):
        safe_extract(archive, tmp_path / "out" / "dest")
    assert not (tmp_path / "out" / "dest").exists() and not any((tmp_path / "out").iterdir())
    assert not (tmp_path / "evil").exists() and not Path("/tmp/evil_abs").exists()


@pytest.mark.parametrize("info,what", [
    (tar_info("../evil"), "escapes"),
    (tar_info("/tmp/evil_abs_tar"), "escapes"),
    (tar_info("passwd", tarfile.SYMTYPE, "/etc/passwd"), "symlink"),
    (tar_info("hl", tarfile.LNKTYPE, "../../outside"), "hardlink"),
    (tar_info("dev", tarfile.CHRTYPE), "special"),
])
def test_safe_extract_refuses_bad_tar_members(tmp_path, info, what):
    data = b"evil" if info.type == tarfile.REGTYPE else None
    archive = tar_with(tmp_path, "bad.tar.gz", (tar_info("fine.txt"), b"ok"), (info, data))
    with pytest.raises(PipelineError, match=f"{re.escape(repr(info.name))}.*{what}"):
        safe_extract(archive, tmp_path / "out" / "dest")
    assert not any((tmp_path / "out").iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tar.gz", "out"]
    assert not Path("/tmp/evil_abs_tar").exists()


@pytest.mark.skipif(not hasattr(tarfile, "data_filter"), reason="tarfile's data filter: Python 3.12, 3.11.4, 3.10.12 on")
def test_safe_extract_asks_tarfiles_data_filter_too(tmp_path, monkeypatch):
    """Every tar member the project's own checks pass also goes through tarfile's "data" filter, with the
    destination. No real member reaches a refusal of it today (every link, device and escaping name is refused
    before it, and the writer applies no modes or owners), so the filter's verdict on one member is a stand-in."""
    seen, real = [], tarfile.data_filter

    def data_filter(member, dest):
        seen.append((member.name, dest))
        if member.name == "odd.png":
            raise tarfile.SpecialFileError(member)
        return real(member, dest)

    monkeypatch.setattr(tarfile, "data_filter", data_filter)
    fine = tar_with(tmp_path, "fine.tar.gz", (tar_info("d", tarfile.DIRTYPE), None), (tar_info("d/f.png"), b"abc"))
    safe_extract(fine, tmp_path / "t")
    assert seen == [("d", str(tmp_path / "t")), ("d/f.png", str(tmp_path / "t"))]
    odd = tar_with(tmp_path, "odd.tar.gz", (tar_info("fine.txt"), b"ok"), (tar_info("odd.png"), b"x"))
    with pytest.raises(PipelineError, match=r"^refusing to extract odd.tar.gz: entry 'odd.png' is a member tarfile's "
                                            r"data filter refuses \(SpecialFileError\)$"):
        safe_extract(odd, tmp_path / "out" / "dest")
    assert not any((tmp_path / "out").iterdir())


def test_safe_extract_refuses_zip_symlink(tmp_path):
    archive = tmp_path / "link.zip"
    info = zipfile.ZipInfo("link")
    info.external_attr = (0o120777 << 16)
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(PipelineError, match="'link' is a symlink"):
        safe_extract(archive, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_safe_extract_refuses_zip_bomb(tmp_path):
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.bin", bytes(50 * 2**20))
    assert archive.stat().st_size < 2**20
    with pytest.raises(PipelineError, match="bomb.zip.*zip bomb"):
        safe_extract(archive, tmp_path / "dest", max_ratio=100)
    with pytest.raises(PipelineError, match="bomb.zip"):
        safe_extract(archive, tmp_path / "dest", max_ratio=1e9, max_total=2**20)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bomb.zip"]


def test_safe_extract_refuses_non_archive_and_nonempty_dest(tmp_path):
    (tmp_path / "x.zip").write_bytes(b"not a zip")
    with pytest.raises(PipelineError, match="not a zip or tar"):
        safe_extract(tmp_path / "x.zip", tmp_path / "d")
    (tmp_path / "ok.zip").write_bytes(class_zip())
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep").write_text("k")
    with pytest.raises(PipelineError, match="not empty"):
        safe_extract(tmp_path / "ok.zip", tmp_path / "full")


# ------------------------------------------------------------------------------- find_image_root / list

def write_png(path: Path, value: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(value))
    return path


def test_find_image_root_descends_grassknoted_nesting(tmp_path):
    for c in "AB":
        write_png(tmp_path / f"asl_alphabet_train/asl_alphabet_train/{c}/{c}1.jpg")
    (tmp_path / "__MACOSX").mkdir()
    (tmp_path / ".DS_Store").write_text("junk")
    assert find_image_root(tmp_path) == tmp_path / "asl_alphabet_train/asl_alphabet_train"
    write_png(tmp_path / "asl_alphabet_test/asl_alphabet_test/A_test.jpg")
    with pytest.raises(PipelineError, match="asl_alphabet_test, asl_alphabet_train.*subdir"):
        find_image_root(tmp_path)
    assert find_image_root(tmp_path, "asl_alphabet_test") == tmp_path / "asl_alphabet_test/asl_alphabet_test"
    assert find_image_root(tmp_path, "asl_alphabet_train/asl_alphabet_train/A") == \
        tmp_path / "asl_alphabet_train/asl_alphabet_train/A"
    with pytest.raises(PipelineError, match="nope"):
        find_image_root(tmp_path, "nope")


def test_list_images_ignores_junk_and_dedupes_nested_copy(tmp_path):
    root = tmp_path / "asl-alphabet-test"
    for name in ("A/A0001_test.jpg", "B/B0001_test.JPG", "del/del0001_test.png"):
        write_png(root / name)
        write_png(root / "asl-alphabet-test" / name)  # the duplicate copy in the Kaggle download
    write_png(root / "asl-alphabet-test/A/A0002_test.jpg")  # only in the inner copy: kept
    write_png(root / "asl-alphabet-test/B/B0001_test.JPG", value=9).write_bytes(b"different size")  # differs: kept
    for junk in ("A/Thumbs.db", "A/notes.txt", ".DS_Store", "A/.hidden.jpg", "__MACOSX/A/._A0001_test.jpg",
                 ".cache/x.png"):
        write_png(root / junk)
    assert find_image_root(tmp_path) == root
    assert [p.relative_to(root).as_posix() for p in list_images(root)] == [
        "A/A0001_test.jpg", "B/B0001_test.JPG", "asl-alphabet-test/A/A0002_test.jpg",
        "asl-alphabet-test/B/B0001_test.JPG", "del/del0001_test.png"]


@pytest.mark.shared_data
def test_real_grassknoted_sample_and_test_folder():
    train, test = SHARED / "asl_alphabet_train_200", SHARED / "asl_alphabet_test"
    if not train.is_dir() or not test.is_dir():
        pytest.skip(f"shared data not found at {SHARED}")
    assert find_image_root(SHARED, "asl_alphabet_train_200") == train
    assert len(list_images(train)) == 5800
    assert len(list_images(find_image_root(test))) == 28


# ---------------------------------------------------------------------------------------- path / cache

def test_path_sources_dir_as_is_and_archive_extracted_once(tmp_path):
    data = tmp_path / "data"
    write_png(data / "A/a.png")
    assert materialise(f"path:{data}", tmp_path / "cache") == data
    archive = tmp_path / "signs.zip"
    archive.write_bytes(class_zip())
    out = materialise(f"path:{archive}", tmp_path / "cache", log=lambda m: None)
    assert out.parent == tmp_path / "cache" and (out / ".complete").is_file()
    assert len(list_images(find_image_root(out))) == 6
    archive.write_bytes(b"corrupt now")  # proves the second call does not re-extract
    assert materialise(f"path:{archive}", tmp_path / "cache", log=lambda m: None) == out
    with pytest.raises(PipelineError, match="not found"):
        materialise(f"path:{tmp_path / 'missing'}", tmp_path / "cache")


def test_partial_cache_without_marker_is_redone(tmp_path):
    archive = tmp_path / "signs.tgz"
    with tarfile.open(archive, "w:gz") as tf:
        info = tar_info("A/a.png")
        info.size = len(png_bytes())
        tf.addfile(info, io.BytesIO(png_bytes()))
    out = materialise(f"path:{archive}", tmp_path / "cache", log=lambda m: None)
    (out / ".complete").unlink()
    (out / "leftover.png").write_bytes(png_bytes())
    assert materialise(f"path:{archive}", tmp_path / "cache", log=lambda m: None) == out
    assert [p.name for p in list_images(out)] == ["a.png"]


# ---------------------------------------------------------------------------------------- sklearn

def test_sklearn_digits_layout_split_and_cache(tmp_path, monkeypatch):
    logs = []
    out = materialise("sklearn:digits", tmp_path / "cache", log=logs.append)
    train, test = list_images(out / "train"), list_images(out / "test")
    assert len(train) + len(test) == 1797 and 0.80 < len(train) / 1797 < 0.86
    assert all(re.match(r"^(\d)_\d+\.png$", p.name) for p in test)
    assert all(p.parent == out / "test" for p in test)
    assert all(p.parent.name == p.name.split("_")[0] for p in train)
    assert {p.parent.name for p in train} == {str(d) for d in range(10)}
    img = Image.open(train[0])
    assert img.size == (32, 32) and img.mode == "L" and img.getextrema()[1] > 200
    marker = out / ".complete"
    mtime = marker.stat().st_mtime_ns

    import sklearn.datasets
    monkeypatch.setattr(sklearn.datasets, "load_digits", lambda *a, **k: pytest.fail("not cached"))
    assert materialise("sklearn:digits", tmp_path / "cache", log=logs.append) == out
    assert marker.stat().st_mtime_ns == mtime and "cached" in logs[-1]


# ---------------------------------------------------------------------------------------- url

@pytest.fixture
def http_zip_server(no_proxy):
    """Serve /x.zip (a class-folder zip) on 127.0.0.1; yields (base_url, request_paths)."""
    payload, seen = class_zip(per_class=2), []

    def status(request):
        seen.append(request.path)
        return 200 if request.path == "/x.zip" else 404

    with payload_server(payload, status) as base:
        yield base, seen


def test_url_source_downloads_extracts_and_caches(tmp_path, http_zip_server, capsys):
    base, seen = http_zip_server
    out = materialise(f"url:{base}/x.zip", tmp_path / "cache", log=lambda m: None)
    images = list_images(find_image_root(out))
    assert [p.name for p in images] == ["A0.png", "A1.png", "B0.png", "B1.png"]
    assert "x.zip" in capsys.readouterr().err  # progress line
    assert seen == ["/x.zip"]
    assert materialise(f"url:{base}/x.zip", tmp_path / "cache", log=lambda m: None) == out
    assert seen == ["/x.zip"]  # no second request
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [f".{out.name}.lock", out.name]  # no temps


def test_url_source_404_is_a_pipeline_error(tmp_path, http_zip_server):
    base, _ = http_zip_server
    with pytest.raises(PipelineError, match="404"):
        materialise(f"url:{base}/missing.zip", tmp_path / "cache", log=lambda m: None)
    assert not any(p.name.endswith(".complete") for p in (tmp_path / "cache").rglob("*"))


def test_progress_prints_about_ten_lines_when_not_a_tty():
    stream = io.StringIO()
    update = fetchers._progress("f.zip", 1000, stream)
    for _ in range(100):
        update(10)
    update(0, final=True)
    lines = stream.getvalue().splitlines()
    assert 10 <= len(lines) <= 11 and lines[-1].endswith("100%")


# ---------------------------------------------------------------------------------------- kaggle

USER, KEY, TOKEN = "signer", "s3cr3t-kaggle-key-0123456789", "KGAT_s3cr3t-access-token-9876"


@pytest.fixture
def kaggle_standin(tmp_path, monkeypatch, no_proxy):
    """A local Kaggle stand-in; the real client is pointed at it and sees only env credentials."""
    kaggle_env = pytest.importorskip("kagglesdk.kaggle_env")
    home = tmp_path / "home"
    (home / "kaggle_cfg").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))  # no real ~/.kaggle tokens
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(home / "kaggle_cfg"))
    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "TEST")
    monkeypatch.setenv("KAGGLE_USERNAME", USER)
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    monkeypatch.delenv("KAGGLE_API_TOKEN", raising=False)
    with KaggleStandin({"signer/tiny-signs": class_zip(top="tiny")}, USER, KEY, token=TOKEN) as standin:
        # KaggleApi (kaggle 2.2.4) builds its client with env PROD unless --local/--staging/--admin is in its
        # class-level args, so KAGGLE_API_ENVIRONMENT=TEST alone would still reach api.kaggle.com:
        # point every environment's base URL at the stand-in instead.
        for env in kaggle_env.KaggleEnv:
            monkeypatch.setitem(kaggle_env._env_to_endpoint, env, standin.url)
        yield standin


def test_kaggle_download_extract_and_cache(tmp_path, kaggle_standin, capsys):
    logs = []
    out = materialise("kaggle:signer/tiny-signs", tmp_path / "cache", log=logs.append)
    assert [p.name for p in list_images(find_image_root(out))] == ["A0.png", "A1.png", "A2.png",
                                                                   "B0.png", "B1.png", "B2.png"]
    assert kaggle_standin.requests == [("POST", "/v1/datasets.DatasetApiService/DownloadDataset"),
                                       ("GET", "/blobs/signer/tiny-signs.zip")]
    assert not list(out.rglob("*.zip"))  # the archive was ours to extract, not left behind
    materialise("kaggle:signer/tiny-signs", tmp_path / "cache", log=logs.append)
    assert len(kaggle_standin.requests) == 2  # cached: no request
    captured = capsys.readouterr()
    assert KEY not in "\n".join(logs) + captured.out + captured.err


def test_kaggle_unknown_slug(tmp_path, kaggle_standin):
    with pytest.raises(PipelineError, match="signer/no-such-set.*404") as err:
        materialise("kaggle:signer/no-such-set", tmp_path / "cache", log=lambda m: None)
    assert KEY not in str(err.value) and "\n" not in str(err.value)


def test_kaggle_bad_key(tmp_path, kaggle_standin, monkeypatch, capsys):
    monkeypatch.setenv("KAGGLE_KEY", "wrong-" + KEY)
    logs = []
    with pytest.raises(PipelineError, match="signer/tiny-signs.*401.*credentials") as err:
        materialise("kaggle:signer/tiny-signs", tmp_path / "cache", log=logs.append)
    assert kaggle_standin.requests == [("POST", "/v1/datasets.DatasetApiService/DownloadDataset")]
    captured = capsys.readouterr()
    assert KEY not in str(err.value) + "\n".join(logs) + captured.out + captured.err


def test_kaggle_missing_credentials(tmp_path, kaggle_standin, monkeypatch):
    monkeypatch.delenv("KAGGLE_USERNAME")  # a planted key alone is not enough
    with pytest.raises(PipelineError) as err:
        materialise("kaggle:signer/tiny-signs", tmp_path / "cache", log=lambda m: None)
    msg = str(err.value)
    assert all(s in msg for s in ("KAGGLE_USERNAME", "KAGGLE_KEY", "kaggle.json", "python -m pipeline run"))
    assert KEY not in msg and "\n" not in msg
    assert kaggle_standin.requests == []


def test_kaggle_json_credentials_are_used(tmp_path, kaggle_standin, monkeypatch):
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    cfg = Path(os.environ["KAGGLE_CONFIG_DIR"]) / "kaggle.json"
    cfg.write_text(f'{{"username": "{USER}", "key": "{KEY}"}}')
    cfg.chmod(0o600)
    out = materialise("kaggle:signer/tiny-signs", tmp_path / "cache", log=lambda m: None)
    assert len(list_images(out)) == 6


def test_kaggle_access_token_file_is_found_by_the_client_and_redacted(tmp_path, kaggle_standin, monkeypatch):
    """A token in ~/.kaggle/access_token and no key: the client finds and checks it itself, and a client error
    quoting it is redacted (the project's own search for credentials redacted only KAGGLE_API_TOKEN's value)."""
    from kaggle.api.kaggle_api_extended import KaggleApi

    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    token_file = Path(os.environ["HOME"]) / ".kaggle" / "access_token"
    token_file.parent.mkdir()
    token_file.write_text(TOKEN)
    out = materialise("kaggle:signer/tiny-signs", tmp_path / "cache", log=lambda m: None)
    assert len(list_images(out)) == 6 and ("GET", "/blobs/signer/tiny-signs.zip") in kaggle_standin.requests

    def leaky(self, *a, **k):
        raise RuntimeError(f"refused: Authorization: Bearer {TOKEN}")

    monkeypatch.setattr(KaggleApi, "dataset_download_files", leaky)
    with pytest.raises(PipelineError, match=r"failed: RuntimeError: refused: Authorization: Bearer \*\*\*$"):
        materialise("kaggle:signer/other-signs", tmp_path / "cache", log=lambda m: None)


def test_list_images_keeps_path_order_with_awkward_names(tmp_path):
    """The string-based lister sorts as `Path` does (component by component), so splits stay as they were."""
    for name in ("a b/x.png", "a/b.png", "a-c/y.png", "a/a b.png", "B/z.png", "a.b/q.png"):
        write_png(tmp_path / name)
    got = list_images(tmp_path)
    assert got == sorted(tmp_path.glob("*/*.png")) and len(got) == 6


# ------------------------------------------------------------------------------------------- symlinks and concurrency

def test_symlinks_inside_a_dataset_are_not_followed_but_counted(tmp_path, capsys):
    """The one rule: inside a dataset folder links are skipped, counted and named (a dangling one no longer stops
    download or status, a linked class folder is not "empty", a link to a file outside the root is not read)."""
    from pipeline import runner
    from tests.conftest import make_image_folder, tiny_config

    data = make_image_folder(tmp_path / "imgs", classes=("A", "B"), per_class=4)
    outside = write_png(tmp_path / "secret" / "x.png")
    (data / "A" / "dangling.png").symlink_to(tmp_path / "gone.png")
    (data / "B" / "outside.png").symlink_to(outside)
    (data / "C").symlink_to(data / "A", target_is_directory=True)
    assert sorted(p.name for p in sources.list_links(data)) == ["C", "dangling.png", "outside.png"]
    assert not {p.name for p in list_images(data)} & {"dangling.png", "outside.png"}

    cfg = tiny_config(tmp_path, {"download.source": f"path:{data}", "download.subdir": ""})
    assert runner.run(cfg, ["download", "datablock"]) == {"download": "ran", "datablock": "ran"}
    out = capsys.readouterr().out
    assert "skipped 3 symbolic link(s) (links inside a dataset are not followed): A/dangling.png, B/outside.png, C" in out
    assert "no images" not in out                                 # the linked class folder is not called empty
    meta = json.loads((tmp_path / "runs/t/download/dataset.json").read_text())
    assert meta["counts"] == {"A": 4, "B": 4} and meta["empty_classes"] == []
    corrupt = pd.read_csv(tmp_path / "runs/t/datablock/corrupt.csv")
    assert sorted(Path(p).name for p in corrupt["path"]) == ["C", "dangling.png", "outside.png"]
    assert set(corrupt["reason"]) == {"symbolic link: not followed inside a dataset"}
    assert dict(runner.status(cfg))["download"] == "up to date"


def test_two_processes_fetching_the_same_source_take_turns(tmp_path):
    """The second waits for the first (a lock per cache entry) instead of deleting its temp folder; both end with
    the whole dataset."""
    import subprocess
    import sys
    import time

    from tests.conftest import subprocess_env

    archive = tmp_path / "big.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for i in range(2000):                                     # many entries: a long extraction
            zf.writestr(f"signs/{'AB'[i % 2]}/{i:05d}.png", png_bytes(i % 256))
    cache = tmp_path / "cache"
    script = ("import sys; from pipeline.data import sources; "
              "root = sources.materialise(sys.argv[1], sys.argv[2], log=lambda m: print(m, flush=True)); "
              "print('IMAGES', len(sources.list_images(root)))")
    cmd = [sys.executable, "-c", script, f"path:{archive}", str(cache)]
    first = subprocess.Popen(cmd, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while not list(cache.glob(".*.tmp*/signs/A/*.png")) and time.monotonic() < deadline:  # first is extracting
        time.sleep(0.005)
    second = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=120)
    out_first = first.communicate(timeout=120)[0]
    assert first.returncode == 0 and second.returncode == 0, out_first + second.stdout + second.stderr
    assert "IMAGES 2000" in out_first and "IMAGES 2000" in second.stdout
    assert "using cached" in second.stdout
