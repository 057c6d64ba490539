"""Benchmark 7: `python -m pipeline serve` under load. For the image model and the hand-landmark model, a server
is started on 127.0.0.1; N concurrent clients each send one real photo R times, back to back, through Gradio's
HTTP API (upload the photo, call `predict`, read the result stream: what a browser does per photo), and the
script prints p50/p95 latency, requests/s and failed requests, at 1 client (the service time) and at N.

Target (2 cores): p95 < 250 ms at 8 concurrent clients for one photo, and no failed request.

The models are trained briefly on 10 real photos per letter of ../shared/data (what a request costs depends on
the architecture and the input size, not on how well it learned): the image model is the image recipe's
architecture at its size (tf_efficientnet_lite0, 200 px), the hand model `landmark_mlp` (each request runs
MediaPipe on the photo). `--image-learner/--hands-learner exports/RUN.pkl` serve existing exports instead.

    python -m bench.serve_load [--clients 8] [--requests 25] [--engine onnx|fastai|both]
                               [--parallel 1,2] [--server-cpus 1 --client-cpus 0]

`--oversized N` checks the body limit instead (bounded: N requests, each at most 60 s): on the image model's server
(fastai), N JSON calls of `--oversized-mb` (default 150) carrying a photo as a base64 data URL (what took a server
from 655 to 1,535 MB before the limit), then N just under the limit (30 MB, read in full and refused as no image),
then one real photo; the server's RSS at start, its peak, and 10 s after. Target: back within 300 MB of the start.

    python -m bench.serve_load --oversized 4 [--image-learner exports/RUN.pkl]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench._common import OUT, SHARED_DATA, env, header, pipeline_run, result, write_config

PHOTO = "B_test.jpg"  # asl_alphabet_test: a hand the detector finds
RECIPES = {
    "image": 'arch = "tf_efficientnet_lite0"\npretrained = true\nimage_size = 200\nepochs = 1\nbatch_size = 32\n',
    "hands": 'arch = "landmark_mlp"\npretrained = false\nepochs = 10\nbatch_size = 32\n',
}


def prepare(work: Path, names=tuple(RECIPES)) -> dict[str, Path]:
    """Train the models `names` (download, datablock, train) unless their exports exist; their `.pkl` paths."""
    out = {}
    for name, train in ((n, RECIPES[n]) for n in names):
        pkl = work / "exports" / f"load_{name}.pkl"
        if not pkl.exists():
            cfg = write_config(work / f"{name}.toml", f"load_{name}", SHARED_DATA / "asl_alphabet_train_200", f"""\
[datablock]
max_per_class = 10
valid_pct = 0.2
{'input = "landmarks"' if name == "hands" else ''}
[train]
method = "fit_one_cycle"
base_lr = 2e-3
{train}""")
            r = pipeline_run(["run", "--config", str(cfg), "--stages", "download,datablock,train"], cwd=work)
            print(f"trained {name} model in {r['seconds']:.0f}s")
        out[name] = pkl
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`python -m pipeline serve` in a subprocess on a free 127.0.0.1 port; a context manager that stops it."""

    def __init__(self, learner: Path, onnx: bool, log: Path, cpus: set[int] | None = None, parallel: int = 0,
                 extra: list[str] = ()):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = open(log, "w")
        args = ["serve", "--learner", str(learner), "--port", str(self.port), "--parallel", str(parallel), *extra]
        args += ["--engine", "onnx"] if onnx else []
        self.proc = subprocess.Popen([sys.executable, "-m", "pipeline", *args], env=env(), stdout=self._log,
                                     stderr=subprocess.STDOUT)
        if cpus:
            os.sched_setaffinity(self.proc.pid, cpus)  # before it imports torch/onnxruntime: they size their pools

    def __enter__(self):
        import httpx

        t0 = time.perf_counter()
        for _ in range(480):  # up to 4 minutes
            if self.proc.poll() is not None:
                raise SystemExit(f"serve exited with {self.proc.returncode}; see {self._log.name}")
            try:
                httpx.get(self.url + "/", timeout=5).raise_for_status()
                self.startup = time.perf_counter() - t0
                return self
            except httpx.HTTPError:
                time.sleep(0.5)
        raise SystemExit(f"serve did not answer at {self.url}; see {self._log.name}")

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def read_photo(client, url: str, photo: bytes) -> tuple[float, bool, str]:
    """One request as a browser makes it: upload, call `predict`, read the result stream. (seconds, ok, reading)."""
    t0 = time.perf_counter()
    try:
        up = client.post(f"{url}/gradio_api/upload", files={"files": (PHOTO, photo, "image/jpeg")})
        up.raise_for_status()
        data = {"data": [{"path": up.json()[0], "orig_name": PHOTO, "meta": {"_type": "gradio.FileData"}}]}
        call = client.post(f"{url}/gradio_api/call/predict", json=data)
        call.raise_for_status()
        stream = client.get(f"{url}/gradio_api/call/predict/{call.json()['event_id']}")
        stream.raise_for_status()
        event, reading = "", ""
        for line in stream.text.splitlines():
            if line.startswith("event: "):
                event = line[len("event: "):]
            elif line.startswith("data: ") and event == "complete":
                reading = json.loads(line[len("data: "):])[2]
        return time.perf_counter() - t0, event == "complete", reading
    except Exception as e:  # noqa: BLE001 - any failure of a request is counted, not raised
        return time.perf_counter() - t0, False, f"{type(e).__name__}: {e}"


def load(url: str, photo: bytes, clients: int, requests: int) -> dict:
    """`clients` threads, each with its own connection, sending `requests` photos back to back, started together."""
    import httpx

    times, failures, readings = [], [], set()
    lock, start = threading.Lock(), threading.Barrier(clients + 1)

    def client_loop():
        with httpx.Client(timeout=60) as client:
            start.wait()
            for _ in range(requests):
                seconds, ok, reading = read_photo(client, url, photo)
                with lock:
                    (times if ok else failures).append(seconds)
                    readings.add(reading)

    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    times.sort()
    pct = lambda q: 1000 * times[min(len(times) - 1, int(q * len(times)))] if times else float("nan")  # noqa: E731
    return {"p50": pct(0.5), "p95": pct(0.95), "mean": 1000 * statistics.fmean(times) if times else float("nan"),
            "rps": len(times) / wall, "ok": len(times), "failed": len(failures), "readings": sorted(readings)}


def rss_mb(pid: int) -> float:
    """The resident memory of process `pid`, MB (Linux: /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def data_url_call(url: str, size_mb: float) -> str:
    """One `predict` call whose photo is a base64 data URL of about `size_mb` MB: the answer's status, or the error
    that ended it (a server that refuses early may close the connection while the body is still being sent)."""
    import httpx

    payload = b"A" * (int(size_mb * 2**20) // 4 * 4)
    body = (b'{"data": [{"path": null, "url": "data:image/png;base64,' + payload
            + b'", "meta": {"_type": "gradio.FileData"}}]}')
    try:
        r = httpx.post(f"{url}/gradio_api/call/predict", content=body, headers={"content-type": "application/json"},
                       timeout=60)
    except httpx.HTTPError as e:
        return type(e).__name__
    if r.status_code == 200:  # queued: read its result stream, as a client would
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(f"{url}/gradio_api/call/predict/{r.json()['event_id']}", timeout=60)
    return str(r.status_code)


def oversized(learner: Path, work: Path, n: int, size_mb: float, cpus: set[int] | None) -> bool:
    """The body-limit check (`--oversized`): RSS at start, peak and 10 s after N oversized and N just-under calls."""
    photo = (SHARED_DATA / "asl_alphabet_test" / PHOTO).read_bytes()
    with Server(learner, False, work / "serve_oversized.log", cpus, 0) as server:
        for _ in range(3):
            read_photo_once(server.url, photo)
        pid, peak, stop = server.proc.pid, [0.0], threading.Event()

        def sample():
            while not stop.wait(0.05):
                peak[0] = max(peak[0], rss_mb(pid))

        start = rss_mb(pid)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t0 = time.perf_counter()
        over = [data_url_call(server.url, size_mb) for _ in range(n)]
        after_over, peak_over = rss_mb(pid), peak[0]
        under = [data_url_call(server.url, 30) for _ in range(n)]
        seconds = time.perf_counter() - t0
        read_photo_once(server.url, photo)
        time.sleep(10)
        stop.set()
        sampler.join()
        after = rss_mb(pid)
    print(f"{n} calls of {size_mb:g} MB: {', '.join(over)}; then {n} of 30 MB: {', '.join(under)} ({seconds:.1f} s "
          f"in all); then one photo read and 10 s")
    result("server RSS at start (after 3 photos)", round(start), "MB")
    result(f"server RSS peak during the {size_mb:g} MB calls", round(peak_over), "MB")
    result(f"server RSS after the {size_mb:g} MB calls", round(after_over), "MB")
    result("server RSS peak during the 30 MB calls", round(peak[0]), "MB")
    result("server RSS 10 s after the last call", round(after), "MB")
    met = after - start < 300 and all(code == "413" for code in over)
    result("RSS 10 s after - start", round(after - start), "MB", "< 300 MB, and every oversized call 413", met)
    return met


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=25, help="requests per client")
    ap.add_argument("--engine", choices=("onnx", "fastai", "both"), default="both")
    ap.add_argument("--image-learner", type=Path)
    ap.add_argument("--hands-learner", type=Path)
    ap.add_argument("--parallel", default="0", help="serve --parallel values to compare, e.g. 1,2 (hand models; "
                    "0 = serve's default)")
    ap.add_argument("--server-cpus", help="pin the server to these cores, e.g. 1 (default: as this process)")
    ap.add_argument("--client-cpus", help="pin the clients (this process) to these cores, e.g. 0")
    ap.add_argument("--oversized", type=int, default=0, metavar="N",
                    help="instead of the load: N oversized calls (and N just under the limit), the server's RSS")
    ap.add_argument("--oversized-mb", type=float, default=150)
    args = ap.parse_args()
    server_cpus = {int(c) for c in args.server_cpus.split(",")} if args.server_cpus else None
    if args.client_cpus:
        os.sched_setaffinity(0, {int(c) for c in args.client_cpus.split(",")})
    header(f"serve's body limit: {args.oversized} calls of {args.oversized_mb:g} MB" if args.oversized else
           f"serve under load: {args.clients} concurrent clients x {args.requests} requests, one photo each")
    print(f"server on core(s) {args.server_cpus or 'as this process'}, clients on core(s) "
          f"{args.client_cpus or 'as this process'}; load average before: {os.getloadavg()[0]:.2f}")
    if not SHARED_DATA.is_dir():
        raise SystemExit(f"needs the real photos in {SHARED_DATA}")
    work = OUT / "serve_load"
    work.mkdir(parents=True, exist_ok=True)
    if args.oversized:
        learner = args.image_learner or prepare(work, ["image"])["image"]
        return 0 if oversized(learner, work, args.oversized, args.oversized_mb, server_cpus) else 1
    learners = prepare(work) if not (args.image_learner and args.hands_learner) else {}
    learners.update({k: v for k, v in (("image", args.image_learner), ("hands", args.hands_learner)) if v})
    photo = (SHARED_DATA / "asl_alphabet_test" / PHOTO).read_bytes()
    engines = ("onnx", "fastai") if args.engine == "both" else (args.engine,)
    rows, ok = [], True
    for name, learner in learners.items():
        for engine in engines:
            for parallel in [int(p) for p in args.parallel.split(",")] if name == "hands" else [0]:
                log = work / f"serve_{name}_{engine}_{parallel}.log"
                with Server(learner, engine == "onnx", log, server_cpus, parallel) as server:
                    for _ in range(3):  # warm-up: first-call allocations, MediaPipe's graph start
                        read_photo_once(server.url, photo)
                    one = load(server.url, photo, 1, max(10, args.requests // 2))
                    many = load(server.url, photo, args.clients, args.requests)
                at_once = log.read_text().split(" photo(s) at once")[0].rsplit(", ", 1)[-1]
                rows.append((name, engine, at_once, server.startup, one, many))
                met = many["p95"] < 250 and many["failed"] == 0
                ok &= met
                result(f"{name} model, {engine}, {at_once} at once: p95 at {args.clients} clients", many["p95"], "ms",
                       "< 250 ms and no failed request", met)
    print()
    print(f"| model | engine | photos at once | server start, s | 1 client p50, ms | {args.clients} clients p50, ms | "
          f"{args.clients} clients p95, ms | requests/s | failed | reading |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for name, engine, at_once, startup, one, many in rows:
        print(f"| {name} | {engine} | {at_once} | {startup:.1f} | {one['p50']:.0f} | {many['p50']:.0f} | {many['p95']:.0f} | "
              f"{many['rps']:.1f} | {many['failed']} of {many['ok'] + many['failed']} | "
              f"{', '.join(many['readings'])} |")
    return 0 if ok else 1


def read_photo_once(url: str, photo: bytes) -> None:
    import httpx

    with httpx.Client(timeout=120) as client:
        seconds, ok, reading = read_photo(client, url, photo)
    if not ok:
        raise SystemExit(f"the warm-up request failed: {reading}")


if __name__ == "__main__":
    sys.exit(main())
