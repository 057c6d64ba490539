"""What a still-frame hand-landmark model does with J and Z, the two motion letters (docs/live.md, "Limits").

A `landmark_mlp` is trained on the keypoints of 40 grassknoted photos per class (all 29, 3D turns of up to 15
degrees, 20 epochs); then its top-1 is counted on the J and Z photos of other signers: Roboflow's (valid and test,
still frames caught in the motion) and Massey's, and on grassknoted's own test J and Z.

    nice -n 5 OMP_NUM_THREADS=1 taskset -c 1 python -m research.motion_letters
"""
from __future__ import annotations

import collections
import re
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

from bench._common import OUT, SHARED_DATA, header


def main() -> int:
    import numpy as np
    import pandas as pd

    from pipeline import config
    from pipeline.data import hands
    from pipeline.models import training
    from pipeline.kinds.shared import model as shared_model
    from pipeline.kinds.landmarks import model as landmark_model
    from pipeline import kinds

    warnings.filterwarnings("ignore")
    header("J and Z through a still-frame hand-landmark model")
    data = SHARED_DATA
    classes = sorted(p.name for p in (data / "asl_alphabet_train_200").iterdir() if p.is_dir())
    train = [(c, p) for c in classes for p in sorted((data / "asl_alphabet_train_200" / c).glob("*.jpg"))[:40]]
    feats = hands.extract([p for _, p in train], log=print, workers=1)
    split = pd.DataFrame([(str(p), c, i % 5 == 0) for i, (c, p) in enumerate(train)],
                         columns=["path", "label", "is_valid"])
    feats.insert(0, "path", split["path"])
    work = OUT / "motion_letters"
    work.mkdir(parents=True, exist_ok=True)
    cfg = config.load(None, cwd=work, overrides=["datablock.input=landmarks", "train.arch=landmark_mlp",
                                                  "datablock.cache=false", "train.landmark_rotate=15"])
    learn = kinds.of(cfg).make_learner(shared_model.dataloaders(split, feats, classes, batch_size=32), cfg,
                                      SimpleNamespace(scratch=work))
    with training.quiet(learn):
        learn.fit_one_cycle(20, 3e-3)
    print(f"validation accuracy (grassknoted): {float(learn.validate()[2]):.1%}")
    roboflow = sorted(p for s in ("valid", "test") for p in (data / "asl_letters_roboflow" / s).glob("*.jpg")
                      if re.match(r"^[JZ]\d", p.name))
    sets = {"grassknoted test": [(c, data / "asl_alphabet_test" / f"{c}_test.jpg") for c in "JZ"],
            "roboflow": [(p.name[0], p) for p in roboflow],
            "massey": [(c.upper(), p) for c in "jz" for p in sorted((data / "massey_asl" / c).glob("*.jpeg"))]}
    print("| photos | letter | n | read as (count) | median p |")
    print("|---|---|---:|---|---:|")
    for name, items in sets.items():
        probs, found = landmark_model.photo_probs(learn, [p for _, p in items], log=lambda m: None)
        for letter in "JZ":
            idx = [i for i, (c, _) in enumerate(items) if c == letter]
            read = collections.Counter(classes[int(probs[i].argmax())] if found[i] else "no hand" for i in idx)
            conf = [float(probs[i].max()) for i in idx if found[i]]
            print(f"| {name} | {letter} | {len(idx)} | {', '.join(f'{k} {v}' for k, v in read.most_common(5))} | "
                  f"{np.median(conf):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
