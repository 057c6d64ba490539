"""`python -m pipeline serve` (pipeline/serve/app.py): the HTTP API gives `predict`'s top-1 on real photos for both
model families and both engines, a photo without a hand reads "no hand found", nothing is fetched from
elsewhere, collect mode writes a training source, and a real headless browser reads the letter off the page
(skipped, naming the browser, where no Chromium is installed). Servers listen on 127.0.0.1 only and are stopped."""
import csv
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import config, runner
from pipeline.core.errors import PipelineError
from pipeline.serve import app
from tests.conftest import (BROWSER, SHARED_DATA, asl_photos, needs_browser, pipeline_cmd, subprocess_env,
                            tiny_toml, training_fixture)
from tests.helpers import serving

HAND, NO_HAND = "B_test.jpg", "nothing_test.jpg"  # MediaPipe finds a hand in the first, none in the second

def test_collect_mode_saves_a_training_source(tmp_path):
    """`save_photo` writes folder/<LETTER>/<timestamp>.jpg, upright, and the folder is a source download accepts."""
    from PIL import Image

    from pipeline.data import datasets

    photo = tmp_path / "sideways.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: shown turned 90 degrees
    Image.new("RGB", (40, 20), "white").save(photo, exif=exif)
    folder = tmp_path / "mine"
    vocab = ["A", "B", "nothing"]
    saved = [app.save_photo(photo, letter, folder, vocab) for letter in ("B", "B", "A")]
    assert [p.parent.name for p in saved] == ["B", "B", "A"] and len(set(saved)) == 3
    assert all(p.suffix == ".jpg" and p.parent.parent == folder for p in saved)
    with Image.open(saved[0]) as im:
        assert im.size == (20, 40) and im.format == "JPEG"
    with pytest.raises(PipelineError, match="pick the true letter first"):
        app.save_photo(photo, "Q", folder, vocab)
    with pytest.raises(PipelineError, match="no photo to save"):
        app.save_photo(None, "A", folder, vocab)
    assert datasets.image_root(f"path:{folder}", "", tmp_path / "data", log=lambda m: None) == folder


@pytest.mark.parametrize("size", [(120, 80), (60, 150)])
def test_keypoints_are_drawn_where_the_detector_found_them(tmp_path, size):
    """Keypoints come back in the Detector's padded square; drawn on the photo they land on the photo's pixel."""
    from PIL import Image

    from pipeline.data import hands

    w, h = size
    photo = tmp_path / "p.png"
    Image.new("RGB", size, "black").save(photo)
    x, y = w // 3, h // 4
    side = int(max(h, w) * (1 + 2 * hands.PAD))
    left, top = (side - w) // 2, (side - h) // 2
    points = [[(left + x) / side, (top + y) / side, 0.0]] * hands.N_POINTS
    drawn = app.keypoints_on(photo, points)
    assert drawn.size == size and drawn.getpixel((x, y)) == (255, 0, 0)
    assert drawn.getpixel(((x + w // 2) % w, (y + h // 2) % h)) == (0, 0, 0)


def test_missing_gradio_is_one_line_with_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "gradio", None)
    with pytest.raises(PipelineError, match=r"serve needs Gradio: pip install -e '\.\[serve\]'"):
        app.require()


def test_gradio_abandoned_stream_waits_are_not_reported(caplog):
    """Gradio waits for a stream's next frame with a task it leaves pending once its timeout wins; the garbage
    collector destroys it with asyncio's "Task was destroyed but it is pending!", one per abandoned stream. serve's
    filter drops that one; a task of anyone else destroyed pending is still reported."""
    import asyncio
    import gc
    import logging
    from types import SimpleNamespace

    from gradio.queueing import Queue

    async def abandon(other: bool):
        stream = SimpleNamespace(signal=asyncio.Event())  # what Gradio's wait reads of its event
        assert await Queue.wait_for_event_or_timeout(stream, 0.01) == "timeout"
        if other:
            asyncio.ensure_future(asyncio.Event().wait())
        del stream
        await asyncio.sleep(0.01)
        gc.collect()

    def destroyed(other: bool = False) -> list[str]:
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            asyncio.run(abandon(other))
            gc.collect()
        return [r.getMessage().split("coro=<")[1].split("(")[0] for r in caplog.records
                if r.getMessage().startswith("Task was destroyed but it is pending!")]

    assert destroyed() == ["Queue.wait_for_event"]  # what serve's console showed
    quiet = app.AbandonedStreamWait()
    logging.getLogger("asyncio").addFilter(quiet)
    try:
        assert destroyed() == []
        assert destroyed(other=True) == ["Event.wait"]
    finally:
        logging.getLogger("asyncio").removeFilter(quiet)


@pytest.mark.parametrize("args, line", [
    (["--port", "70000"], "error: --port must be 1 to 65535, got 70000"),  # was an OverflowError with a traceback
    (["--port", "-1"], "error: --port must be 1 to 65535, got -1"),
    (["--host", "999.1.1.1"], "error: cannot serve on 999.1.1.1:7860: --host '999.1.1.1' is not an address ("),
    (["--stream-idle", "inf"], "error: --stream-idle must be a finite number of seconds > 0, got inf"),
    (["--parallel", "1000"], "error: --parallel must be 1 to 16 (or 0: one per usable core, at most 4), got 1000: "),
])
def test_serve_refuses_a_bad_address_or_limit_in_one_line_before_loading_the_model(tmp_path, capsys, args, line):
    from pipeline import cli

    assert cli.main(["serve", "--learner", str(tmp_path / "m.pkl"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(line) and err.count("\n") == 1, err


@training_fixture(scope="module")
def models(tmp_path_factory):
    """An image model and a hand-landmark model trained briefly on 4 real photos per letter (download, datablock,
    train: each with its .pkl, .onnx and card)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} not present")
    data = SHARED_DATA
    pytest.importorskip("mediapipe", reason="the [hands] extra is not installed")
    root = tmp_path_factory.mktemp("serve")
    common = {**asl_photos(data, 4, "test28"), "datablock.valid_pct": 0.25, "train.base_lr": 3e-3,
              "train.batch_size": 16}
    recipes = {"image": {"train.arch": "logreg", "train.image_size": 32, "train.epochs": 2},
               "hands": {"datablock.input": "landmarks", "train.arch": "landmark_mlp", "train.epochs": 8}}
    for name, recipe in recipes.items():  # two configs in one project folder: image.toml and hands.toml
        (root / f"{name}.toml").write_text(tiny_toml({"run.name": name, **common, **recipe}))
        runner.run(config.load(str(root / f"{name}.toml"), cwd=root), ["download", "datablock", "train"])
    return root


@pytest.fixture(scope="module", params=[("image", "fastai"), ("hands", "onnx")], ids=lambda p: "-".join(p))
def server(models, request, tmp_path_factory):
    """`serve` for one (model, engine) in a subprocess on a free 127.0.0.1 port, in collect mode, with the network
    guard; stopped afterwards."""
    name, engine = request.param
    work = tmp_path_factory.mktemp(f"server-{name}-{engine}")
    learner = models / "exports" / f"{name}.pkl"
    args = ["--collect", str(work / "collected"), "--parallel", "2",  # a hand model reads two photos at once
            "--engine", engine]
    with serving(learner, work, *args) as url:
        yield {"url": url, "name": name, "engine": engine, "learner": learner, "work": work}


def _predict_cli(learner: Path, engine: str, photos: list[Path]) -> dict:
    p = subprocess.run(pipeline_cmd("predict", "--csv", "--engine", engine, "--learner", str(learner),
                                    *map(str, photos)), capture_output=True, text=True, env=subprocess_env())
    assert p.returncode == 0, p.stderr
    return {Path(r["file"]).name: r["label"] for r in csv.DictReader(io.StringIO(p.stdout))}


@pytest.mark.slow
@pytest.mark.shared_data
def test_http_api_reads_predicts_top1_and_fetches_nothing(server, shared_data):
    from gradio_client import Client, handle_file

    photos = [shared_data / "asl_alphabet_test" / n for n in (HAND, NO_HAND)]
    expected = _predict_cli(server["learner"], server["engine"], photos)
    assert expected == _predict_cli(server["learner"], "onnx" if server["engine"] == "fastai" else "fastai", photos)
    client = Client(server["url"], verbose=False, download_files=str(server["work"] / "downloads"))
    for photo in photos:
        top, drawn, reading = client.predict(handle_file(str(photo)), api_name="/predict")
        if server["name"] == "hands" and photo.name == NO_HAND:
            assert reading == app.NO_HAND and not top.get("confidences") and drawn is None
            continue
        assert top["label"] == expected[photo.name] and reading.startswith(f"{expected[photo.name]} (")
        confidences = [c["confidence"] for c in top["confidences"]]
        assert len(confidences) == 5 and confidences == sorted(confidences, reverse=True)
        assert (drawn is not None) == (server["name"] == "hands")  # keypoints drawn for the hand model only
        if photo.name == HAND:
            reading_of_hand = reading
    jobs = [client.submit(handle_file(str(photos[0])), api_name="/predict") for _ in range(4)]  # at once
    assert {job.result(timeout=120)[2] for job in jobs} == {reading_of_hand}
    saved = client.predict(handle_file(str(photos[0])), "B", api_name="/collect")
    assert saved.startswith("saved ") and len(list((server["work"] / "collected" / "B").glob("*.jpg"))) == 1
    net = server["work"] / "net.log"
    assert not net.exists(), f"the server reached beyond this machine: {net.read_text()}"


@pytest.mark.slow
@pytest.mark.shared_data
@pytest.mark.parametrize("name", ["image", "hands"])
def test_evaluate_gives_the_same_predictions_with_either_engine(models, name):
    """The 28 real test photos: evaluate with fastai and with onnxruntime writes the same labels (and, for the
    hand model, finds the same hands), confidences within 1e-4."""
    import pandas as pd

    out = models / "runs" / name / "evaluate" / "test28" / "predictions.csv"
    runs = {}
    for engine in ("fastai", "onnx"):
        cfg = config.load(str(models / f"{name}.toml"), [f"evaluate.engine={engine}"], cwd=models)
        runner.run(cfg, ["evaluate"], force=True)
        runs[engine] = pd.read_csv(out)
    fa, ox = runs["fastai"], runs["onnx"]
    assert len(ox) == 28 and list(ox["predicted"]) == list(fa["predicted"])
    assert (ox["confidence"] - fa["confidence"]).abs().max() <= 1e-4
    if name == "hands":
        assert list(ox["hand_found"]) == list(fa["hand_found"]) and not ox["hand_found"].all()


@pytest.mark.slow
@pytest.mark.shared_data
@needs_browser
def test_a_headless_browser_reads_the_letter_off_the_page(server, shared_data):
    """Chromium opens the page, uploads a photo, and the page shows `predict`'s letter; every request the page
    makes goes to the app itself."""
    from playwright import sync_api

    browser_path = BROWSER
    photo = shared_data / "asl_alphabet_test" / HAND
    expected = _predict_cli(server["learner"], server["engine"], [photo])[photo.name]
    elsewhere = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.on("request", lambda r: elsewhere.append(r.url)
                    if not r.url.startswith((server["url"], "data:", "blob:")) else None)
            # not "networkidle": a hand model's page (its live section) keeps Gradio's heartbeat open
            page.goto(server["url"], wait_until="load", timeout=60_000)
            page.wait_for_selector("#photo input[type=file]", state="attached", timeout=60_000)
            page.locator("#photo input[type=file]").set_input_files(str(photo))
            page.wait_for_function("() => document.querySelector('#reading textarea').value !== ''",
                                   timeout=60_000)
            reading = page.locator("#reading textarea").input_value()
            top = page.locator("#top").inner_text()
        finally:
            browser.close()
    assert reading.startswith(f"{expected} (") and expected in top
    assert elsewhere == []


@pytest.fixture(scope="module")
def tiny_server(trained, tmp_path_factory):
    """`serve` (fastai engine, collect mode) for a copy of the session's tiny run (conftest's `tiny_project`: a
    logistic regression on three generated classes): the server the bad-input probes below share."""
    root = trained.copy("tiny_run", tmp_path_factory.mktemp("tiny-serve") / "project")
    work = root / "work"
    work.mkdir()
    with serving(root / "exports" / "tiny.pkl", work, "--collect", str(work / "collected")) as url:
        yield {"url": url, "root": root, "work": work, "photo": next((root / "train" / "A").glob("*.png"))}


def _app_error(client, path, api_name="/predict", *more) -> str:
    """The one-line message the app answered `path` with (what the page shows in its error toast)."""
    from gradio_client import handle_file

    with pytest.raises(Exception) as raised:
        client.predict(handle_file(str(path)), *more, api_name=api_name)
    message = str(raised.value)
    assert type(raised.value).__name__ == "AppError" and "\n" not in message.strip(), message
    return message


@pytest.mark.slow
def test_bad_uploads_are_one_line_and_the_server_keeps_serving(tiny_server, tmp_path):
    """A 50 MB upload (the app takes 25 MB), a decompression bomb, a file that is not an image (to read or to
    collect): each one line in the API, and the next photo still reads."""
    import httpx
    from gradio_client import Client, handle_file
    from PIL import Image

    client = Client(tiny_server["url"], verbose=False, download_files=str(tmp_path / "downloads"))
    good = handle_file(str(tiny_server["photo"]))
    reading = client.predict(good, api_name="/predict")[2]
    assert re.fullmatch(r"[ABC] \(\d+\.\d%\)", reading)

    big = tmp_path / "big.png"
    big.write_bytes(tiny_server["photo"].read_bytes() + b"\0" * (50 * 2**20))
    r = httpx.post(f"{tiny_server['url']}gradio_api/upload", files={"files": ("big.png", big.read_bytes())},
                   timeout=120)  # over the body limit of every route: refused before Gradio reads it
    assert r.status_code == 413 and r.text == TOO_LARGE
    big.write_bytes(tiny_server["photo"].read_bytes() + b"\0" * (30 * 2**20))  # under it, over Gradio's file limit
    r = httpx.post(f"{tiny_server['url']}gradio_api/upload", files={"files": ("big.png", big.read_bytes())},
                   timeout=120)
    assert r.status_code == 413 and r.text.strip() == "File size exceeded maximum allowed size of 26214400 bytes."
    with pytest.raises(ValueError, match=r"^File .*big.png exceeds the maximum file size of 26214400 bytes"):
        client.predict(handle_file(str(big)), api_name="/predict")  # gradio_client refuses it before sending

    bomb = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(bomb)  # 48 kB on disk, 400 million pixels
    assert re.fullmatch(r"cannot read the photo: too large: Image size \(400000000 pixels\) exceeds limit of "
                        r"\d+ pixels \(possible decompression bomb\)", _app_error(client, bomb))
    just_over = tmp_path / "just_over.png"
    Image.new("1", (10000, 10000)).save(just_over)  # over PIL's limit, under twice it: PIL only warns
    assert _app_error(client, just_over).startswith("cannot read the photo: too large: 10000x10000 pixels exceeds")
    for name, data in (("notes.png", b"not an image\n"), ("doc.pdf", b"%PDF-1.4\n%%EOF\n")):
        (tmp_path / name).write_bytes(data)
        message = _app_error(client, tmp_path / name)
        assert message == f"cannot read the photo: UnidentifiedImageError: cannot identify image file '{name}'"
        assert _app_error(client, tmp_path / name, "/collect", "A").startswith("cannot save the photo: ")
    for data in ([{"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}}], ["x.jpg"]):  # Gradio refuses these
        event = httpx.post(f"{tiny_server['url']}gradio_api/call/predict", json={"data": data}, timeout=60)
        answer = httpx.get(f"{tiny_server['url']}gradio_api/call/predict/{event.json()['event_id']}", timeout=60)
        assert "event: error" in answer.text, answer.text
    assert client.predict(good, api_name="/predict")[2] == reading
    log = (tiny_server["work"] / "serve.log").read_text()  # the console: one line a bad request, no traceback
    assert "Traceback" not in log, log[-3000:]
    refused = [line for line in log.splitlines() if line.startswith("serve: refused a request: ")]
    assert len(refused) == 8 and refused[0].startswith("serve: refused a request: cannot read the photo: too large: "
                                                       "Image size (400000000 pixels) exceeds limit"), refused


TOO_LARGE = "Request body over 37,748,736 bytes: this server takes photos up to 25 MB.\n"


@pytest.mark.slow
def test_every_route_refuses_a_body_over_the_limit_before_reading_it(tiny_server):
    """A JSON call carrying a photo as a 40 MB data URL (it was 200 and queued: four took the server from 655 to
    1,535 MB) is 413 on every route, declared or chunked; the server then reads the next photo."""
    import httpx
    from gradio_client import Client, handle_file

    url = tiny_server["url"]
    head = b'{"data": [{"path": null, "url": "data:image/png;base64,'
    tail = b'", "meta": {"_type": "gradio.FileData"}}]}'
    body = head + b"A" * (40 * 2**20) + tail
    for route in ("gradio_api/call/predict", "gradio_api/queue/join", "gradio_api/upload", "gradio_api/info"):
        r = httpx.post(url + route, content=body, headers={"content-type": "application/json"}, timeout=60)
        assert (r.status_code, r.text) == (413, TOO_LARGE), route
    chunks = (head, *[b"A" * 2**20] * 40, tail)  # no Content-Length: refused once 36 MB have arrived
    r = httpx.post(url + "gradio_api/call/predict", content=iter(chunks), headers={"content-type": "application/json"},
                   timeout=60)
    assert (r.status_code, r.text) == (413, TOO_LARGE)
    client = Client(url, verbose=False)
    assert re.fullmatch(r"[ABC] \(\d+\.\d%\)", client.predict(handle_file(str(tiny_server["photo"])),
                                                                api_name="/predict")[2])

    bad = {"data": [{"path": None, "url": "data:image/jpeg;base64,!!!", "meta": {"_type": "gradio.FileData"}}]}
    event = httpx.post(url + "gradio_api/call/predict", json=bad, timeout=60).json()["event_id"]
    answer = httpx.get(f"{url}gradio_api/call/predict/{event}", timeout=60).text  # it was an empty answer
    assert "event: error" in answer and "cannot read the photo: the request carries no file" in answer, answer


@pytest.mark.slow
def test_twenty_requests_at_once_and_a_learner_changed_on_disk(tiny_server, tmp_path):
    """20 requests at once all get the same answer; after the .pkl changes on disk the server keeps answering with
    the model it verified at start, and its reading says so in one line."""
    from gradio_client import Client, handle_file

    client = Client(tiny_server["url"], verbose=False, download_files=str(tmp_path / "downloads"))
    good = handle_file(str(tiny_server["photo"]))
    jobs = [client.submit(good, api_name="/predict") for _ in range(20)]
    readings = {job.result(timeout=120)[2] for job in jobs}
    assert len(readings) == 1 and "note" not in next(iter(readings))
    pkl = tiny_server["root"] / "exports" / "tiny.pkl"
    original = pkl.read_bytes()
    try:
        pkl.write_bytes(b"retrained, or damaged")
        reading = client.predict(good, api_name="/predict")[2]
    finally:
        pkl.write_bytes(original)
    assert reading == (f"{next(iter(readings))}; note: tiny.pkl changed on disk after serve loaded it; this answer is "
                       f"from the model loaded at start: restart serve to load the new one")
