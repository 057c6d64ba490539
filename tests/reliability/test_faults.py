"""Interrupted and failing runs: SIGKILL mid-download, mid-extraction and mid-stage, SIGTERM, and write failures.
After each fault the rerun must end with the very bytes a clean run produces."""
from __future__ import annotations

import errno
import http.server
import io
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from pipeline import config, runner
from pipeline.core import workspace
from pipeline.core.errors import PipelineError
from tests.conftest import make_image_folder
from tests.reliability.conftest import cli, kill_hard, leftovers, snapshot, start, wait_for, write_config

DATASET, SPLITS = "runs/r/download/dataset.json", "runs/r/datablock/splits.csv"


def class_zip(tmp_path: Path, padding: dict[str, bytes], padding_first: bool = True) -> bytes:
    """A zip of signs/<class>/<image>.png (3 classes x 8 PNGs) plus `padding` entries (hidden: not images)."""
    imgs = make_image_folder(tmp_path / "zipsrc", classes=("A", "B", "C"), per_class=8)
    images = {f"signs/{p.relative_to(imgs).as_posix()}": p.read_bytes() for p in sorted(imgs.rglob("*.png"))}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in ({**padding, **images} if padding_first else {**images, **padding}).items():
            zf.writestr(zipfile.ZipInfo(name, (2024, 1, 2, 3, 4, 6)), data)
    return buf.getvalue()


def load(project: Path):
    return config.load(None, cwd=project)


def clean_run_bytes(project: Path) -> dict[str, bytes]:
    """Run download (CLI) and datablock (in-process) from scratch; the bytes every fault test compares against."""
    p = cli(project, "run", "--stages", "download")
    assert p.returncode == 0, p.stderr
    assert runner.run(load(project), ["datablock"]) == {"datablock": "ran"}
    return snapshot(project, DATASET, SPLITS)


def reset(project: Path) -> None:
    for d in ("runs", "data"):
        shutil.rmtree(project / d, ignore_errors=True)


def assert_rerun_matches(project: Path, clean: dict[str, bytes]) -> None:
    p = cli(project, "run", "--stages", "download")
    assert p.returncode == 0, p.stderr
    assert "[download] running" in p.stdout
    assert runner.run(load(project), ["datablock"]) == {"datablock": "ran"}
    assert snapshot(project, DATASET, SPLITS) == clean
    assert leftovers(project / "data") == [] and leftovers(project / "runs") == []


# ------------------------------------------------------------------------------------------- url download

class SlowServer:
    """Serves one zip at /signs.zip on 127.0.0.1. `slow`: the first `head` bytes at once, then a trickle."""

    def __init__(self, payload: bytes, head: int):
        self.payload, self.head, self.slow, self.sent_head = payload, head, False, threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path != "/signs.zip":
                    return self.send_error(404)
                self.send_response(200)
                self.send_header("Content-Length", str(len(server.payload)))
                self.end_headers()
                try:
                    if not server.slow:
                        return self.wfile.write(server.payload)
                    self.wfile.write(server.payload[:server.head])
                    self.wfile.flush()
                    server.sent_head.set()
                    for i in range(server.head, len(server.payload), 4096):
                        time.sleep(0.05)
                        self.wfile.write(server.payload[i:i + 4096])
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/signs.zip"

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def url_project(tmp_path):
    padding = {".pad/blob.bin": np.random.default_rng(0).bytes(3 * 2**20)}  # > the client's 1 MiB read size
    with SlowServer(class_zip(tmp_path, padding), head=int(1.5 * 2**20)) as server:
        yield write_config(tmp_path / "proj", f"url:{server.url}"), server


def partial_download(project: Path):
    """The `.part` file of an unfinished download once it holds at least 1 MiB."""
    return next((p for p in (project / "data").glob(".*.tmp*/*.part") if p.stat().st_size >= 2**20), None)


@pytest.mark.slow
def test_sigkill_mid_download_leaves_no_complete_cache_and_the_rerun_finishes(url_project):
    project, server = url_project
    clean = clean_run_bytes(project)
    reset(project)

    server.slow = True
    proc = start(project, "run", "--stages", "download")
    part = wait_for(lambda: partial_download(project), proc)
    kill_hard(proc)
    assert part.exists() and part.stat().st_size < len(server.payload)  # really cut off mid-transfer
    assert not list((project / "data").rglob(workspace.COMPLETE_MARKER))
    assert not (project / "runs/r/download/manifest.json").exists()
    assert dict(runner.status(load(project)))["download"] != "up to date"
    with pytest.raises(PipelineError, match="datablock needs the outputs of download"):
        runner.run(load(project), ["datablock"])

    server.slow = False
    assert_rerun_matches(project, clean)


def test_sigterm_mid_download_unwinds_and_removes_its_temp_files(url_project):
    project, server = url_project
    server.slow = True
    proc = start(project, "run", "--stages", "download")
    wait_for(lambda: partial_download(project), proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 130
    assert "interrupted" in (project / "bg.err").read_text()
    assert leftovers(project / "data") == [] and not list((project / "data").rglob(workspace.COMPLETE_MARKER))


# ------------------------------------------------------------------------------------------- extraction

@pytest.mark.slow
def test_sigkill_mid_extraction_of_a_local_zip_is_redone(tmp_path):
    padding = {f".pad/{i:05d}.bin": bytes(64) for i in range(1500)}  # many small entries: a long extraction
    archive = tmp_path / "big.zip"
    archive.write_bytes(class_zip(tmp_path, padding))
    project = write_config(tmp_path / "proj", f"path:{archive}")
    clean = clean_run_bytes(project)
    reset(project)

    proc = start(project, "run", "--stages", "download")
    staging = wait_for(lambda: next((project / "data").glob(".*.tmp*/.pad/00100.bin"), None), proc)
    kill_hard(proc)
    assert staging.exists()                                       # killed while extracting
    assert not list((project / "data").rglob(workspace.COMPLETE_MARKER))
    assert not (project / "runs/r/download/manifest.json").exists()
    assert dict(runner.status(load(project)))["download"] != "up to date"
    assert_rerun_matches(project, clean)


def test_reextracting_an_archive_gives_the_same_listing(tmp_path):
    """Files keep the archive's timestamps, so a cache rebuilt after a fault does not make datablock stale."""
    archive = tmp_path / "s.zip"
    archive.write_bytes(class_zip(tmp_path, {}))
    project = write_config(tmp_path / "proj", f"path:{archive}")
    assert cli(project, "run", "--stages", "download").returncode == 0
    first = snapshot(project, DATASET)
    shutil.rmtree(project / "data")
    time.sleep(0.01)
    p = cli(project, "run", "--stages", "download", "--force")
    assert p.returncode == 0, p.stderr
    assert snapshot(project, DATASET) == first


# ------------------------------------------------------------------------------------------- mid-stage

@pytest.mark.slow
def test_sigkill_mid_stage_keeps_the_previous_outputs_and_the_rerun_reproduces_them(tmp_path):
    data = make_image_folder(tmp_path / "imgs", classes=("A", "B", "C"), per_class=10)
    project = write_config(tmp_path / "proj", f"path:{data}")
    assert runner.run(load(project), ["download", "datablock"]) == {"download": "ran", "datablock": "ran"}
    stage = project / "runs/r/datablock"
    before = snapshot(stage, "*")
    clean = snapshot(stage, "*.csv", "*.json")
    del clean["manifest.json"]  # it records timings

    proc = start(project, "run", "--stages", "datablock", "--force")
    wait_for(lambda: list(project.glob("runs/r/.datablock.staging-*/splits.csv")), proc)  # the new split is written
    kill_hard(proc)
    assert snapshot(stage, "*") == before                         # the previous outputs and manifest are untouched
    assert dict(runner.status(load(project)))["datablock"] == "up to date"
    assert runner.run(load(project), ["download", "datablock"]) == {"download": "skipped", "datablock": "skipped"}

    assert runner.run(load(project), ["datablock"], force=True) == {"datablock": "ran"}
    again = snapshot(stage, "*.csv", "*.json")
    del again["manifest.json"]
    assert again == clean
    assert leftovers(project / "runs") == [] and not list(project.glob("runs/r/.datablock.staging*"))
    assert dict(runner.status(load(project)))["datablock"] == "up to date"


# ------------------------------------------------------------------------------------------- write failures

def read_only(monkeypatch, *paths: Path) -> None:
    """`os.replace` onto one of `paths` fails with EROFS, as on a read-only file system: the test works as root too
    (root writes into a chmod 555 folder anyway)."""
    real = os.replace

    def replace(src, dst):
        if Path(dst) in paths:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dst))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)


@pytest.mark.slow
def test_unwritable_artifact_names_the_path_and_keeps_earlier_artifacts(tmp_path, monkeypatch):
    data = make_image_folder(tmp_path / "imgs", classes=("A", "B"), per_class=8)
    project = write_config(tmp_path / "proj", f"path:{data}")
    runner.run(load(project), ["download", "datablock"])
    clean = snapshot(project, SPLITS)
    earlier = snapshot(project, "runs/r/*/*")
    staging = project / f"runs/r/.datablock.staging-{os.getpid()}"  # this process's
    read_only(monkeypatch, staging / "splits.csv")

    with pytest.raises(PipelineError) as err:
        runner.run(load(project), ["datablock"], force=True)
    assert str(err.value) == f"cannot write {staging / 'splits.csv'}: Read-only file system"
    assert snapshot(project, "runs/r/*/*") == earlier
    assert dict(runner.status(load(project))) == {"download": "up to date", "datablock": "up to date",
                                                  "lr_find": "never run", "train": "never run", "evaluate": "never run"}
    assert leftovers(project / "runs") == [] and not staging.exists()

    monkeypatch.undo()
    assert runner.run(load(project), ["download", "datablock"], force=True) == {"download": "ran", "datablock": "ran"}
    assert snapshot(project, SPLITS) == clean


@pytest.mark.parametrize("blocker", ["runs/r/download", "runs/r"])
def test_cli_write_failure_is_one_line_naming_the_path(tmp_path, blocker):
    data = make_image_folder(tmp_path / "imgs", classes=("A", "B"), per_class=3)
    project = write_config(tmp_path / "proj", f"path:{data}")
    path = project / blocker
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("in the way")
    p = cli(project, "run", "--stages", "download")
    assert p.returncode == 2, p.stdout + p.stderr
    (line,) = p.stderr.strip().splitlines()
    assert line.startswith(f"error: cannot write {project / blocker}"), line
    assert "Traceback" not in p.stderr
    assert path.read_text() == "in the way"                       # nothing the user made is overwritten


@pytest.mark.slow
def test_read_only_stage_folder(tmp_path, monkeypatch, capsys):
    """Moving the new stage folder into place fails (EROFS, as root too): one line, the previous outputs stay, and
    the complete staged outputs are moved in by the next run."""
    from pipeline import cli as pipeline_cli

    data = make_image_folder(tmp_path / "imgs", classes=("A", "B"), per_class=3)
    project = write_config(tmp_path / "proj", f"path:{data}")
    monkeypatch.chdir(project)
    assert pipeline_cli.main(["run", "--stages", "download"]) == 0
    earlier = snapshot(project, "runs/r/download/*")
    capsys.readouterr()
    read_only(monkeypatch, project / "runs/r/.download.old")
    assert pipeline_cli.main(["run", "--stages", "download", "--force"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: cannot write {project / 'runs/r/.download.old'}: Read-only file system\n", err
    assert snapshot(project, "runs/r/download/*") == earlier
    monkeypatch.undo()
    monkeypatch.chdir(project)
    assert pipeline_cli.main(["status"]) == 0
    assert f"download   complete outputs are waiting in .download.staging-{os.getpid()}" in capsys.readouterr().out
    assert pipeline_cli.main(["run", "--stages", "download"]) == 0
    assert pipeline_cli.main(["status"]) == 0
    assert "download   up to date" in capsys.readouterr().out


def test_temp_files_of_a_killed_writer_are_removed_by_the_next_write(tmp_path):
    from pipeline.core.workspace import write_json

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".vocab.json.{dead_pid}.k1ll3d_x.tmp"   # what SIGKILL mid-write leaves
    live = tmp_path / f".vocab.json.{os.getppid()}.busy_y.tmp"  # another process still writing: left alone
    other = tmp_path / f".vocab.json.bak.{dead_pid}.x.tmp"      # not a temp of vocab.json
    for p in (stale, live, other):
        p.write_text("partial")
    write_json(tmp_path / "vocab.json", {"vocab": ["A"]})
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name, "vocab.json"])


def test_artifacts_get_the_mode_the_umask_gives(tmp_path):
    """mkstemp makes temp files 0600; an artifact renamed from one must get the mode `open` would give it."""
    data = make_image_folder(tmp_path / "imgs", classes=("A", "B"), per_class=3)
    project = write_config(tmp_path / "proj", f"path:{data}")
    from tests.conftest import pipeline_cmd
    from tests.reliability.conftest import env

    p = subprocess.run(pipeline_cmd("run", "--stages", "download"), cwd=project, env=env(), capture_output=True,
                       text=True, preexec_fn=lambda: os.umask(0o002))
    assert p.returncode == 0, p.stderr
    for f in ("runs/r/download/dataset.json", "runs/r/download/manifest.json", "runs/r/config.json"):
        assert (project / f).stat().st_mode & 0o777 == 0o664, f
