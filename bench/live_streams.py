"""Benchmark 9: `serve`'s live streams under abuse. A server with a hand model is started on 127.0.0.1 (its limits:
`serve --max-streams`, `--stream-idle`); `--sessions` clients (default 50), a few at a time, each open a live stream
as any HTTP client can (Gradio's `queue/join` on the stream's event, a new session, one uploaded frame) and then
abandon it. The script prints how many were served and how many refused (with the message), the server process's
RSS and thread count at start, at their peak and once the streams are idle, and whether one more session is served
afterwards. It stops by itself (every request has a timeout; the server is stopped).

Targets: at most `--max-streams` sessions served while the others hold their trackers, every other one refused in one
line; after the idle time, the thread count back to its start (+2) and RSS within 120 MB per stream of the cap of its
start; the next session served.

The model is bench/live.py's (`landmark_mlp` on 10 Massey photos per class), or `--learner exports/RUN.pkl`.

    nice -n 5 python -m bench.live_streams [--sessions 50] [--max-streams 4] [--stream-idle 15] [--at-once 10]
"""
from __future__ import annotations

import argparse
import concurrent.futures
import io
import sys
import time
from pathlib import Path

from bench._common import OUT, SHARED_DATA, header, result
from tests.helpers import open_stream, process_figures, stream_event

GRADIO_STREAM_WAIT_S = 30  # Gradio keeps a stream's event waiting this long for its next frame


def hand_frame() -> bytes:
    """A 640x480 JPEG with a Massey photo of L in the middle, as a webcam frame."""
    import numpy as np
    from PIL import Image

    from pipeline.data import hands

    frame = np.zeros((480, 640, 3), np.uint8)
    frame[40:440, 120:520] = hands.load_rgb(sorted((SHARED_DATA / "massey_asl" / "l").glob("*.jpeg"))[8])
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def main() -> int:
    from bench import live
    from bench.serve_load import Server

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=50)
    ap.add_argument("--max-streams", type=int, default=4)
    ap.add_argument("--stream-idle", type=float, default=15.0)
    ap.add_argument("--at-once", type=int, default=10, help="sessions opened at the same time")
    ap.add_argument("--learner", type=Path)
    args = ap.parse_args()
    header(f"live streams under abuse: {args.sessions} one-frame sessions, {args.at_once} at once, "
           f"serve --max-streams {args.max_streams} --stream-idle {args.stream_idle:g}")
    if not SHARED_DATA.is_dir():
        raise SystemExit(f"needs the real photos in {SHARED_DATA}")
    work = OUT / "live"
    work.mkdir(parents=True, exist_ok=True)
    learner = args.learner or live.prepare(work)
    jpeg = hand_frame()
    with Server(learner, False, work / "live_streams.log", parallel=1,
                extra=["--max-streams", str(args.max_streams), "--stream-idle", str(args.stream_idle)]) as server:
        pid, event = server.proc.pid, stream_event(server.url)
        time.sleep(2)
        start = process_figures(pid)
        peak = list(start)
        outcomes = []
        with concurrent.futures.ThreadPoolExecutor(args.at_once) as pool:
            jobs = [pool.submit(open_stream, server.url, event, jpeg) for _ in range(args.sessions)]
            while not all(j.done() for j in jobs):
                rss, threads = process_figures(pid)
                peak = [max(peak[0], rss), max(peak[1], threads)]
                time.sleep(0.2)
            outcomes = [j.result() for j in jobs]
        # the streams' trackers go back after --stream-idle, Gradio's waits end after its own 30 s, and the
        # worker threads that served them after 10 s more
        settle = max(2 * args.stream_idle + args.stream_idle / 3, GRADIO_STREAM_WAIT_S) + 15
        time.sleep(settle)
        after = process_figures(pid)
        one_more = open_stream(server.url, event, jpeg)
        time.sleep(0.5)
        after_one = process_figures(pid)
    served = [o for o in outcomes if o[0] == "served"]
    refused = [o for o in outcomes if o[0] == "refused"]
    failed = [o for o in outcomes if o[0] == "failed"]
    print(f"sessions: {len(served)} served, {len(refused)} refused, {len(failed)} failed")
    for kind, rows in (("refused", refused), ("failed", failed)):
        for message in sorted({m for _, m in rows}):
            print(f"  {kind}: {message!r} x{sum(1 for _, m in rows if m == message)}")
    print(f"one more session {settle:.0f} s later: {one_more[0]} ({one_more[1]!r})")
    print()
    print("| server process | RSS, MB | threads |")
    print("|---|---:|---:|")
    for name, (rss, threads) in (("at start", start), (f"peak during the {args.sessions} sessions", peak),
                                 (f"{settle:.0f} s after", after), ("after one more session", after_one)):
        print(f"| {name} | {rss:.0f} | {threads} |")
    print()
    bound = len(served) <= args.max_streams and len(served) + len(refused) == args.sessions
    result("sessions served while the others hold the cap", len(served), "", f"<= {args.max_streams}, the others "
           "refused", bound)
    ok_threads = after[1] <= start[1] + 2
    result("threads once idle, over the start", after[1] - start[1], "", "<= 2", ok_threads)
    ok_rss = after[0] - start[0] <= 120 * args.max_streams
    result("RSS once idle, over the start", after[0] - start[0], "MB", f"<= {120 * args.max_streams} MB", ok_rss)
    result("one more session once idle", one_more[0], "", "served", one_more[0] == "served")
    return 0 if bound and ok_threads and ok_rss and one_more[0] == "served" else 1


if __name__ == "__main__":
    sys.exit(main())
