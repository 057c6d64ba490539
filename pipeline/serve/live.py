"""Live fingerspelling with a hand-landmark model: the frames of a stream become keypoints (`hands.Tracker`, which
follows the hand from frame to frame), the model's letter (`probs`), and text (`spelling.Speller`).

- `LiveStream`: one stream's tracker and speller (a browser session of `serve`, or one video for `spell`).
- `section`: the "Live fingerspelling" part of `serve`'s page for a hand model: the browser streams webcam frames
  (Gradio's streaming Image); each answer shows the current letter and its probability, the keypoints drawn on the
  frame, and the text spelled so far, with a Clear button. Each browser session has its own `LiveStream` (a
  `gr.State`), so two tabs never mix.
- `spell_video`: `python -m pipeline spell --learner RUN.pkl VIDEO [--csv]`, a recorded video read with OpenCV
  (which comes with MediaPipe) through the same `LiveStream`.

It does not load models itself: it is handed `serve.Reader`'s loaded model (`exported.Exported`), and a frame goes
through the model's own `read`, as a photo does, with a tracker in place of a photo detector.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import PipelineError
from ..data import hands
from . import spelling

STREAM_EVERY = 0.04  # s: the browser sends a frame at most this often, and only once the last one has been answered
SHOWN_SIDE = 640     # px: frames sent back with their keypoints drawn (JPEG) are at most about this big


@dataclass
class Frame:
    """What one frame gave: its time (s), whether a hand was found, the top-1 label (None without a hand) and its
    probability, the label written on this frame (or None), and the keypoints (or None)."""

    t: float
    hand: bool
    label: str | None
    p: float
    written: str | None
    points: list | None


class LiveStream:
    """One stream of frames → letters → text: its own `hands.Tracker` and `spelling.Speller` over `reader`'s model.
    `track=False` finds the hand afresh in every frame (what bench/live.py compares tracking against)."""

    def __init__(self, reader, rules: spelling.Rules | None = None, track: bool = True):
        self.tracker = reader.model.tracker(track)
        if self.tracker is None:
            raise PipelineError("live fingerspelling needs a model that finds the hand (a hand-landmark model, "
                                "datablock.input = \"landmarks\"); this learner reads whole images")
        self.reader, self.vocab = reader, list(reader.vocab)
        self.speller = spelling.Speller(rules or spelling.Rules())

    def step(self, rgb, t: float) -> Frame:
        """The next frame (RGB array) at `t` seconds."""
        import numpy as np

        row, points = self.reader.model.read(np.ascontiguousarray(rgb[..., :3], dtype=np.uint8), self.tracker)
        label, p = None, 0.0
        if row is not None:
            i = int(row.argmax())
            label, p = self.vocab[i], float(row[i])
        return Frame(t, row is not None, label, p, self.speller.step(t, label, p), points)

    def close(self) -> None:
        self.tracker.close()


def reading(frame: Frame, speller: spelling.Speller) -> str:
    """The current letter as the page shows it: "L (93.1%)", with the letter being held and how far, or "no hand"."""
    if not frame.hand:
        return "no hand"
    held = speller.pending(frame.t)
    return f"{frame.label} ({frame.p:.1%})" + (f" · writing {held[0]}: {held[1]:.0%}" if held else "")


def shown(rgb, points):
    """The frame sent back to the page, the keypoints drawn on it: a frame over SHOWN_SIDE px is first shrunk by a
    whole factor (a box filter: ~0.5 ms, where a bilinear resize costs ~3 ms a frame)."""
    import numpy as np
    from PIL import Image

    factor = -(-max(rgb.shape[:2]) // SHOWN_SIDE)
    if factor > 1:
        rgb = np.asarray(Image.fromarray(rgb).reduce(factor))
    return hands.draw(rgb, points) if points is not None else Image.fromarray(rgb)


def shown_html(rgb, points) -> str:
    """`shown` as the page gets it: an <img> holding the JPEG itself (a data: URL), so no frame is written to
    Gradio's file cache (an image output would leave a file there for every frame of every stream)."""
    import base64
    import io

    buf = io.BytesIO()
    shown(rgb, points).save(buf, format="JPEG", quality=80)
    return (f'<img alt="keypoints" style="max-width: 100%" '
            f'src="data:image/jpeg;base64,{base64.b64encode(buf.getvalue()).decode()}">')


def _close(stream) -> None:
    if stream is not None:
        stream.close()


def section(gr, reader, rules: spelling.Rules | None = None) -> None:
    """The live fingerspelling section of `serve`'s page (call inside its `gr.Blocks`)."""
    rules = rules or spelling.Rules()

    def on_frame(frame, stream):
        if frame is None:
            return gr.skip(), gr.skip(), gr.skip(), stream
        stream = stream or LiveStream(reader, rules)
        f = stream.step(frame, time.monotonic())
        return shown_html(frame, f.points), reading(f, stream.speller), stream.speller.text, stream

    def on_clear(stream):
        if stream is not None:
            stream.speller.clear()
        return "", stream

    gr.Markdown(f"### Live fingerspelling\nStart the webcam stream and spell: a letter is written once it has been "
                f"read above {rules.threshold:.0%} for {rules.hold_s:g} s; drop the hand (or show `nothing`) "
                f"between double letters.")
    with gr.Row():
        cam = gr.Image(sources=["webcam"], streaming=True, type="numpy", label="webcam", elem_id="live_cam")
        with gr.Column():
            drawn = gr.HTML(label="keypoints", show_label=True, container=True, elem_id="live_keypoints")
            letter = gr.Textbox(label="letter now", interactive=False, elem_id="live_letter")
            spelled = gr.Textbox(label="spelled", interactive=False, elem_id="live_text")
            clear = gr.Button("Clear", elem_id="live_clear")
    stream = gr.State(None, delete_callback=_close)  # one LiveStream per browser session, closed when it ends
    # concurrency_limit None: a stream holds its event for as long as it runs, and must not hold up photo reads
    cam.stream(on_frame, [cam, stream], [drawn, letter, spelled, stream], stream_every=STREAM_EVERY,
               concurrency_limit=None, show_progress="hidden", api_name=False)
    clear.click(on_clear, stream, [spelled, stream], api_name=False)


def video_frames(path: Path):
    """(time in s, RGB array) for each frame of the video at `path`, read with OpenCV; and the frame count."""
    try:
        import cv2
    except ImportError:
        raise PipelineError(f"reading a video needs OpenCV, which comes with MediaPipe: {hands.INSTALL}") from None
    if not Path(path).is_file():
        raise PipelineError(f"{path} is not a file: give a video (e.g. .mp4, .avi)")
    with hands.native_stderr_silenced():  # FFmpeg's own lines (`moov atom not found`): the error below says it
        cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise PipelineError(f"{path}: OpenCV cannot read it as a video")
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    total = max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT)))

    def frames():
        try:
            i = 0
            while True:
                with hands.native_stderr_silenced():  # a damaged frame's FFmpeg lines: spell counts what it read
                    ok, bgr = cap.read()
                if not ok:
                    return
                yield i / fps, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                i += 1
        finally:
            cap.release()

    return frames(), total


def spell_video(reader, path: Path, rules: spelling.Rules | None = None, csv_out: bool = False, log=None) -> str:
    """Spell the video at `path` with `reader`'s hand model: print the text (stdout), or with `csv_out` one row per
    frame (time, hand_found, top1, p, written, text) and the text on stderr; progress lines, the frames read of
    those the video declares (when fewer) and the frames without a hand go to `log` (default stderr). Returns the
    text."""
    import csv

    from ..core.progress import Progress

    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    frames, total = video_frames(path)
    stream = LiveStream(reader, rules)
    out = csv.writer(sys.stdout) if csv_out else None
    if out:
        out.writerow(["time", "hand_found", "top1", "p", "written", "text"])
    progress, n, no_hand = Progress(log, f"spelling {Path(path).name}", total, unit="frames"), 0, 0
    try:
        for t, rgb in frames:
            f = stream.step(rgb, t)
            n, no_hand = n + 1, no_hand + (not f.hand)
            if out:
                out.writerow([f"{t:.3f}", str(f.hand).lower(), f.label or "", f"{f.p:.4f}", f.written or "",
                              stream.speller.text])
            progress.update(1, f"spelled so far: {stream.speller.text!r}")
    finally:
        stream.close()
    if n == 0:
        raise PipelineError(f"{path}: no frame could be read from the video")
    if n < total:
        log(f"note: read {n} of the {total} frames {Path(path).name} declares (is it truncated?)")
    if no_hand:
        log(f"no hand found in {no_hand} of {n} frame(s)")
    text = stream.speller.text
    if out:
        log(f"spelled: {text}")
    else:
        print(text, flush=True)
    return text


def add_arguments(p) -> None:
    """`spell`'s arguments (and the spelling rules, which `serve` takes too)."""
    p.add_argument("--learner", required=True, help="exports/RUN.pkl of a hand-landmark model")
    p.add_argument("video", help="a video file (anything OpenCV reads: .mp4, .avi, .webm...)")
    p.add_argument("--csv", action="store_true",
                   help="one row per frame on stdout: time,hand_found,top1,p,written,text (the text on stderr)")
    p.add_argument("--trust-learner", action="store_true", help="skip the sha256 check against the model card")
    add_rule_arguments(p)


def add_rule_arguments(p) -> None:
    r = spelling.Rules()
    p.add_argument("--threshold", type=float, default=r.threshold,
                   help=f"top-1 probability a frame needs to count for its letter (default {r.threshold})")
    p.add_argument("--hold", type=float, default=r.hold_s, metavar="SECONDS",
                   help=f"how long a letter is held before it is written (default {r.hold_s})")
    p.add_argument("--min-frames", type=int, default=r.min_frames,
                   help=f"and in at least this many frames (default {r.min_frames})")
    p.add_argument("--gap-frames", type=int, default=r.gap_frames, help="frames of no hand, `nothing` or another "
                   f"letter that let a letter repeat (default {r.gap_frames})")


def rules_of(args) -> spelling.Rules:
    return spelling.Rules(threshold=args.threshold, hold_s=args.hold, min_frames=args.min_frames,
                          gap_frames=args.gap_frames)
