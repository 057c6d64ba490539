"""`python -m pipeline serve`: a Gradio web app (the `[serve]` extra) that reads a letter from an uploaded photo
or a webcam frame with an exported learner: the top-5 letters with probabilities, and for a hand-landmark model
the keypoints drawn on the photo, or "no hand found" instead of a guessed letter.

- Engines: `kinds.load`, as `predict` loads: fastai on the `.pkl` (its sha256 checked against the model card),
  or with `--engine onnx` onnxruntime on the `.onnx` (nothing unpickled). A photo goes through the same code as
  `predict`, so the app and `predict` give the same top-1.
- Offline: analytics off, the Hugging Face hub offline, no server-side rendering, the theme's fonts served by the
  app itself; nothing is fetched from elsewhere at start or by the page.
- Collect mode (`--collect DIR`): the user picks the true letter and saves the photo as
  `DIR/<LETTER>/<timestamp>.jpg`, the layout of a training source (`download.source = "path:DIR"`).
- The HTTP API is Gradio's: `predict` (photo → top-5, keypoint image, reading) and, in collect mode, `collect`
  (photo, letter → what was saved).
"""
from __future__ import annotations

import logging
import os
import queue
import sys
from datetime import datetime, timezone
from pathlib import Path

from ..core.errors import PipelineError
from .limits import MAX_FILE_MB, body_limit, one_line_refusals, unmap_large_blocks

INSTALL = "pip install -e '.[serve]'  (Gradio 6)"
UPLOADS_KEPT = (60, 600)  # Gradio's delete_cache: every 60 s, uploads older than 600 s are deleted (all at exit)
MAX_PARALLEL = 16  # photos a hand model reads at once (--parallel): each holds a detector, ~90 MB and its threads
TOP = 5
NO_HAND = "no hand found"


def require():
    """The `gradio` module, configured to fetch nothing, or a one-line error saying how to install it."""
    for key, value in (("GRADIO_ANALYTICS_ENABLED", "False"), ("HF_HUB_OFFLINE", "1"),
                       ("HF_HUB_DISABLE_TELEMETRY", "1"), ("GRADIO_SSR_MODE", "False")):
        os.environ.setdefault(key, value)
    try:
        import gradio
    except ImportError:
        raise PipelineError(f"serve needs Gradio: {INSTALL}") from None
    return gradio


def keypoints_on(path, points):
    """The photo at `path` (EXIF-upright RGB) with the 21 keypoints and the bones between them drawn; `points`
    are in the padded square's normalised coordinates, as `hands.Detector` returns them."""
    from ..data import hands

    return hands.draw_keypoints(hands.load_rgb(path), points)


class Reader:
    """An exported model (`kinds.load`, either engine) answering one photo at a time: `read(path)` → (top-k
    {letter: p}, or {} with no hand; the keypoint image or None; the reading: "B (97.0 %)" or "no hand found").

    A model that finds hands first gets `parallel` detectors (default: one per usable core, at most 4): finding the
    hand costs most of a request, and each detector (not thread-safe) serves one request at a time, so that many
    run at once. The classifier itself runs as its engine allows (`exported.Engine`: a fastai learner one call at a
    time under the engine's lock; an ONNX session at once). An image model reads one photo at a time: its engine already uses every core."""

    def __init__(self, learner: Path, engine: str = "fastai", trust: bool = False, parallel: int = 0):
        from ..core.machine import usable_cpus
        from .. import kinds

        if not 0 <= parallel <= MAX_PARALLEL:
            raise PipelineError(f"--parallel must be 1 to {MAX_PARALLEL} (or 0: one per usable core, at most 4), got "
                                f"{parallel}: a hand model reads each photo with a MediaPipe detector of its own")
        self.model = kinds.load(learner, engine, trust=trust)  # its engine runs the model one call at a time
        self.vocab, self.engine = self.model.vocab, self.model.engine.name
        first = self.model.detector()
        self.parallel = (parallel or min(4, usable_cpus())) if first is not None else 1
        self.file, self._stamp = self.model.file, _stamp(self.model.file)  # a change on disk is noted
        self._detectors = None
        if first is not None:
            self._detectors = queue.SimpleQueue()
            for d in [first] + [self.model.detector() for _ in range(self.parallel - 1)]:
                self._detectors.put(d)

    def _probs(self, path):
        """(probabilities over the vocab, keypoints or None); probabilities None for a hand model with no hand."""
        if self._detectors is None:
            return self.model.read(path)
        detector = self._detectors.get()
        try:
            return self.model.read(path, detector)
        finally:
            self._detectors.put(detector)

    def changed(self) -> str:
        """'' while the learner file is the one loaded, else a one-line note: the server keeps answering with the
        model it verified at start (the file on disk now is not verified), until it is restarted."""
        if _stamp(self.file) == self._stamp:
            return ""
        return (f"note: {self.file.name} changed on disk after serve loaded it; this answer is from the model "
                f"loaded at start: restart serve to load the new one")

    def read(self, path):
        if not path:
            return {}, None, ""
        from ..data.loaders import check_image

        if problem := check_image(Path(path)):  # not an image, a decompression bomb, 16-bit pixels, bad EXIF
            raise PipelineError(f"cannot read the photo: {problem.replace(str(path), Path(path).name)}")
        try:
            probs, points = self._probs(path)
        except (OSError, ValueError) as e:  # PIL's errors for what is not an image
            raise PipelineError(f"cannot read the photo: {type(e).__name__}: {e}") from None
        drawn = keypoints_on(path, points) if points is not None else None
        note = f"; {n}" if (n := self.changed()) else ""
        if probs is None:
            return {}, None, NO_HAND + note
        order = probs.argsort()[::-1][:TOP]
        top = {self.vocab[i]: float(probs[i]) for i in order}
        return top, drawn, f"{self.vocab[order[0]]} ({probs[order[0]]:.1%})" + note


def _stamp(path: Path):
    """(size, mtime) of `path`, or None when it is gone."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def uploaded(photo) -> str | None:
    """The file path in the photo component's payload. The events take the payload as it is (`preprocess=False`):
    Gradio's own preprocessing opens the file with PIL and turns a file that is not an image, or a decompression
    bomb, into a multi-line error naming its temp folder; `Reader.read` checks it instead, in one line."""
    if isinstance(photo, dict):
        if not photo.get("path"):  # Gradio could not make a file of it (a data URL that is not base64)
            raise PipelineError("cannot read the photo: the request carries no file (is its data URL valid base64?)")
        return photo["path"]
    return photo or None


def save_photo(path, letter: str, folder: Path, vocab: list[str]) -> Path:
    """Save the photo at `path` as `folder/letter/<UTC timestamp>.jpg` (EXIF-upright RGB JPEG), atomically."""
    from PIL import Image, ImageOps

    from ..core.workspace import atomic_path

    if not path:
        raise PipelineError("no photo to save: upload one or take one with the webcam first")
    if letter not in vocab:
        raise PipelineError(f"pick the true letter first (one of the model's {len(vocab)}: {', '.join(vocab)})")
    from ..data.loaders import check_image

    if problem := check_image(Path(path)):
        raise PipelineError(f"cannot save the photo: {problem.replace(str(path), Path(path).name)}")
    out = Path(folder) / letter / (datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S_%fZ") + ".jpg")
    with Image.open(path) as im:
        rgb = ImageOps.exif_transpose(im).convert("RGB")
    with atomic_path(out) as tmp:
        rgb.save(tmp, format="JPEG", quality=95)
    return out


def build(reader: Reader, collect: Path | None = None, title: str = "signpipe", rules=None, streams=None):
    """The Gradio Blocks app around `reader` (with the collect panel when `collect` is a folder, and for a hand
    model the live fingerspelling section, `live.section`, with `rules`: a `spelling.Rules`, its streams' trackers
    lent by `streams`: a `live.Streams`, by default one at its default limits). A bad request is answered in one
    line, and written as one line on the console (`live.refuse`)."""
    from . import live

    gr = require()

    def predict(photo):
        try:
            return reader.read(uploaded(photo))
        except PipelineError as e:
            raise live.refuse(gr, e) from None

    def save(photo, letter):
        try:
            out = save_photo(uploaded(photo), letter, collect, reader.vocab)
        except PipelineError as e:
            raise live.refuse(gr, e) from None
        n = sum(1 for _ in out.parent.glob("*.jpg"))
        return f"saved {out} ({n} photo(s) of {letter} in {collect})"

    kind = reader.model.describe.removesuffix(" model")  # "image", "hand-crop": the banner adds "model"
    # what was uploaded is deleted 10 minutes after it came (checked each minute), and all of it when serve stops
    with gr.Blocks(analytics_enabled=False, title=title, delete_cache=UPLOADS_KEPT) as app:
        gr.Markdown(f"### {title}: read a letter from a photo\n{kind} model, {len(reader.vocab)} classes, "
                    f"{reader.engine} engine")
        with gr.Row():
            with gr.Column():
                photo = gr.Image(type="filepath", image_mode=None, sources=["upload", "webcam"], label="photo",
                                 elem_id="photo")
                button = gr.Button("Read the letter", variant="primary", elem_id="read")
            with gr.Column():
                reading = gr.Textbox(label="reading", interactive=False, elem_id="reading")
                top = gr.Label(num_top_classes=TOP, label=f"top {TOP}", elem_id="top")
                drawn = gr.Image(label="keypoints", type="pil", interactive=False, visible=reader.model.finds_hands,
                                 elem_id="keypoints")
        outputs = [top, drawn, reading]
        button.click(predict, photo, outputs, api_name="predict", preprocess=False)  # `uploaded` says why
        photo.change(predict, photo, outputs, api_name=False, preprocess=False)  # an upload, a snapshot, or cleared
        if collect is not None:
            with gr.Row():
                letter = gr.Dropdown(choices=reader.vocab, value=None, label="true letter", elem_id="letter")
                save_button = gr.Button("Save the photo under this letter", elem_id="save")
            saved = gr.Textbox(label="collected", interactive=False, elem_id="saved")
            save_button.click(save, [photo, letter], saved, api_name="collect", preprocess=False)
        if reader.model.streams:  # a model that follows a hand from frame to frame: the live section
            live.section(gr, app, streams or live.Streams(reader, rules))
    return app


def serve(learner: Path, engine: str = "fastai", host: str = "127.0.0.1", port: int = 7860, collect: Path | None = None,
          trust: bool = False, parallel: int = 0, log=print, rules=None, max_streams: int | None = None,
          stream_idle: float | None = None) -> None:
    """Load `learner` (verified), build the app and serve it on `host`:`port` until interrupted (`parallel`: photos
    read at once by a hand model; 0 = one per usable core, at most 4; `rules`: live fingerspelling's;
    `max_streams`, `stream_idle`: its limits, `live.Streams`'s `cap` and `idle_s`, default theirs)."""
    from . import live

    gr = require()
    _check_address(host, port)
    unmap_large_blocks()  # what a large request took goes back to the system when it is done
    limits = {k: v for k, v in (("cap", max_streams), ("idle_s", stream_idle)) if v is not None}
    live.Streams(None, rules, **limits)  # bad limits are refused before the model loads
    reader = Reader(Path(learner), engine=engine, trust=trust, parallel=parallel)
    streams = live.Streams(reader, rules, **limits).start() if reader.model.streams else None
    app = build(reader, collect, title=f"signpipe · {Path(learner).stem}", rules=rules, streams=streams)
    app.queue(default_concurrency_limit=reader.parallel)
    _console_apart()
    try:
        app.launch(server_name=host, server_port=port, prevent_thread_lock=True, quiet=True, ssr_mode=False,
                   show_error=True, theme=gr.themes.Default(), footer_links=["api"], max_file_size=f"{MAX_FILE_MB}mb",
                   app_kwargs={"middleware": [body_limit()]})  # one body limit for every route
    except OSError as e:
        raise PipelineError(f"cannot serve on {host}:{port}: {e}") from None
    log(f"serving {Path(learner).name} ({reader.model.describe.removesuffix(' model')} model, {reader.engine}, "
        f"{reader.parallel} photo(s) at once"
        + (f", at most {streams.cap} live stream(s)" if streams else "") + f") at http://{host}:{port}/"
        + (f"; collecting photos into {collect}" if collect else "") + "; Ctrl-C stops")
    sys.stdout.flush()
    try:
        app.block_thread()
    finally:
        app.close()
        if streams is not None:
            streams.close()


def _check_address(host: str, port: int) -> None:
    """One line, before the model loads, for a port out of range (it was an `OverflowError` with a traceback) or a
    host that is no address (Gradio said "Cannot find empty port")."""
    import socket

    if not 1 <= port <= 65535:
        raise PipelineError(f"--port must be 1 to 65535, got {port}")
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as e:
        raise PipelineError(f"cannot serve on {host}:{port}: --host {host!r} is not an address "
                            f"({getattr(e, 'strerror', None) or e})") from None


def _console_apart() -> None:
    """The console as serve writes it: Python's stderr on a descriptor of its own (a copy of 2), since MediaPipe's
    chatter is silenced by pointing descriptor 2 at /dev/null around each frame and photo it reads
    (`hands.native_stderr_silenced`), which would swallow what other threads write meanwhile (a refused request's
    line, a traceback); and asyncio's noise about Gradio's abandoned stream waits dropped."""
    sys.stderr.flush()
    sys.stderr = open(os.dup(2), "w", buffering=1, encoding=sys.stderr.encoding, errors="backslashreplace")
    one_line_refusals()  # what Gradio refuses before serve's code runs: one line too
    asyncio_log = logging.getLogger("asyncio")
    if not any(isinstance(f, AbandonedStreamWait) for f in asyncio_log.filters):
        asyncio_log.addFilter(AbandonedStreamWait())


class AbandonedStreamWait(logging.Filter):
    """Drops asyncio's "Task was destroyed but it is pending!" for Gradio's own wait on a stream's next frame
    (`Queue.wait_for_event`): for each stream that ends without a last frame (a closed tab, a client gone), Gradio
    leaves that wait pending once its 30 s timeout wins, and the garbage collector later destroys it with this
    multi-line error; nothing is lost. Any other task destroyed pending is still reported."""

    def filter(self, record):
        message = record.getMessage()
        return not (message.startswith("Task was destroyed but it is pending!") and "Queue.wait_for_event()" in message)

