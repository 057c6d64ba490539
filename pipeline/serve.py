"""`python -m pipeline serve`: a Gradio web app (the `[serve]` extra) that reads a letter from an uploaded photo
or a webcam frame with an exported learner: the top-5 letters with probabilities, and for a hand-landmark model
the keypoints drawn on the photo, or "no hand found" instead of a guessed letter.

- Engines: fastai on the `.pkl` (`inference.load_verified`: its sha256 checked against the model card, as
  `predict` does), or with `--onnx` onnxruntime on the `.onnx` (`onnx_engine.load_verified`: nothing unpickled).
  A photo goes through the same code as `predict`, so the app and `predict` give the same top-1.
- Offline: analytics off, the Hugging Face hub offline, no server-side rendering, the theme's fonts served by the
  app itself; nothing is fetched from elsewhere at start or by the page.
- Collect mode (`--collect DIR`): the user picks the true letter and saves the photo as
  `DIR/<LETTER>/<timestamp>.jpg`, the layout of a training source (`download.source = "path:DIR"`).
- The HTTP API is Gradio's: `predict` (photo → top-5, keypoint image, reading) and, in collect mode, `collect`
  (photo, letter → what was saved).
"""
from __future__ import annotations

import os
import queue
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path

from .errors import PipelineError

INSTALL = "pip install -e '.[serve]'  (Gradio 6)"
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
    from . import hands

    return hands.draw(hands.load_rgb(path), points)


class Reader:
    """An exported learner answering one photo at a time per MediaPipe detector: `read(path)` → (top-k
    {letter: p}, or {} with no hand; the keypoint image or None; the reading: "B (97.0 %)" or "no hand found").

    A hand model gets `parallel` detectors (default: one per usable core, at most 4): finding the hand costs most
    of a request, and each detector (not thread-safe) serves one request at a time, so that many run at once.
    The classifier itself runs under one lock (a fastai learner is not thread-safe; an ONNX session is, but its
    call is short). An image model reads one photo at a time: its engine already uses every core."""

    def __init__(self, learner: Path, onnx: bool = False, trust: bool = False, parallel: int = 0):
        from . import hands
        from .machine import usable_cpus

        if parallel < 0:
            raise PipelineError(f"--parallel must be >= 1 (or 0: one per usable core), got {parallel}")
        if onnx:
            from . import onnx_engine

            self.model = onnx_engine.load_verified(learner, trust=trust)
            self.vocab, self.landmarks = self.model.vocab, self.model.landmarks
        else:
            from . import inference, models

            self.learn = inference.load_verified(learner, trust=trust)
            self.vocab, self.landmarks = list(self.learn.dls.vocab), models.input_of(self.learn).keypoints
        self.onnx, self.engine = onnx, "onnxruntime" if onnx else "fastai"
        self.parallel = (parallel or min(4, usable_cpus())) if self.landmarks else 1
        self._detectors = queue.SimpleQueue()
        for _ in range(self.parallel if self.landmarks else 0):
            self._detectors.put(hands.Detector())
        self._lock = threading.Lock()

    def _keypoints(self, path):
        detector = self._detectors.get()
        try:
            return detector(path)
        finally:
            self._detectors.put(detector)

    def _probs(self, path):
        """(probabilities over the vocab, keypoints or None); probabilities None for a hand model with no hand."""
        import numpy as np

        from . import hands

        if not self.landmarks:
            with self._lock:
                if self.onnx:
                    return self.model.probs(self.model.load(path)[None])[0], None
                from . import inference

                return inference.predict_images(self.learn, [Path(path)], 1).probs[0].numpy(), None
        points, handedness, _ = self._keypoints(path)
        feats = hands.canonical(points, handedness) if points is not None else None
        if feats is None:
            return None, None
        x = feats[None].astype(np.float32)
        with self._lock:
            if self.onnx:
                return self.model.probs(x)[0], points
            from . import hand_model

            return hand_model.feature_probs(self.learn, x)[0].numpy(), points

    def read(self, path):
        if not path:
            return {}, None, ""
        try:
            probs, points = self._probs(path)
        except (OSError, ValueError) as e:  # PIL's errors for what is not an image
            raise PipelineError(f"cannot read the photo: {type(e).__name__}: {e}") from None
        drawn = keypoints_on(path, points) if points is not None else None
        if probs is None:
            return {}, None, NO_HAND
        order = probs.argsort()[::-1][:TOP]
        top = {self.vocab[i]: float(probs[i]) for i in order}
        return top, drawn, f"{self.vocab[order[0]]} ({probs[order[0]]:.1%})"


def save_photo(path, letter: str, folder: Path, vocab: list[str]) -> Path:
    """Save the photo at `path` as `folder/letter/<UTC timestamp>.jpg` (EXIF-upright RGB JPEG), atomically."""
    from PIL import Image, ImageOps

    from .workspace import atomic_path

    if not path:
        raise PipelineError("no photo to save: upload one or take one with the webcam first")
    if letter not in vocab:
        raise PipelineError(f"pick the true letter first (one of the model's {len(vocab)}: {', '.join(vocab)})")
    out = Path(folder) / letter / (datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S_%fZ") + ".jpg")
    with Image.open(path) as im:
        rgb = ImageOps.exif_transpose(im).convert("RGB")
    with atomic_path(out) as tmp:
        rgb.save(tmp, format="JPEG", quality=95)
    return out


def build(reader: Reader, collect: Path | None = None, title: str = "signpipe", rules=None):
    """The Gradio Blocks app around `reader` (with the collect panel when `collect` is a folder, and for a hand
    model the live fingerspelling section, `live.section`, with `rules`: a `spelling.Rules`)."""
    gr = require()

    def predict(photo):
        try:
            return reader.read(photo)
        except PipelineError as e:
            raise gr.Error(str(e)) from None

    def save(photo, letter):
        try:
            out = save_photo(photo, letter, collect, reader.vocab)
        except PipelineError as e:
            raise gr.Error(str(e)) from None
        n = sum(1 for _ in out.parent.glob("*.jpg"))
        return f"saved {out} ({n} photo(s) of {letter} in {collect})"

    kind = "hand keypoints" if reader.landmarks else "image"
    with gr.Blocks(analytics_enabled=False, title=title) as app:
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
                drawn = gr.Image(label="keypoints", type="pil", interactive=False, visible=reader.landmarks,
                                 elem_id="keypoints")
        outputs = [top, drawn, reading]
        button.click(predict, photo, outputs, api_name="predict")
        photo.change(predict, photo, outputs, api_name=False)  # an upload, a webcam snapshot, or cleared
        if collect is not None:
            with gr.Row():
                letter = gr.Dropdown(choices=reader.vocab, value=None, label="true letter", elem_id="letter")
                save_button = gr.Button("Save the photo under this letter", elem_id="save")
            saved = gr.Textbox(label="collected", interactive=False, elem_id="saved")
            save_button.click(save, [photo, letter], saved, api_name="collect")
        if reader.landmarks:
            from . import live

            live.section(gr, reader, rules)
    return app


def serve(learner: Path, onnx: bool = False, host: str = "127.0.0.1", port: int = 7860, collect: Path | None = None,
          trust: bool = False, parallel: int = 0, log=print, rules=None) -> None:
    """Load `learner` (verified), build the app and serve it on `host`:`port` until interrupted (`parallel`: photos
    read at once by a hand model; 0 = one per usable core, at most 4; `rules`: live fingerspelling's)."""
    gr = require()
    reader = Reader(Path(learner), onnx=onnx, trust=trust, parallel=parallel)
    app = build(reader, collect, title=f"signpipe · {Path(learner).stem}", rules=rules)
    app.queue(default_concurrency_limit=reader.parallel)
    try:
        app.launch(server_name=host, server_port=port, prevent_thread_lock=True, quiet=True, ssr_mode=False,
                   show_error=True, theme=gr.themes.Default(), footer_links=["api"], max_file_size="25mb")
    except OSError as e:
        raise PipelineError(f"cannot serve on {host}:{port}: {e}") from None
    log(f"serving {Path(learner).name} ({'hand keypoints' if reader.landmarks else 'image'} model, {reader.engine}, "
        f"{reader.parallel} photo(s) at once) at http://{host}:{port}/"
        + (f"; collecting photos into {collect}" if collect else "") + "; Ctrl-C stops")
    sys.stdout.flush()
    try:
        app.block_thread()
    finally:
        app.close()
