"""One writer per run folder: a second `run` (or `report`, `recover`) is refused at once, naming the run that holds
the folder, or waits with `--wait`; a SIGKILLed run's lock never blocks the next; `status` reads without the lock
and says what is going on; `recover` finishes a complete commit a stopped run left and clears its leftovers."""
from __future__ import annotations

import http.server
import io
import os
import subprocess
import threading
import zipfile
from pathlib import Path

import pytest

from pipeline import config, runner
from pipeline.core import artifacts, runlock
from pipeline.core.workspace import Workspace, read_json, sha256_file
from tests.conftest import make_image_folder, pipeline_cmd
from tests.reliability.conftest import cli, env, kill_hard, start, wait_for, write_config

FAST = {"lr_find": {"num_it": 8}}  # keeps the full run short
TRAINED = "download,datablock,lr_find,train"


class GateServer:
    """Serves one zip at /signs.zip on 127.0.0.1, holding every answer until `gate` is set: a run that downloads
    from it holds its run folder for as long as the test wants."""

    def __init__(self, payload: bytes):
        self.gate = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.gate.wait(timeout=120)
                self.send_response(200)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                try:
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/signs.zip"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.gate.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def gated(tmp_path):
    """(project downloading from a GateServer, the server)."""
    imgs = make_image_folder(tmp_path / "src", classes=("A", "B", "C"), per_class=8)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in sorted(imgs.rglob("*.png")):
            zf.writestr(zipfile.ZipInfo(f"signs/{p.relative_to(imgs).as_posix()}", (2024, 1, 2, 3, 4, 6)),
                        p.read_bytes())
    server = GateServer(buf.getvalue())
    try:
        yield write_config(tmp_path / "proj", f"url:{server.url}", **FAST), server
    finally:
        server.close()


def holding(project: Path):
    """The holder record of runs/r once a run holds it."""
    return lambda: (project / "runs/r" / runlock.HOLDER).is_file() and runlock.holder(project / "runs/r")


def refusal(p: subprocess.CompletedProcess, pid: int, command: str) -> str:
    assert p.returncode == 2, p.stdout + p.stderr
    (line,) = p.stderr.strip().splitlines()
    assert line.startswith("error: another run is writing "), line
    assert f"pid {pid}, `{command}" in line and "since " in line and "--wait" in line, line
    return line


@pytest.mark.slow
def test_a_second_run_on_a_busy_run_folder_is_refused_naming_the_first(gated):
    project, server = gated
    first = start(project, "run", "--stages", TRAINED)
    wait_for(holding(project), first)

    second = cli(project, "run", "--stages", TRAINED, "--set", "datablock.valid_pct=0.5", "--set", "train.epochs=1")
    refusal(second, first.pid, f"python -m pipeline run --stages {TRAINED}")
    status = cli(project, "status")                                 # reads without the lock
    assert status.returncode == 0, status.stderr
    assert f"lock   a run is in progress: pid {first.pid}, `python -m pipeline run --stages {TRAINED}`" in status.stdout
    assert f"download   being run now (pid {first.pid})" in status.stdout

    server.gate.set()
    assert first.wait(timeout=300) == 0, (project / "bg.err").read_text()
    ws = Workspace.from_config(config.load(None, cwd=project))
    assert read_json(ws.root / artifacts.CONFIG)["datablock"]["valid_pct"] == 0.2  # the first's config, not the second's
    assert read_json(ws.artifact("datablock", artifacts.VOCAB))["valid_pct"] == 0.2
    assert len(ws.artifact("train", artifacts.HISTORY).read_text().splitlines()) == 1 + 2  # its 2 epochs, not 1
    card = read_json(ws.model_card)
    assert card["sha256"] == sha256_file(ws.learner) == ws.recorded_sha256("train", ws.learner)
    assert card["config"]["train"]["epochs"] == 2
    assert [state for _, state in runner.status(config.load(None, cwd=project))][:4] == ["up to date"] * 4
    assert not list(ws.root.glob(".*.staging*")) and not (ws.root / runlock.HOLDER).exists()


def test_with_wait_a_second_run_waits_for_the_first(gated):
    project, server = gated
    first = start(project, "run", "--stages", "download")
    wait_for(holding(project), first)
    out = project / "second.out"
    second = subprocess.Popen(pipeline_cmd("run", "--stages", "download", "--wait"), cwd=project, env=env(),
                              stdout=open(out, "w"), stderr=subprocess.STDOUT)
    wait_for(lambda: "waiting for" in out.read_text(), second)
    assert f"waiting for the run writing {project / 'runs/r'} (pid {first.pid}, `python -m pipeline run" in out.read_text()
    server.gate.set()
    assert first.wait(timeout=120) == 0
    assert second.wait(timeout=120) == 0, out.read_text()
    assert "[download] up to date, skipped" in out.read_text()    # it ran after the first, on what the first made


def test_a_waiting_run_stopped_while_it_waits_leaves_the_holder_alone(gated):
    """`run --wait` against a live holder, stopped by SIGTERM (a CI cancel) while it waits (probed for issue 36):
    exit 130 with the one "interrupted" line, the holder's record kept, and the holder finishes as if alone."""
    import signal

    project, server = gated
    first = start(project, "run", "--stages", "download")
    wait_for(holding(project), first)
    record = (project / "runs/r" / runlock.HOLDER).read_text()
    out = project / "second.out"
    second = subprocess.Popen(pipeline_cmd("run", "--stages", "download", "--wait"), cwd=project, env=env(),
                              stdout=open(out, "w"), stderr=subprocess.STDOUT)
    wait_for(lambda: "waiting for" in out.read_text(), second)
    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=60) == 130
    lines = out.read_text().splitlines()
    assert len(lines) == 2 and lines[1] == "interrupted: completed stages keep their outputs; rerun to continue", lines
    assert (project / "runs/r" / runlock.HOLDER).read_text() == record and runlock.holder(project / "runs/r")
    server.gate.set()
    assert first.wait(timeout=120) == 0, (project / "bg.err").read_text()
    assert not (project / "runs/r" / runlock.HOLDER).exists()


@pytest.mark.slow
def test_a_sigkilled_runs_lock_does_not_block_the_next_run(gated):
    project, server = gated
    killed = start(project, "run", "--stages", "download")
    wait_for(lambda: list((project / "runs/r").glob(".download.staging-*")), killed)  # holding the lock, downloading
    kill_hard(killed)
    assert (project / "runs/r" / runlock.HOLDER).is_file()        # what it left: the lock file and its record
    assert runlock.holder(project / "runs/r") is None             # but nobody holds the lock
    status = cli(project, "status")
    assert "a run is in progress" not in status.stdout and "being run now" not in status.stdout, status.stdout
    assert "download   incomplete (interrupted or failed)" in status.stdout

    server.gate.set()
    p = cli(project, "run", "--stages", "download", timeout=120)
    assert p.returncode == 0, p.stderr
    assert "[download] removed .download.staging-" in p.stdout   # the killed run's incomplete outputs
    assert not (project / "runs/r" / runlock.HOLDER).exists()
    assert not list((project / "runs/r").glob(".*.staging*"))


@pytest.mark.slow
@pytest.mark.parametrize("command", [["run", "--stages", "download"], ["report"], ["recover"]])
def test_every_writer_is_refused_while_another_holds_the_folder(tmp_path, command):
    data = make_image_folder(tmp_path / "imgs", classes=("A", "B"), per_class=3)
    project = write_config(tmp_path / "proj", f"path:{data}")
    assert cli(project, "run", "--stages", "download").returncode == 0
    with runlock.hold(project / "runs/r"):
        p = cli(project, *command)
        refusal(p, os.getpid(), runlock._command())
    assert cli(project, *command).returncode == 0


@pytest.mark.slow
def test_status_says_a_complete_staged_commit_is_waiting_and_recover_finishes_it(tmp_path, monkeypatch):
    """A run stopped between train's (here datablock's) two commit renames: status says what is waiting and what
    finishes it; `recover` does, and clears what stopped runs left."""
    data = make_image_folder(tmp_path / "imgs", classes=("A", "B"), per_class=6)
    project = write_config(tmp_path / "proj", f"path:{data}")
    cfg = config.load(None, cwd=project)
    ws = Workspace.from_config(cfg)
    runner.run(cfg, ["download", "datablock"])
    real = os.replace

    def killed(src, dst):
        if str(src) == str(ws.staging_dir("datablock")):
            raise KeyboardInterrupt
        return real(src, dst)

    monkeypatch.setattr(os, "replace", killed)
    half = config.load(None, ["datablock.valid_pct=0.5"], cwd=project)
    with pytest.raises(KeyboardInterrupt):
        runner.run(half, ["datablock"], force=True)
    monkeypatch.undo()
    staged = ws.staging_dir("datablock")
    (ws.root / ".train.staging-999999").mkdir()                   # an incomplete one of a dead process
    (ws.root / ".train.staging-999999" / "curves.png").write_bytes(b"partial")

    status = cli(project, "status", "--set", "datablock.valid_pct=0.5")
    assert (f"datablock  complete outputs are waiting in {staged.name} (a run stopped while committing them): "
            "`python -m pipeline run` or `recover` finishes the commit") in status.stdout, status.stdout
    p = cli(project, "recover")
    assert p.returncode == 0, p.stderr
    assert f"[datablock] finished the commit of its complete outputs that a stopped run left in {staged.name}" in p.stdout
    assert "[train] removed .train.staging-999999, the incomplete outputs of a stopped run" in p.stdout
    assert p.stdout.rstrip().endswith("run r: recovered (2 thing(s) done)"), p.stdout
    assert read_json(ws.artifact("datablock", artifacts.VOCAB))["valid_pct"] == 0.5
    assert dict(runner.status(half))["datablock"] == "up to date"
    assert not list(ws.root.glob(".*.staging*")) and not list(ws.root.glob(".*.old"))
    again = cli(project, "recover")
    assert again.stdout.strip() == "run r: nothing to recover", again.stdout


@pytest.mark.slow
def test_an_export_another_run_folder_made_is_not_replaced_unasked(tmp_path):
    """Two configs with the same run.name and exports folder but other workdirs share exports/<name>.*: the second's
    train is refused before it trains (the first's export, card and status stay), `status` says whose export it
    is, and `--force` replaces it with a note."""
    from tests.conftest import tiny_toml

    src = make_image_folder(tmp_path / "src", classes=("A", "B"), per_class=6)
    for name, epochs in (("a", 2), ("b", 1)):
        (tmp_path / f"{name}.toml").write_text(tiny_toml({
            "run.name": "m", "run.workdir": f"runs_{name}", "download.source": f"path:{src}",
            "download.subdir": "", "train.epochs": epochs}))
    a, b = (config.load(str(tmp_path / f"{n}.toml"), cwd=tmp_path) for n in "ab")
    runner.run(a, ["download", "datablock", "train"])
    pkl, card = tmp_path / "exports" / "m.pkl", tmp_path / "exports" / "m.json"
    first = pkl.read_bytes(), card.read_text()
    assert read_json(card)["run_folder"] == os.path.join("..", "runs_a", "m")

    p = cli(tmp_path, "run", "--config", "b.toml", "--stages", "download,datablock,train")
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert p.stderr.strip() == (f"error: {pkl} belongs to another run folder ({tmp_path / 'runs_a' / 'm'}: a config "
                                "with the same run.name and run.exports); training here would replace it: give this "
                                "config its own run.name or run.exports, or pass --force to replace it")
    assert "[train] fit_one_cycle" not in p.stdout and (pkl.read_bytes(), card.read_text()) == first  # not trained
    assert dict(runner.status(a))["train"] == "up to date"
    status = cli(tmp_path, "status", "--config", "b.toml").stdout
    assert f"export {pkl} belongs to another run folder, {tmp_path / 'runs_a' / 'm'}: `run` refuses" in status
    assert f"export {pkl} (this run folder's)" in cli(tmp_path, "status", "--config", "a.toml").stdout

    p = cli(tmp_path, "run", "--config", "b.toml", "--stages", "train", "--force")
    assert p.returncode == 0, p.stderr
    assert f"[train] note: replacing {pkl}, which belonged to the run folder {tmp_path / 'runs_a' / 'm'}" in p.stdout
    assert read_json(card)["run_folder"] == os.path.join("..", "runs_b", "m")
    assert f"belongs to another run folder, {tmp_path / 'runs_b' / 'm'}" in cli(tmp_path, "status", "--config",
                                                                                  "a.toml").stdout
