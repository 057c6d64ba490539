"""Benchmark: MediaPipe's hand network as a frozen embedding (pipeline/kinds/hand_net/data.py), milliseconds per photo on
one core: the upright crop (decode + rotate + resize) and the network (LiteRT, one photo at a time), each the median
over `--photos` real photos whose hands MediaPipe found first (not timed: the keypoint store holds them in a run).
Target: <= 30 ms a photo for crop + network.

    OMP_NUM_THREADS=1 taskset -c 0 python -m bench.hand_net [--photos 60]
"""
from __future__ import annotations

import argparse
import statistics
import time

from bench._common import SHARED_DATA, header, result

TARGET_MS = 30.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=60)
    args = parser.parse_args()
    from pipeline.data import hands
    from pipeline.kinds.hand_net import data as hand_net

    header("hand network embedding, one core")
    photos = sorted((SHARED_DATA / "massey_asl").rglob("*.jpeg"))[::37] + sorted(
        (SHARED_DATA / "asl_alphabet_train_200").rglob("*.jpg"))[::97]
    detector = hands.Detector()
    try:
        found = [(p, r) for p in photos[:2 * args.photos] if (r := hands.detection(str(p), detector))[0]][:args.photos]
    finally:
        detector.close()
    net = hand_net.network()
    net(hand_net.crop(*found[0]))  # the interpreter's first run prepares its kernels: not timed
    crop_ms, net_ms = [], []
    for path, det in found:
        t0 = time.perf_counter()
        x = hand_net.crop(path, det)
        t1 = time.perf_counter()
        net(x)
        t2 = time.perf_counter()
        crop_ms.append(1000 * (t1 - t0))
        net_ms.append(1000 * (t2 - t1))
    total = [a + b for a, b in zip(crop_ms, net_ms)]
    result("photos", len(found))
    result("crop ms/photo (median)", statistics.median(crop_ms), "ms")
    result("network ms/photo (median)", statistics.median(net_ms), "ms")
    result("crop + network ms/photo (median)", statistics.median(total), "ms", f"<= {TARGET_MS:g} ms",
           ok=statistics.median(total) <= TARGET_MS)
    result("crop + network ms/photo (p95)", sorted(total)[int(0.95 * (len(total) - 1))], "ms")


if __name__ == "__main__":
    main()
