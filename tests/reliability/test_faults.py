"""Interrupted and failing runs: SIGKILL mid-download, mid-extraction and mid-stage, SIGTERM, and write failures.
After each fault the rerun must end with the very bytes a clean run produces."""
from __future__ import annotations

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

from pipeline import config, runner, sources
from pipeline.errors import PipelineError
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


def test_sigkill_mid_download_leaves_no_complete_cache_and_the_rerun_finishes(url_project):
    project, server = url_project
    clean = clean_run_bytes(project)
    reset(project)

    server.slow = True
    proc = start(project, "run", "--stages", "download")
    part = wait_for(lambda: partial_download(project), proc)
    kill_hard(proc)
    assert part.exists() and part.stat().st_size < len(server.payload)  # really cut off mid-transfer
    assert not list((project / "data").rglob(sources.DONE_MARKER))
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
    assert leftovers(project / "data") == [] and not list((project / "data").rglob(sources.DONE_MARKER))


# ------------------------------------------------------------------------------------------- extraction

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
    assert not list((project / "data").rglob(sources.DONE_MARKER))
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

def test_sigkill_mid_stage_leaves_it_incomplete_and_the_rerun_reproduces_it(tmp_path):
    data = make_image_folder(tmp_path / "imgs", classes=("A", "B", "C"), per_class=10)
    project = write_config(tmp_path / "proj", f"path:{data}")
    assert runner.run(load(project), ["download", "datablock"]) == {"download": "ran", "datablock": "ran"}
    stage = project / "runs/r/datablock"
    clean = snapshot(stage, "*.csv", "*.json")
    assert "manifest.json" in clean
    del clean["manifest.json"]  # it records timings
    splits_inode = (stage / "splits.csv").stat().st_ino

    proc = start(project, "run", "--stages", "datablock", "--force")
    wait_for(lambda: (stage / "splits.csv").stat().st_ino != splits_inode, proc)  # splits.csv just replaced
    kill_hard(proc)
    assert not (stage / "manifest.json").exists()                 # the manifest is written last
    status = dict(runner.status(load(project)))
    assert status["datablock"] != "up to date" and status["download"] == "up to date"
    with pytest.raises(PipelineError, match="lr_find needs the outputs of datablock"):
        runner.run(load(project), ["lr_find"])

    assert runner.run(load(project), ["download", "datablock"]) == {"download": "skipped", "datablock": "ran"}
    again = snapshot(stage, "*.csv", "*.json")
    del again["manifest.json"]
    assert again == clean
    assert leftovers(project / "runs") == []                      # temp files of the killed writes are gone
    assert dict(runner.status(load(project)))["datablock"] == "up to date"


# ------------------------------------------------------------------------------------------- write failures

def test_unwritable_artifact_names_the_path_and_keeps_earlier_artifacts(tmp_path):
    data = make_image_folder(tmp_path / "imgs", classes=("A", "B"), per_class=8)
    project = write_config(tmp_path / "proj", f"path:{data}")
    runner.run(load(project), ["download", "datablock"])
    clean = snapshot(project, SPLITS)
    shutil.rmtree(project / "runs/r/datablock")
    earlier = snapshot(project, "runs/r/download/*")
    (project / SPLITS).mkdir(parents=True)                        # something that is not a file is in the way

    with pytest.raises(PipelineError) as err:
        runner.run(load(project), ["datablock"])
    assert str(err.value) == f"cannot write {project / SPLITS}: Is a directory"
    assert snapshot(project, "runs/r/download/*") == earlier
    assert dict(runner.status(load(project)))["download"] == "up to date"
    assert not (project / "runs/r/datablock/manifest.json").exists()
    assert leftovers(project / "runs") == []

    (project / SPLITS).rmdir()
    assert runner.run(load(project), ["download", "datablock"]) == {"download": "skipped", "datablock": "ran"}
    assert snapshot(project, SPLITS) == clean


@pytest.mark.parametrize("blocker", ["runs/r/download", "runs/r", "runs/r/download/dataset.json/"])
def test_cli_write_failure_is_one_line_naming_the_path(tmp_path, blocker):
    data = make_image_folder(tmp_path / "imgs", classes=("A", "B"), per_class=3)
    project = write_config(tmp_path / "proj", f"path:{data}")
    path = project / blocker
    path.parent.mkdir(parents=True, exist_ok=True)
    path.mkdir() if blocker.endswith("/") else path.write_text("in the way")
    p = cli(project, "run", "--stages", "download")
    assert p.returncode == 2, p.stdout + p.stderr
    (line,) = p.stderr.strip().splitlines()
    assert line.startswith(f"error: cannot write {project / blocker.rstrip('/')}"), line
    assert "Traceback" not in p.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a chmod 555 folder anyway")
def test_read_only_stage_folder(tmp_path):
    data = make_image_folder(tmp_path / "imgs", classes=("A", "B"), per_class=3)
    project = write_config(tmp_path / "proj", f"path:{data}")
    (project / "runs/r/download").mkdir(parents=True)
    (project / "runs/r/download").chmod(0o555)
    try:
        p = cli(project, "run", "--stages", "download")
    finally:
        (project / "runs/r/download").chmod(0o755)
    assert p.returncode == 2 and p.stderr.startswith(f"error: cannot write {project / 'runs/r/download'}"), p.stderr


def test_temp_files_of_a_killed_writer_are_removed_by_the_next_write(tmp_path):
    from pipeline.workspace import write_json

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".vocab.json.{dead_pid}.k1ll3d_x.tmp"   # what SIGKILL mid-write leaves
    live = tmp_path / f".vocab.json.{os.getppid()}.busy_y.tmp"  # another process still writing: left alone
    other = tmp_path / f".vocab.json.bak.{dead_pid}.x.tmp"      # not a temp of vocab.json
    for p in (stale, live, other):
        p.write_text("partial")
    write_json(tmp_path / "vocab.json", {"vocab": ["A"]})
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name, "vocab.json"])
