"""Hand crops as model input (pipeline/kinds/hand_crop/, hand_fused/): the crop box,
the families' config checks, and on real photos the stores, the no-hand list, both families and their exports
(a fresh process's `load_learner(pkl).predict(photo)`, `kinds.load(...).predict` under both engines)."""
import json
import subprocess
import sys

import pandas as pd
import pytest

from pipeline import runner
from pipeline.core import artifacts
from pipeline.core.errors import PipelineError
from pipeline.data import hands
from pipeline.kinds.hand_crop import data as hand_crops
from pipeline import kinds
from tests.conftest import asl_photos, subprocess_env, tiny_config


def _detection(xs, ys):
    """A `hands.detection` detection whose 21 keypoints lie at (xs[i], ys[i]) in the padded square."""
    pts = [(xs[i % len(xs)], ys[i % len(ys)], 0.0) for i in range(hands.N_POINTS)]
    return [True, "Left", 0.9] + [v for p in pts for v in p]


def test_the_box_is_a_padded_square_around_the_keypoints():
    w, h = 200, 100
    side, top, left = hands.padding(h, w)  # the square MediaPipe looked in, the photo centred on it
    # keypoints spanning photo pixels x 50..90, y 40..60: a 40-pixel square around (70, 50), padded
    det = _detection([(50 + left) / side, (90 + left) / side], [(40 + top) / side, (60 + top) / side])
    l, t, r, b = hand_crops.box(det, w, h)
    half = 40 * (1 + 2 * hand_crops.PAD) / 2
    assert (l, t, r, b) == pytest.approx((70 - half, 50 - half, 70 + half, 50 + half), abs=1e-6)
    thin = hand_crops.box(_detection([(70 + left) / side], [(40 + top) / side, (60 + top) / side]), w, h)
    assert thin[2] - thin[0] == pytest.approx(thin[3] - thin[1])  # a hand seen edge-on still gets a square


def test_the_features_of_a_detection_are_those_of_its_keypoints():
    import random

    rng = random.Random(0)
    points = [[rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(-0.1, 0.1)] for _ in range(hands.N_POINTS)]
    det = [True, "Left", 0.9] + [v for q in points for v in q]
    assert hands.features_row(det)[3:] == pytest.approx(list(hands.canonical(points, "Left")))
    assert hands.features_row(hands.no_detection()) == [False, "", 0.0] + [0.0] * len(hands.FEATURES)
    assert hands.keypoints(det) == points and hands.is_detection(hands.no_detection())


@pytest.mark.parametrize("overrides, expected", [
    ({"datablock.input": "hand_crop", "train.arch": "resnet18"}, kinds.HandCrop),
    ({"datablock.input": "hand_crop", "train.arch": "hand_fused"}, kinds.HandFused),
    ({"datablock.input": "images", "train.arch": "resnet18"}, kinds.Images),
])
def test_a_backbone_on_hand_crops_is_the_crop_family(tmp_path, overrides, expected):
    cfg = tiny_config(tmp_path, overrides)
    assert type(kinds.of(cfg)) is expected
    assert kinds.reading(kinds.of(cfg).input).input == kinds.of(cfg).input


@pytest.mark.parametrize("overrides, message", [
    ({"datablock.input": "hand_crop", "train.arch": "landmark_mlp"}, "do not go together"),
    ({"datablock.input": "images", "train.arch": "hand_fused"}, "do not go together"),
    ({"datablock.input": "hand_crop", "train.arch": "hand_fused", "train.crop_fusion": "late"}, "crop_fusion"),
    ({"datablock.input": "hand_crop", "train.arch": "resnet18", "datablock.cache": True}, "datablock.cache"),
    ({"datablock.input": "hand_crop", "train.arch": "resnet18", "evaluate.tta": 2}, "evaluate.tta"),
])
def test_hand_crop_configs_are_checked(tmp_path, overrides, message):
    """The config's own checks, then the kinds' (`kinds.check`, which a run makes before any stage starts)."""
    with pytest.raises(PipelineError, match=message):
        kinds.check(tiny_config(tmp_path, overrides))


def test_the_crop_card_says_how_to_crop():
    crop = kinds.reading("hand_crop")
    fields = crop.card_fields(type("T", (), {"image_size": 64})())
    assert fields["image_size"] == 64 and fields["hand_crop"]["size"] == 64 and fields["hand_crop"]["pad"] == hand_crops.PAD
    assert crop.card_problem(fields) is None
    assert crop.card_problem({**fields, "hand_crop": None})[0] == "hand_crop"


_USE = ("import sys, warnings\n"
        "from fastai.learner import load_learner\n"
        "from pipeline import kinds\n"
        "pkl, photos = sys.argv[1], sys.argv[2:]\n"
        "learn = load_learner(pkl)\n"
        "for photo in photos:\n"
        "    with warnings.catch_warnings(record=True) as seen:\n"
        "        warnings.simplefilter('always')\n"
        "        label, idx, probs = learn.predict(photo)\n"
        "    no_hand = any('no hand found' in str(w.message) for w in seen)\n"
        "    print('answer', label, len(probs), round(float(probs.sum()), 3), no_hand)\n"
        "for engine in ('fastai', 'onnx'):\n"
        "    p = kinds.load(pkl, engine=engine).predict(photos, log=lambda m: None)\n"
        "    print('loaded', engine, *p.labels, *p.hand_found)\n"
        "    e = kinds.load(pkl, engine=engine)\n"
        "    read = [e.read(photo, e.detector()) for photo in photos]\n"
        "    print('read', engine, *[len(p) if p is not None else None for p, _ in read], *[k is not None for _, k in read])\n")


def _answers(tmp_path, pkl, photos) -> tuple[list, dict]:
    """A fresh process's answers for `photos`: `load_learner(pkl).predict` (label, n probs, their sum, no-hand
    warned) each, and `kinds.load(pkl, engine).predict`'s labels and hand found, by engine."""
    script = tmp_path / "use.py"
    script.write_text(_USE)
    done = subprocess.run([sys.executable, str(script), str(pkl), *map(str, photos)], capture_output=True, text=True,
                          env=subprocess_env(), cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line.split() for line in done.stdout.splitlines() if line.split()]
    read = {x[0]: x[1:] for k, *x in lines if k == "read"}
    assert read and all(r == ["28", "None", "True", "False"] for r in read.values()), read  # serve's one photo
    return [x for k, *x in lines if k == "answer"], {x[0]: x[1:] for k, *x in lines if k == "loaded"}


@pytest.mark.slow
@pytest.mark.shared_data
def test_crop_families_on_real_photos(tmp_path, shared_data, monkeypatch):
    """1 photo a letter: the photos with no hand (grassknoted's `nothing`) are listed, not trained on; a second run
    (another family, as a crossval fold would) finds every hand and crop in the stores, and its train reuses the
    embeddings its lr_find computed; both exports answer a photo in a fresh process, say when a photo has no hand,
    and both ONNX graphs (the fused one reads the crop and the keypoints) agree with fastai."""
    pytest.importorskip("mediapipe", reason="the [hands] extra is not installed")
    from PIL import Image

    from pipeline.kinds.hand_fused import embeddings

    base = {**asl_photos(shared_data, 2, "test28"), "datablock.input": "hand_crop", "train.image_size": 32,
            "train.batch_size": 8, "train.base_lr": 1e-3, "train.epochs": 1}
    cfg = tiny_config(tmp_path, {**base, "run.name": "crop", "train.arch": "tf_efficientnet_lite0",
                                 "train.pretrained": True, "train.method": "fine_tune", "train.augment": True})
    runner.run(cfg, list(runner.STAGE_NAMES))
    out = tmp_path / "runs" / "crop"
    no_hand = pd.read_csv(out / "datablock" / artifacts.NO_HAND)
    split = pd.read_csv(out / "datablock" / artifacts.SPLITS)
    assert (no_hand["label"] == "nothing").sum() == 2 and not set(no_hand["path"]) & set(split["path"])
    meta = json.loads((out / "datablock" / artifacts.VOCAB).read_text())
    assert len(split) + len(no_hand) == 58 and meta["n_no_hand"] == len(no_hand) and "nothing" not in meta["vocab"]
    card = json.loads((tmp_path / "exports" / "crop.json").read_text())
    assert card["family"] == "hand-crop image backbone" and card["image_size"] == 32
    assert card["hand_crop"]["size"] == 32 and card["onnx"]["family"] == "hand_crop"
    assert card["onnx"]["parity"]["top1_agreement"] == 1.0

    looked, cropped = [], []
    find, crop = hands.batch.find, hand_crops.crop
    monkeypatch.setattr(hands.batch, "find", lambda paths, *a, **k: looked.extend(paths) or find(paths, *a, **k))
    monkeypatch.setattr(hand_crops, "crop", lambda *a: cropped.append(a[0]) or crop(*a))
    fused = tiny_config(tmp_path, {**base, "run.name": "fused", "train.arch": "hand_fused",
                                   "train.crop_fusion": "keypoints", "train.method": "fit_one_cycle"})
    runner.run(fused, ["download", "datablock", "lr_find", "train"])
    assert looked == [] and cropped == []  # every photo's hand and crop came from the stores
    assert embeddings.embed.computed == 0  # train found the embeddings lr_find computed
    runner.run(fused, ["evaluate"])  # through kinds.load: the fused learner answers photos itself
    scored = json.loads((tmp_path / "runs" / "fused" / "evaluate" / "test28" / artifacts.METRICS).read_text())
    assert scored["scored"] == 27  # asl_alphabet_test's letters the model knows (no `nothing`: it had no hand)
    fused_card = json.loads((tmp_path / "exports" / "fused.json").read_text())
    assert fused_card["family"] == "hand-crop embedding head" and fused_card["onnx"]["parity"]["top1_agreement"] == 1.0
    assert fused_card["onnx"]["input"]["name"] == "crop" and fused_card["onnx"]["features"]["name"] == "features"

    gray = tmp_path / "gray.png"
    Image.new("RGB", (96, 96), "gray").save(gray)
    photo = shared_data / "asl_alphabet_test" / "B_test.jpg"
    for name in ("crop", "fused"):
        answers, loaded = _answers(tmp_path, tmp_path / "exports" / f"{name}.pkl", [photo, gray])
        assert [(n, total, no) for _, n, total, no in answers] == [("28", "1.0", "False"), ("28", "1.0", "True")]
        assert loaded["fastai"][2:] == ["True", "False"]  # hand found in the photo, none in the gray square
        assert loaded["fastai"][0] == answers[0][0]  # the loader's label is load_learner's
        assert loaded["onnx"] == loaded["fastai"]


def _synthetic_fused(tmp_path, monkeypatch, fusion: str):
    """A hand_fused learner through its kind's `dataloaders` and `make_learner`, over 24 synthetic crops
    and keypoint rows, with a tiny conv body standing in for the timm backbone (no weights to fetch); the
    embeddings go through the real store. Returns (learner, config)."""
    import numpy as np
    import torch
    from PIL import Image
    from torch import nn

    from pipeline.core.workspace import Workspace
    from pipeline.kinds.hand_fused import embeddings

    rng = np.random.default_rng(0)
    cfg = tiny_config(tmp_path, {"datablock.input": "hand_crop", "train.arch": "hand_fused", "train.crop_fusion": fusion,
                                 "train.image_size": 16, "train.batch_size": 4, "train.pretrained": False})
    ws = Workspace.from_config(cfg)
    files = [f"/photos/{i}.jpg" for i in range(24)]
    df = pd.DataFrame({"file": files, "path": files, "label": [("A", "B", "C")[i % 3] for i in range(24)],
                       "is_valid": [i % 4 == 0 for i in range(24)]})
    crops = {f: hand_crops.png(Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))) for f in files}
    feats = rng.normal(size=(24, len(hands.FEATURES))).astype(np.float32)
    torch.manual_seed(0)
    body = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    monkeypatch.setattr(hand_crops, "split_crops", lambda ws, bs, size: (df, crops, ["A", "B", "C"]))
    monkeypatch.setattr(embeddings, "body", lambda *a: (body, {"mean": [0.485, 0.456, 0.406],
                                                               "std": [0.229, 0.224, 0.225]}))
    monkeypatch.setattr(embeddings, "keypoint_features", lambda ws, df: feats)
    kind = kinds.of(cfg)
    dls = kind.dataloaders(ws, cfg)
    learn = kind.make_learner(dls, cfg, ws)
    with learn.no_bar(), learn.no_logging():
        learn.fit(1, 1e-2)  # batch-norm statistics of its own, as a trained head has
    return learn, cfg


@pytest.mark.parametrize("fusion", ["keypoints", "none"])
def test_the_fused_onnx_graph_reads_the_crop_and_the_keypoints_by_name(tmp_path, monkeypatch, fusion):
    """hand_fused exports one ONNX graph: a uint8 `crop`, and `features` when it fuses the keypoints, parity
    checked on the validation crops; a frame read through it (the client's steps: crop, keypoint rows) gives the
    fastai export's probabilities."""
    import numpy as np

    from pipeline.models import card, exported, onnx_engine
    from pipeline import kinds

    learn, cfg = _synthetic_fused(tmp_path, monkeypatch, fusion)
    kind = kinds.input_of(learn)
    entry = kind.export_onnx(learn, tmp_path / "f.onnx", cfg.train, log=lambda m: None)
    assert entry["file"] == "f.onnx" and entry["family"] == "hand_crop" and kind is kinds.of(cfg)
    assert entry["parity"]["items"] == 6 and entry["parity"]["top1_agreement"] == 1.0
    assert entry["input"]["name"] == "crop" and entry["input"]["shape"] == ["batch", 16, 16, 3]
    graph_inputs = {i.name: i.shape for i in onnx_engine.session(tmp_path / "f.onnx").get_inputs()}
    names = list(graph_inputs)
    assert names == (["crop", "features"] if fusion == "keypoints" else ["crop"])
    assert ("features" in entry) == (fusion == "keypoints")

    meta = {"vocab": ["A", "B", "C"], "image_size": 16, "onnx": entry}
    onnx = onnx_engine.OnnxModel(tmp_path / "f.onnx", meta)
    card.check_graph(tmp_path / "f.pkl", meta, graph_inputs, 3)
    frame = np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    # a hand's 21 keypoints, not on one line (collinear ones leave the palm's normal to float rounding)
    points = np.random.default_rng(2).uniform([0.3, 0.3, -0.1], [0.7, 0.7, 0.0], (21, 3)).tolist()
    detector = lambda photo: (points, "Left", 0.9)  # noqa: E731  (MediaPipe's answer for the frame)
    p_onnx, seen = kind.read(onnx, frame, detector)
    p_fastai, _ = kind.read(exported.FastaiEngine(learn), frame, detector)
    assert seen == points and np.abs(p_onnx - p_fastai).max() < 1e-4 and p_onnx.argmax() == p_fastai.argmax()
    if fusion == "keypoints":
        with pytest.raises(PipelineError, match="also reads keypoint features"):
            onnx.probs(np.zeros((1, 16, 16, 3), np.uint8))
        with pytest.raises(PipelineError, match="onnx.features.name"):
            card.check_graph(tmp_path / "f.pkl", {**meta, "onnx": {**entry, "features": {"name": "keypoints"}}},
                             graph_inputs, 3)


def test_a_fused_learner_reads_frames_in_prediction_batches(monkeypatch):
    """`FusedLearner.crop_probs` (a frame under fastai) runs its model `card.BATCH` crops at a time: it passed the width
    of a keypoint row (`hands.N_FEATURES`) as the batch size, which only happened to equal it."""
    import torch
    from PIL import Image
    from torch import nn

    from pipeline.kinds.hand_fused import model as fused_model

    monkeypatch.setattr(fused_model, "BATCH", 3)
    net = fused_model.FusedNet(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()), 3, True, 2, 0.0)
    learn = fused_model.FusedLearner.__new__(fused_model.FusedLearner)
    learn.model, learn.photo = net, fused_model.PhotoDls(["A", "B"], 8, [0.5] * 3, [0.5] * 3, True)
    seen = []
    net.head.register_forward_hook(lambda m, inputs, out: seen.append(len(out)))
    no_hand = [False, "", 0.0]
    probs = learn.crop_probs([no_hand] * 7, [Image.new("RGB", (20, 12), (i, 0, 0)) for i in range(7)])
    assert seen == [3, 3, 1] and probs.shape == (7, 2)
    assert torch.allclose(probs.sum(1), torch.ones(7))
