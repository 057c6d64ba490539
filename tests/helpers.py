"""Helpers several test modules share (not a test module: pytest collects nothing here). A test module imports
from here or from conftest.py, never from another test module, bench/ or research/.

- `serving`: `python -m pipeline serve` in a subprocess on 127.0.0.1 behind a network guard;
- `stream_event`, `open_stream`, `process_figures`: a client of `serve`'s live stream, and a process's RSS and
  threads (bench/live_streams.py uses them too);
- `massey`, `webcam_frame`, `write_video`: webcam frames and videos made from real photos;
- `idx_bytes`: an IDX file's bytes; `compute`: a stand-in for MediaPipe's features, from a file's bytes;
- `read_run`: a TensorBoard run folder read back;
- `multi_config`, `three_sources`: three training sources with their own label rules and groups.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import make_image_folder, pipeline_cmd, subprocess_env, tiny_config

# Loaded into the server process (PYTHONPATH): any connection or name lookup beyond this machine is written to
# $SIGNPIPE_NET_LOG and refused, so an app that fetches anything at start or per request fails the test.
NET_GUARD = '''
import os, socket
_log, _local = os.environ["SIGNPIPE_NET_LOG"], ("127.0.0.1", "::1", "localhost", "0.0.0.0", "")
def _note(host):
    with open(_log, "a") as f:
        f.write(f"{host}\\n")
    raise OSError(f"network access to {host} refused by the test")
_connect, _lookup = socket.socket.connect, socket.getaddrinfo
def connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and str(address[0]) not in _local:
        _note(address[0])
    return _connect(self, address)
def getaddrinfo(host, *args, **kwargs):
    if host is not None and str(host) not in _local:
        _note(host)
    return _lookup(host, *args, **kwargs)
socket.socket.connect, socket.getaddrinfo = connect, getaddrinfo
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:  # 127.0.0.1 only
        return r.read()


@contextlib.contextmanager
def serving(learner: Path, work: Path, *args: str):
    """`serve --learner LEARNER ARGS` in a subprocess on a free 127.0.0.1 port, with the network guard; yields its
    URL once it answers, stops it afterwards."""
    (work / "guard").mkdir()
    (work / "guard" / "sitecustomize.py").write_text(NET_GUARD)
    env = subprocess_env()
    env["PYTHONPATH"] = f"{work / 'guard'}:{env['PYTHONPATH']}"
    env["SIGNPIPE_NET_LOG"] = str(work / "net.log")
    port = free_port()
    log = open(work / "serve.log", "w")
    proc = subprocess.Popen(pipeline_cmd("serve", "--learner", str(learner), "--port", str(port), *args), cwd=work,
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(240):  # up to 2 minutes to import Gradio, load the model and start
            if proc.poll() is not None:
                pytest.fail(f"serve exited with {proc.returncode}: {(work / 'serve.log').read_text()[-2000:]}")
            try:
                http_get(url)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail(f"serve did not answer at {url}: {(work / 'serve.log').read_text()[-2000:]}")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def stream_event(url: str) -> tuple[int, int]:
    """(fn_index, trigger id) of the live section's stream event, from the app's /config."""
    import httpx

    config = httpx.get(f"{url}/config", timeout=30).json()
    cam = next(c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == "live_cam")
    for dep in config["dependencies"]:
        if [cam, "stream"] in [list(t) for t in dep["targets"]]:
            return dep["id"], cam
    raise SystemExit(f"{url} has no live stream event: is the learner a hand-landmark model?")


def open_stream(url: str, event: tuple[int, int], jpeg: bytes, timeout: float = 60) -> tuple[str, str]:
    """One new session sends one frame on the live stream and goes away: ("served", the letter shown) or
    ("refused", the server's message), or ("failed", what went wrong)."""
    import httpx

    fn_index, trigger = event
    session = uuid.uuid4().hex[:11]
    try:
        with httpx.Client(timeout=timeout) as client:
            up = client.post(f"{url}/gradio_api/upload", files={"files": ("frame.jpg", jpeg, "image/jpeg")})
            up.raise_for_status()
            frame = {"path": up.json()[0], "orig_name": "frame.jpg", "meta": {"_type": "gradio.FileData"}}
            join = client.post(f"{url}/gradio_api/queue/join", json={
                "data": [frame, None], "fn_index": fn_index, "trigger_id": trigger, "session_hash": session,
                "event_data": None})
            join.raise_for_status()
            with client.stream("GET", f"{url}/gradio_api/queue/data", params={"session_hash": session}) as sse:
                for line in sse.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    msg = json.loads(line[len("data:"):])
                    if msg.get("msg") in ("process_streaming", "process_generating") and msg.get("success", True):
                        return "served", msg["output"]["data"][1]
                    if msg.get("msg") == "process_completed":
                        out = msg.get("output") or {}
                        if msg.get("success"):
                            return "served", out["data"][1]
                        return "refused", str(out.get("error"))
        return "failed", "the event stream ended without an answer"
    except Exception as e:  # noqa: BLE001 - a failed session is counted, not raised
        return "failed", f"{type(e).__name__}: {e}"


def process_figures(pid: int) -> tuple[float, int]:
    """(RSS in MB, threads) of process `pid`."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(status["VmRSS"].split()[0]) / 1024, int(status["Threads"])


FPS = 15
SIZE = (480, 640)  # a webcam's frame (rows, columns)


def massey(data: Path, letter: str, i: int) -> Path:
    """The `i`-th Massey photo (a segmented hand on black, 400 px square) of `letter`."""
    return sorted((data / "massey_asl" / letter.lower()).glob("*.jpeg"))[i]


def webcam_frame(photo: Path | None):
    """A SIZE frame: the photo in the middle of a black one, or all black (no hand)."""
    frame = np.zeros((*SIZE, 3), np.uint8)
    if photo is not None:
        from pipeline.data import hands

        img = hands.load_rgb(photo)
        h, w = img.shape[:2]
        top, left = (SIZE[0] - h) // 2, (SIZE[1] - w) // 2
        frame[top:top + h, left:left + w] = img
    return frame


def write_video(path: Path, parts) -> int:
    """An MJPEG .avi at FPS of `parts` ((photo or None, seconds)); its frame count."""
    import cv2

    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, SIZE[::-1])
    n = 0
    for photo, seconds in parts:
        bgr = cv2.cvtColor(webcam_frame(photo), cv2.COLOR_RGB2BGR)
        for _ in range(round(seconds * FPS)):
            out.write(bgr)
            n += 1
    out.release()
    return n


def idx_bytes(array: np.ndarray) -> bytes:
    """`array` (uint8) as an IDX file: magic 0x0000080<ndim>, one big-endian uint32 per dimension, the data."""
    array = np.asarray(array, np.uint8)
    return bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape) + array.tobytes()


def compute(path: Path) -> list:
    """A stand-in for MediaPipe: 'features' made from the file's bytes."""
    h = hashlib.sha256(Path(path).read_bytes()).digest()
    return [b / 255 for b in h] * 2


def read_run(folder):
    """(scalars: tag → {step: value}, hparams: name → value) of one TensorBoard run folder."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = EventAccumulator(str(folder))
    acc.Reload()
    scalars = {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}
    hparams = {}
    for content in acc.PluginTagToContent("hparams").values():
        data = plugin_data_pb2.HParamsPluginData.FromString(content)
        if data.HasField("session_start_info"):
            for name, value in data.session_start_info.hparams.items():
                hparams[name] = getattr(value, value.WhichOneof("kind"))
    return scalars, hparams


def flat_images(folder: Path, names: list[str]) -> Path:
    """Images named `names` directly in `folder` (labels and groups in the file names, as in Roboflow's export),
    each of its own colour (the same bytes twice would be one image: the datablock keeps one copy)."""
    import zlib

    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        Image.new("RGB", (16, 16), tuple(zlib.crc32(f"{folder.name}/{n}".encode()).to_bytes(4, "big")[:3])).save(folder / n)
    return folder


def multi_config(root: Path, overrides: dict | None = None):
    """The project config of `three_sources` (its folders A, B and C under `root`) and `overrides`, via tiny_config:
    each source with its own label rules and groups, validation split by group."""
    return tiny_config(root, {
        "run.name": "multi",
        "download.sources": [
            {"name": "one", "source": f"path:{root / 'A'}"},
            {"name": "hands", "source": f"path:{root / 'B'}", "uppercase": True, "class_regex": "[A-Z]",
             "group_regex": r"^(hand\d+)_"},
            {"name": "flat", "source": f"path:{root / 'C'}", "label_regex": r"^([A-Z])\d+_jpg",
             "group_regex": r"^([A-Z]\d+)_jpg", "fold": "source"}],
        "datablock.valid_pct": 0.25, "datablock.split": "group", "datablock.verify": False, **(overrides or {})})


@pytest.fixture
def three_sources(tmp_path):
    """A: class folders a, b (one signer); B: lowercase class folders a, b, c plus a digit folder 7, signers in
    the file names; C: flat files whose names carry the label and the photo id."""
    make_image_folder(tmp_path / "A", classes=("A", "B"), per_class=4)
    b = tmp_path / "B"
    for c in ("a", "b", "c", "7"):
        for signer in (1, 2):
            flat_images(b / c, [f"hand{signer}_{c}_{i}.png" for i in range(3)])
    flat_images(tmp_path / "C", [f"{y}{k}_jpg.rf.{j}.png" for y in "AB" for k in range(3) for j in range(2)])
    multi_config(tmp_path)
    return tmp_path
