"""Benchmark: the near-copy threshold (`data.leakage.NEAR`) chosen on real data, and what the check costs.

For each validation photo, the Hamming distance (of 64 bits) of its perceptual hash to the nearest training photo's:
- within one signer: the grassknoted sample (one signer, one room, video frames), split at random as the seeds do
  (valid_pct 0.2, seed 42): the leaky case;
- across signers: Massey's letters split by signer (each signer's photos against the other four's): the honest case;
  and Massey split at random, for comparison (one signer's photos on both sides).
Prints the histogram of those distances side by side, the share at or under the threshold in each setting, the
cost of hashing (cold, and read back from the store) and of the nearest search, per photo; writes the histogram as
bench/out/leakage_hist.png.

    python -m bench.leakage
"""
from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

from bench._common import OUT, SHARED_DATA, result


def _photos(root: Path, pattern: str = "*/*.jp*g") -> list[Path]:
    return sorted(p for p in root.glob(pattern) if p.is_file())


def main() -> None:
    import numpy as np

    from pipeline.data import leakage, splitting

    print("# near-copies across a split: within one signer against across signers")
    grass = _photos(SHARED_DATA / "asl_alphabet_train_200")
    massey = [p for p in _photos(SHARED_DATA / "massey_asl") if p.parent.name.isalpha()]  # the letters
    store = OUT / "leakage_store"
    shutil.rmtree(store, ignore_errors=True)
    t0 = time.perf_counter()
    hg = leakage.hashes(grass, store, log=lambda *_: None)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    hm = leakage.hashes(massey, store, log=lambda *_: None)
    cold_massey = time.perf_counter() - t0
    t0 = time.perf_counter()
    leakage.hashes(grass, store, log=lambda *_: None)
    warm = time.perf_counter() - t0
    result("hash, cold (decode + DCT + store)", 1000 * cold / len(grass), "ms/photo", f"{len(grass)} grassknoted photos")
    result("hash, read back from the store", 1000 * warm / len(grass), "ms/photo")

    valid = splitting.random_split(len(grass), 0.2, 42)
    vi = np.array(sorted(valid))
    ti = np.array([i for i in range(len(grass)) if i not in valid])
    t0 = time.perf_counter()
    _, within = leakage.nearest(hg[vi], hg[ti])
    result("nearest search", 1000 * (time.perf_counter() - t0), "ms", f"{len(vi)} × {len(ti)} hashes")

    signer = np.array([re.match(r"(hand\d+)_", p.name).group(1) for p in massey])
    across = np.concatenate([leakage.nearest(hm[signer == s], hm[signer != s])[1] for s in sorted(set(signer))])
    valid_m = splitting.random_split(len(massey), 0.2, 42)
    vm = np.array(sorted(valid_m))
    tm = np.array([i for i in range(len(massey)) if i not in valid_m])
    massey_random = leakage.nearest(hm[vm], hm[tm])[1]
    # Massey split by signer as datablock's group split does it (valid_pct 0.2, seed 42)
    groups = splitting.group_split(list(signer), 0.2, 42)
    gv = np.isin(signer, list(groups))
    massey_group = leakage.nearest(hm[gv], hm[~gv])[1]

    # the cost on asl_multi's 9,343 photos (grassknoted, Massey's letters, Roboflow): datablock hashes each photo
    # once (cold) or reads it back (every later run, every crossval fold), evaluate reads the training photos' back
    rob = sorted(p for p in (SHARED_DATA / "asl_letters_roboflow").glob("*/*.jpg"))
    every = grass + massey + rob
    t0 = time.perf_counter()
    leakage.hashes(rob, store, log=lambda *_: None)
    cold_all = cold + cold_massey + time.perf_counter() - t0
    t0 = time.perf_counter()
    h_all = leakage.hashes(every, store, log=lambda *_: None)
    warm_all = time.perf_counter() - t0
    t0 = time.perf_counter()
    leakage.nearest(h_all[: len(every) // 20], h_all[len(every) // 20:])  # monitor's 5 % against the rest
    search = time.perf_counter() - t0
    run_s, fold_s = 227.0, 300.0 / 7  # docs/signers.md: a whole asl_multi run from empty stores on 2 cores; a warm fold
    result("asl_multi, first run: hash every photo + search", cold_all + search, "s",
           f"{len(every)} photos; {100 * (cold_all + search) / run_s:.1f} % of the {run_s:.0f} s run on 2 cores "
           f"(this figure on {len(os.sched_getaffinity(0))} core(s))")
    result("asl_multi, warm run or crossval fold: read back twice (datablock, evaluate) + search", 2 * warm_all + search,
           "s", f"{100 * (2 * warm_all + search) / fold_s:.1f} % of a warm fold ({fold_s:.0f} s)")
    print(f"\nnearest distance (bits of 64) | grassknoted random | Massey by signer (each vs the rest) | Massey random")
    for lo in range(0, 40, 2):
        cnt = [int(((d >= lo) & (d < lo + 2)).sum()) for d in (within, across, massey_random)]
        print(f"{lo:2d}-{lo + 1:2d} | {cnt[0]:5d} | {cnt[1]:5d} | {cnt[2]:5d}")
    print(f"≥40   | {int((within >= 40).sum()):5d} | {int((across >= 40).sum()):5d} | {int((massey_random >= 40).sum()):5d}")
    print()
    for name, d in (("grassknoted, random split (one signer)", within),
                    ("Massey, each signer against the other four", across),
                    (f"Massey, group split (valid {', '.join(sorted(groups))})", massey_group),
                    ("Massey, random split (every signer on both sides)", massey_random)):
        result(f"share ≤ {leakage.NEAR}: {name}", float((d <= leakage.NEAR).mean()), "",
               f"{len(d)} photos, median distance {np.median(d):.0f}")
    test = sorted((SHARED_DATA / "asl_alphabet_test").glob("*.jpg"))
    test_d = leakage.nearest(leakage.hashes(test, store, log=lambda *_: None), hg)[1]
    result(f"share ≤ {leakage.NEAR}: grassknoted's own test photos against its training sample", float((test_d <= leakage.NEAR).mean()),
           "", f"{len(test)} photos, distances {sorted(test_d.tolist())}")
    cross = leakage.nearest(hm, hg)[1]
    result(f"share ≤ {leakage.NEAR}: Massey's letters against grassknoted (another source)", float((cross <= leakage.NEAR).mean()),
           "", f"median distance {np.median(cross):.0f}")
    for t in (2, 4, 6, 8, 10):
        print(f"threshold {t:2d}: grassknoted random {(within <= t).mean():.1%}, Massey across signers "
              f"{(across <= t).mean():.1%}, Massey random {(massey_random <= t).mean():.1%}")
    from pipeline.core.workspace import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    bins = np.arange(0, 42, 1)
    for d, label in ((within, "grassknoted random split (within one signer)"),
                     (across, "Massey, each signer vs the others (across signers)"),
                     (massey_random, "Massey random split")):
        ax.hist(np.minimum(d, 41), bins=bins, histtype="step", density=True, label=label)
    ax.axvline(leakage.NEAR + 0.5, color="black", linestyle="--", linewidth=1, label=f"NEAR = {leakage.NEAR}")
    ax.set(xlabel="nearest training photo: Hamming distance (bits of 64)", ylabel="share of photos")
    ax.legend(fontsize=7)
    OUT.mkdir(parents=True, exist_ok=True)
    print("histogram:", save_figure(fig, OUT / "leakage_hist.png"))


if __name__ == "__main__":
    main()
