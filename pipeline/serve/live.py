"""Live fingerspelling with a hand-landmark model: the frames of a stream become keypoints (`hands.Tracker`, which
follows the hand from frame to frame), the model's letter (`probs`), and text (`spelling.Speller`).

- `LiveStream`: one stream's tracker and speller (a browser session of `serve`, or one video for `spell`).
- `Streams`: a server's live streams and their trackers (a MediaPipe graph each, ~90 MB and 2 threads): at most
  `cap` streams hold one at once (`serve --max-streams`), a stream that sent no frame for `idle_s` seconds gives its
  tracker back (`--stream-idle`), and given-back trackers are reset and lent again (closed once unused that long).
  A stream over the cap is refused in one line ("4 live streams already open (...): try again later").
- `section`: the "Live fingerspelling" part of `serve`'s page for a hand model: the browser streams webcam frames
  (Gradio's streaming Image); each answer shows the current letter and its probability, the keypoints drawn on the
  frame, and the text spelled so far, with a Clear button. Each browser session has its own `LiveStream` (a
  `gr.State`), so two tabs never mix; its tracker is lent by `Streams`.
- `spell_video`: `python -m pipeline spell --learner RUN.pkl VIDEO [--csv]`, a recorded video read with OpenCV
  (which comes with MediaPipe) through the same `LiveStream`.

It does not load models itself: it is handed `serve.Reader`'s loaded model (`kinds.Exported`), and a frame goes
through the model's own `read`, as a photo does, with a tracker in place of a photo detector. It is over 300 lines
because a stream, the limits a server puts on its streams and the page section that runs them change together.
"""
from __future__ import annotations

import math
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import PipelineError
from ..data import hands
from . import spelling

STREAM_EVERY = 0.04  # s: the browser sends a frame at most this often, and only once the last one has been answered
SHOWN_SIDE = 640     # px: frames sent back with their keypoints drawn (JPEG) are at most about this big
MAX_STREAMS = 4      # live streams a server runs at once (serve --max-streams): a tracker each, ~90 MB, 2 threads
STREAM_IDLE_S = 15.0  # s: a stream that sent no frame for this long gives its tracker back (serve --stream-idle)


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
    `track=False` finds the hand afresh in every frame (what bench/live.py compares tracking against); `tracker`:
    one to use instead of a new one (`Streams` lends its own, and may take it back between frames: then None)."""

    def __init__(self, reader, rules: spelling.Rules | None = None, track: bool = True, tracker=None):
        self.tracker = tracker if tracker is not None else reader.model.tracker(track)
        if self.tracker is None:
            raise PipelineError("live fingerspelling needs a model that finds the hand (a hand-landmark model, "
                                "datablock.input = \"landmarks\"); this learner reads whole images")
        self.reader, self.vocab = reader, list(reader.vocab)
        self.speller = spelling.Speller(rules or spelling.Rules())
        self.lock = threading.Lock()  # one frame at a time: a tracker is not thread-safe
        self.session = ""             # the browser session it belongs to (`Streams.end_session`)

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
    return hands.draw_keypoints(rgb, points) if points is not None else Image.fromarray(rgb)


def shown_html(rgb, points) -> str:
    """`shown` as the page gets it: an <img> holding the JPEG itself (a data: URL), so no frame is written to
    Gradio's file cache (an image output would leave a file there for every frame of every stream)."""
    import base64
    import io

    buf = io.BytesIO()
    shown(rgb, points).save(buf, format="JPEG", quality=80)
    return (f'<img alt="keypoints" style="max-width: 100%" '
            f'src="data:image/jpeg;base64,{base64.b64encode(buf.getvalue()).decode()}">')


class Streams:
    """The live streams of one server and the trackers they borrow. At most `cap` streams hold a tracker at once; a
    stream over it is refused (a one-line `PipelineError`) until one gives its tracker back: a stream that sent no
    frame for `idle_s` seconds does (checked at each lend, and every `idle_s / 3` s by a sweeper thread once
    `start` is called), as does a closed browser tab (`end_session`). A tracker given back is reset and lent to the
    next stream; one unused for `idle_s` more is closed (its threads end; glibc keeps much of its memory for the next
    one). So a server holds at most `cap` trackers, however many sessions come and go. `close` closes them all."""

    def __init__(self, reader, rules: spelling.Rules | None = None, cap: int = MAX_STREAMS,
                 idle_s: float = STREAM_IDLE_S, clock=time.monotonic):
        if cap < 1:
            raise PipelineError(f"--max-streams must be >= 1, got {cap}")
        if not 0 < idle_s < math.inf:  # nan fails both; inf would keep every tracker for good
            raise PipelineError(f"--stream-idle must be a finite number of seconds > 0, got {idle_s}")
        self.reader, self.rules, self.cap, self.idle_s = reader, rules or spelling.Rules(), cap, idle_s
        self._clock = clock
        self._lock = threading.Lock()
        self._held: dict[LiveStream, float] = {}  # streams holding a tracker → when their last frame was answered
        self._free: list[tuple[object, float]] = []  # trackers given back (reset) → when
        self._lent = 0  # trackers out: held, or being made for a stream
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None

    def counts(self) -> dict:
        """{"held": trackers lent to streams, "free": trackers kept to lend again}: at most `cap` in all."""
        with self._lock:
            return {"held": self._lent, "free": len(self._free)}

    def step(self, stream: LiveStream | None, rgb, t: float, session: str = "") -> tuple[LiveStream, Frame]:
        """`stream`'s next frame (a new stream of `session` for None), lending it a tracker if it has none: (the
        stream, what the frame gave). Raises a one-line `PipelineError` when `cap` streams hold one."""
        if stream is None:
            stream = LiveStream(self.reader, self.rules, tracker=self._lend())
            stream.session = session
            with self._lock:
                self._held[stream] = self._clock()
        with stream.lock:
            if stream.tracker is None:
                tracker = self._lend()
                with self._lock:
                    stream.tracker, self._held[stream] = tracker, self._clock()
            try:
                return stream, stream.step(rgb, t)
            finally:
                with self._lock:
                    if stream in self._held:  # (not after `close`)
                        self._held[stream] = self._clock()

    def _lend(self):
        """A tracker for a stream (a reset one given back, else a new one), or the one-line refusal."""
        with self._lock:
            close = self._sweep()
            if self._lent >= self.cap:
                raise PipelineError(f"{self._lent} live stream{'s' if self._lent > 1 else ''} already open (this "
                                    f"server runs at most {self.cap} at once): try again later")
            self._lent += 1
            tracker = self._free.pop()[0] if self._free else None
        _close_all(close)
        if tracker is not None:
            return tracker
        try:
            return self.reader.model.tracker()
        except BaseException:
            with self._lock:
                self._lent -= 1
            raise

    def _sweep(self) -> list:
        """(Holding `_lock`) take back the trackers of streams idle for `idle_s` (not one mid-frame); the free
        trackers unused as long, to be closed outside the lock."""
        now = self._clock()
        for stream, last in list(self._held.items()):
            if now - last > self.idle_s and stream.lock.acquire(blocking=False):
                try:
                    self._give_back(stream, now)
                finally:
                    stream.lock.release()
        close = [tracker for tracker, since in self._free if now - since > self.idle_s]
        self._free = [(tracker, since) for tracker, since in self._free if now - since <= self.idle_s]
        return close

    def _give_back(self, stream: LiveStream, now: float) -> None:
        """(Holding `_lock` and `stream.lock`) `stream`'s tracker, reset, to the free list."""
        tracker, stream.tracker = stream.tracker, None
        del self._held[stream]
        self._lent -= 1
        if tracker is not None:
            tracker.reset()
            self._free.append((tracker, now))

    def end(self, stream: LiveStream | None) -> None:
        """`stream` is over (its session ended): its tracker goes back now."""
        if stream is None:
            return
        with stream.lock, self._lock:
            if stream in self._held:
                self._give_back(stream, self._clock())

    def end_session(self, session: str) -> None:
        """The browser tab of `session` was closed: its streams give their trackers back."""
        with self._lock:
            streams = [s for s in self._held if s.session == session]
        for stream in streams:
            self.end(stream)

    def sweep(self) -> None:
        """Take back idle streams' trackers and close those unused too long (what the sweeper does)."""
        with self._lock:
            close = self._sweep()
        _close_all(close)

    def start(self) -> Streams:
        """Sweep every `idle_s / 3` seconds in a daemon thread, until `close`."""
        def run():
            while not self._stop.wait(self.idle_s / 3):
                self.sweep()

        self._sweeper = threading.Thread(target=run, name="live-streams-sweeper", daemon=True)
        self._sweeper.start()
        return self

    def close(self) -> None:
        """Stop the sweeper and close every tracker (the server is stopping)."""
        self._stop.set()
        if self._sweeper is not None:
            self._sweeper.join()
        with self._lock:
            trackers = [t for t, _ in self._free] + [s.tracker for s in self._held if s.tracker is not None]
            self._free, self._held, self._lent = [], {}, 0
        _close_all(trackers)


def _close_all(trackers) -> None:
    for tracker in trackers:
        tracker.close()
    if trackers:
        _trim()


def _trim() -> None:
    """Hand the memory of closed trackers back to the system: glibc keeps what a freed MediaPipe graph used for
    reuse, so without this the server's RSS stays near its peak after its streams are gone (elsewhere: nothing)."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def refuse(gr, error: PipelineError):
    """`error` as the page and the API get it (a `gr.Error`: the page's toast, the API's message), written as one
    line on the console instead of Gradio's traceback."""
    print(f"serve: refused a request: {error}", file=sys.stderr, flush=True)
    return gr.Error(str(error), print_exception=False)


def section(gr, app, streams: Streams) -> None:
    """The live fingerspelling section of `serve`'s page (call inside `app`, its `gr.Blocks`): its streams borrow
    their trackers from `streams`, and a closed tab's give theirs back at once."""
    rules = streams.rules

    def on_frame(frame, stream, request):
        if frame is None:
            return gr.skip(), gr.skip(), gr.skip(), stream
        try:
            stream, f = streams.step(stream, frame, time.monotonic(), request.session_hash or "")
        except PipelineError as e:
            raise refuse(gr, e) from None
        return shown_html(frame, f.points), reading(f, stream.speller), stream.speller.text, stream

    def on_unload(request):
        streams.end_session(request.session_hash or "")

    # Gradio passes the request to a parameter annotated with the class itself (this module's annotations are
    # strings, which it cannot resolve here)
    on_frame.__annotations__["request"] = on_unload.__annotations__["request"] = gr.Request

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
    stream = gr.State(None, delete_callback=streams.end)  # one LiveStream per browser session
    # A stream holds its event (its own queue, so it never holds up photo reads) for as long as it runs, and 30 s
    # after its last frame (Gradio's wait for the next one). Twice the cap: those holding a tracker, and as many
    # again to be refused at once (a refused stream's event ends); more wait in the queue.
    cam.stream(on_frame, [cam, stream], [drawn, letter, spelled, stream], stream_every=STREAM_EVERY,
               concurrency_limit=2 * streams.cap, show_progress="hidden", api_name=False)
    clear.click(on_clear, stream, [spelled, stream], api_name=False)
    app.unload(on_unload)


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
    if not text and no_hand < n:  # say why the text is empty (one photo: one frame, fewer than a letter needs)
        rules = stream.speller.rules
        log(f"note: nothing was spelled: in the {n} frame(s) read no letter was the top-1 at p >= "
            f"{rules.threshold:g} for {rules.min_frames} frame(s) and {rules.hold_s:g} s (--threshold, --min-frames, "
            f"--hold)")
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


def add_stream_arguments(p) -> None:
    """`serve`'s limits on live streams (hand models)."""
    p.add_argument("--max-streams", type=int, default=MAX_STREAMS, metavar="N",
                   help="hand models: live webcam streams served at once, a MediaPipe tracker each (~90 MB); more "
                        f"are refused (default {MAX_STREAMS})")
    p.add_argument("--stream-idle", type=float, default=STREAM_IDLE_S, metavar="SECONDS",
                   help="a live stream that sent no frame for this long gives its tracker back to the others "
                        f"(default {STREAM_IDLE_S:g})")


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
