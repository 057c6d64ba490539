"""MediaPipe's hand network as a frozen embedding (pipeline/kinds/hand_net/, `datablock.input = "hand_net"`): the
crop MediaPipe's own landmarks-to-ROI rule makes (upright, left hands mirrored), the store's key, and the embedding
of a real photo."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from pipeline.data import hands
from pipeline.kinds.hand_net import data as hand_net
from tests.conftest import training_fixture

W, H = 400, 300


def _raw(points_px: dict, handedness: str = "Left") -> list:
    """A found `hands.detection` whose keypoints are at `points_px` (index -> photo pixel), the rest at the wrist."""
    side, top, left = hands.padding(H, W)
    pts = [points_px.get(i, points_px[0]) for i in range(hands.N_POINTS)]
    flat = [v for x, y in pts for v in ((x + left) / side, (y + top) / side, 0.0)]
    return [True, handedness, 0.9] + flat + [0.0] * (3 * hands.N_POINTS)


def _photo(points_px: dict, colours: dict) -> Image.Image:
    img = Image.new("RGB", (W, H), "white")
    pen = ImageDraw.Draw(img)
    for i, colour in colours.items():
        x, y = points_px[i]
        pen.ellipse([x - 8, y - 8, x + 8, y + 8], fill=colour)
    return img


def _centre(crop: np.ndarray, colour) -> tuple[float, float]:
    """(x, y) in the crop of the pixels close to `colour`."""
    near = np.abs(crop * 255 - np.asarray(colour)).sum(axis=2) < 90
    ys, xs = np.nonzero(near)
    assert len(xs), f"no {colour} pixels in the crop"
    return float(xs.mean()), float(ys.mean())


# a hand lying on its side, pointing to the photo's right: wrist (0) left, middle knuckle (9) right of it; the thumb
# tip (4) above the line wrist -> knuckle in the photo
HAND = {0: (150, 150), 9: (230, 150), 4: (200, 110), 12: (270, 150)}
RED, GREEN, BLUE = (255, 0, 0), (0, 160, 0), (0, 0, 255)


def test_the_crop_turns_the_hand_upright_and_mirrors_a_left_hand():
    img = _photo(HAND, {0: RED, 9: GREEN, 4: BLUE})
    right = hand_net.crop_image(img, _raw(HAND, "Left"))  # MediaPipe's "Left": a right hand in an ordinary photo
    assert right.shape == (hand_net.SIZE, hand_net.SIZE, 3) and right.dtype == np.float32 and right.max() <= 1.0
    (wx, wy), (kx, ky), (tx, _) = (_centre(right, c) for c in (RED, GREEN, BLUE))
    assert wy > ky + 40 and abs(wx - kx) < 3  # the wrist straight below the knuckle: the hand points up
    # turned a quarter anticlockwise, the thumb (above the hand, pointing right) is on the crop's left
    assert tx < wx - 20
    left = hand_net.crop_image(img, _raw(HAND, "Right"))  # a left hand: the same crop, mirrored
    np.testing.assert_allclose(left, right[:, ::-1], atol=1e-6)
    assert _centre(left, BLUE)[0] > _centre(left, RED)[0] + 20


def test_the_crop_is_twice_the_hand_around_its_centre():
    cx, cy, side, ux, uy, mirrored = hand_net.roi(_raw(HAND), W, H)
    assert (ux, uy) == pytest.approx((1.0, 0.0)) and not mirrored
    # upright, the box is 120 px tall (wrist to fingertip), 40 px wide (thumb): side 2 x 120, centred on the box
    assert side == pytest.approx(240, abs=1e-3) and (cx, cy) == pytest.approx((210, 130), abs=1e-3)


def test_the_store_key_changes_with_the_network_file(tmp_path):
    pytest.importorskip("mediapipe", reason="the [hands] extra is not installed")
    photo = tmp_path / "photo.png"
    Image.new("RGB", (8, 8), "gray").save(photo)
    net = tmp_path / "net.tflite"
    net.write_bytes(b"one network")
    vec = np.arange(hand_net.N_EMB, dtype=np.float32)
    hand_net.store(tmp_path, path=net).put([photo], [vec])
    np.testing.assert_array_equal(hand_net.store(tmp_path, path=net).get([photo])[0], vec)
    net.write_bytes(b"another network")  # other weights: computed anew
    assert hand_net.store(tmp_path, path=net).get([photo]) == [None]


def test_the_network_opens_and_embeds_a_crop():
    """`hand_net.Network` opens MediaPipe's network under the native-stderr guard and reads the pooled feature of a
    crop (it called a helper of `hands` by a name that no longer exists, so any embedding not yet stored failed)."""
    pytest.importorskip("mediapipe", reason="the [hands] extra is not installed")
    pytest.importorskip("ai_edge_litert", reason="LiteRT (ai-edge-litert) is not installed")
    crop = np.random.default_rng(0).random((hand_net.SIZE, hand_net.SIZE, 3)).astype(np.float32)
    emb = hand_net.Network()(crop)
    assert emb.shape == (hand_net.N_EMB,) and np.isfinite(emb).all() and emb.std() > 0


@pytest.mark.shared_data
def test_the_embedding_of_a_real_photo(tmp_path, shared_data):
    """The crop of a real photo is what the network reads as a hand (its own hand-presence output is high, for a right
    hand and for the same hand mirrored); the embedding is stored once, and a photo with no hand gets zeros."""
    pytest.importorskip("mediapipe", reason="the [hands] extra is not installed")
    pytest.importorskip("ai_edge_litert", reason="LiteRT (ai-edge-litert) is not installed")
    photo = shared_data / "asl_alphabet_test" / "B_test.jpg"
    gray = tmp_path / "gray.png"
    Image.new("RGB", (96, 96), "gray").save(gray)
    detector = hands.Detector()
    try:
        dets = [hands.detection(str(photo), detector), hands.detection(str(gray), detector)]
    finally:
        detector.close()
    assert dets[0][0] and dets[0][1] == "Left" and not dets[1][0]  # grassknoted's signer: the right hand
    emb = hand_net.embed([photo, gray], dets, tmp_path, log=lambda m: None)
    assert emb.shape == (2, hand_net.N_EMB) and hand_net.embed.computed == 1
    assert np.isfinite(emb).all() and emb[0].std() > 0 and not emb[1].any()
    again = hand_net.embed([photo, gray], dets, tmp_path, log=lambda m: None)
    assert hand_net.embed.computed == 0
    np.testing.assert_array_equal(again, emb)

    net = hand_net.network()
    presence = next(d["index"] for d in net._it.get_output_details() if d["shape"].tolist() == [1, 1])
    for handedness in ("Left", "Right"):
        net(hand_net.crop(photo, [True, handedness, *dets[0][2:]]))
        assert float(net._it.get_tensor(presence).ravel()[0]) > 0.9


@pytest.mark.parametrize("overrides, family", [
    ({"datablock.input": "hand_net", "train.arch": "landmark_mlp"}, "HandNet"),
    ({"datablock.input": "hand_net", "train.arch": "late_fusion"}, "HandNetLate"),
    ({"datablock.input": "landmarks", "train.arch": "landmark_mlp"}, "Landmarks"),
])
def test_landmark_mlp_on_hand_net_is_the_hand_net_family(tmp_path, overrides, family):
    from pipeline import kinds
    from tests.conftest import tiny_config

    cfg = tiny_config(tmp_path, overrides)
    assert type(kinds.of(cfg)).__name__ == family
    # the kind that reads its ONNX graph is its own, or the one it inherits its reading from (late fusion's graph
    # takes what the hand-network kind's does)
    assert isinstance(kinds.of(cfg), type(kinds.reading(kinds.of(cfg).input)))


def test_hand_net_configs_are_checked(tmp_path):
    from pipeline import kinds
    from pipeline.core.errors import PipelineError
    from tests.conftest import tiny_config

    def check(overrides):
        kinds.check(tiny_config(tmp_path, overrides))

    with pytest.raises(PipelineError, match="late_fusion.* mixes two: turn it off"):
        check({"datablock.input": "hand_net", "train.arch": "late_fusion", "train.calibrate": True})
    with pytest.raises(PipelineError, match='"late_fusion" reads "hand_net"'):
        check({"datablock.input": "landmarks", "train.arch": "late_fusion"})

    with pytest.raises(PipelineError, match="do not go together"):
        check({"datablock.input": "hand_net", "train.arch": "resnet18"})
    with pytest.raises(PipelineError, match="evaluate.tta augments pixels"):
        check({"datablock.input": "hand_net", "train.arch": "landmark_mlp", "evaluate.tta": 2})


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
        "e = kinds.load(pkl)\n"
        "p = e.predict(photos, log=lambda m: None)\n"
        "print('loaded', *p.labels, *p.hand_found)\n"
        "read = [e.read(photo, e.detector()) for photo in photos]\n"
        "print('read', *[len(p) if p is not None else None for p, _ in read], *[k is not None for _, k in read])\n"
        "print('top', *[int(q.argmax()) for q in p.probs], int(read[0][0].argmax()))\n"
        "o = kinds.load(pkl, engine='onnx')\n"
        "q = o.predict(photos, log=lambda m: None)\n"
        "print('onnx', *q.labels, *q.hand_found)\n"
        "print('onnxtop', *[int(x.argmax()) for x in q.probs], int(o.read(photos[0], o.detector())[0].argmax()),\n"
        "      o.read(photos[1], o.detector())[0] is None)\n"
        "print('gap', float(abs(q.probs - p.probs).max()))\n")


@pytest.mark.slow
@pytest.mark.shared_data
def test_a_hand_net_run_on_real_photos(tmp_path, shared_data, monkeypatch):
    """2 photos a letter, one epoch: datablock writes the keypoint rows and fills the embedding store, train reads the
    embeddings from it (none computed again), the card says how the embedding is made and lists the ONNX graph
    (its parity against the LiteRT embedding's learner); a fresh process's `load_learner(pkl).predict`,
    `kinds.load(pkl).predict` and `.read` answer a photo alike and say when a photo has no hand, and the graph
    (`kinds.load(pkl, engine="onnx")`) answers them as fastai does."""
    import json
    import subprocess
    import sys

    import pandas as pd

    pytest.importorskip("mediapipe", reason="the [hands] extra is not installed")
    pytest.importorskip("ai_edge_litert", reason="LiteRT (ai-edge-litert) is not installed")
    from pipeline import runner
    from pipeline.core import artifacts
    from tests.conftest import asl_photos, subprocess_env, tiny_config

    cfg = tiny_config(tmp_path, {**asl_photos(shared_data, 2, "test28"), "run.name": "hn",
                                 "datablock.input": "hand_net", "train.arch": "landmark_mlp", "train.pretrained": False,
                                 "train.method": "fit_one_cycle", "train.batch_size": 8, "train.base_lr": 3e-3,
                                 "train.epochs": 1, "train.landmark_rotate": 15.0,
                                 "train.landmark_features": "coords+shape"})
    runner.run(cfg, ["download", "datablock"])
    out = tmp_path / "runs" / "hn"
    feats = pd.read_csv(out / "datablock" / artifacts.LANDMARKS)
    assert len(feats) == 58 and 0 < feats["hand_found"].sum() < 58  # `nothing` has no hand, and stays in
    cropped, crop = [], hand_net.crop
    monkeypatch.setattr(hand_net, "crop", lambda *a: cropped.append(a[0]) or crop(*a))
    runner.run(cfg, ["lr_find", "train"])
    assert cropped == []  # lr_find and train found every embedding in the store
    runner.run(cfg, ["evaluate"])
    card = json.loads((tmp_path / "exports" / "hn.json").read_text())
    assert card["family"] == "hand keypoints + hand-network embedding" and card["input"] == "hand_net"
    assert card["hand_net"]["sha256"] == hand_net.network_sha256(hand_net.network_path())
    assert card["onnx"]["file"] == "hn.onnx" and card["onnx"]["family"] == "hand_net"
    assert card["onnx"]["parity"]["top1_agreement"] == 1.0 and card["onnx"]["parity"]["items"] > 0
    scored = json.loads((out / "evaluate" / "test28" / artifacts.METRICS).read_text())
    assert scored["scored"] == 28

    gray = tmp_path / "gray.png"
    Image.new("RGB", (96, 96), "gray").save(gray)
    photo = shared_data / "asl_alphabet_test" / "B_test.jpg"
    script = tmp_path / "use.py"
    script.write_text(_USE)
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "exports" / "hn.pkl"), str(photo), str(gray)],
                          capture_output=True, text=True, env=subprocess_env(), cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = {line.split()[0]: line.split()[1:] for line in done.stdout.splitlines() if line.split()}
    n = str(len(card["vocab"]))
    answers = [line.split()[1:] for line in done.stdout.splitlines() if line.startswith("answer")]
    assert [a[1:] for a in answers] == [[n, "1.0", "False"], [n, "1.0", "True"]]
    assert lines["loaded"] == [answers[0][0], answers[1][0], "True", "False"]  # the loader's labels are predict's
    assert lines["read"] == [n, "None", "True", "False"]  # serve's one photo: no answer without a hand
    top = lines["top"]
    assert top[0] == top[2]  # read and predict give the photo the same answer
    assert lines["onnx"] == lines["loaded"]  # the graph: the same labels, the same photo without a hand
    assert lines["onnxtop"] == [*top[:2], top[2], "True"]  # and serve's one photo under onnx, none without a hand
    assert float(lines["gap"][0]) < 1e-4  # the probabilities within the export's parity tolerance of fastai's

    # `predict --engine onnx` needs no LiteRT: the graph runs the hand network itself
    cli = ("import runpy, sys\nsys.modules['ai_edge_litert'] = None\n"
           "sys.argv = ['pipeline', 'predict', '--engine', 'onnx', '--learner', *sys.argv[1:]]\n"
           "runpy.run_module('pipeline', run_name='__main__')\n")
    done = subprocess.run([sys.executable, "-c", cli, str(tmp_path / "exports" / "hn.pkl"), str(photo), str(gray)],
                          capture_output=True, text=True, env=subprocess_env(), cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [line.split("\t")[1] for line in done.stdout.splitlines()] == lines["loaded"][:2]


@pytest.mark.shared_data
def test_warm_fills_the_embedding_store_and_skips_what_it_cannot_read(tmp_path, shared_data):
    """A distributed rank's share of datablock's work (`kinds.hand_net.HandNet.warm`): the keypoints and the embedding of a
    photo into the stores; an unreadable file is looked at, skipped, and stored nowhere."""
    pytest.importorskip("mediapipe", reason="the [hands] extra is not installed")
    pytest.importorskip("ai_edge_litert", reason="LiteRT (ai-edge-litert) is not installed")

    photo, bad = shared_data / "asl_alphabet_test" / "B_test.jpg", tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    assert hand_net.warm([photo, bad], tmp_path, log=lambda m: None) == 2
    assert hand_net.embed.computed == 1
    assert hand_net.store(tmp_path).get([photo, bad])[0].shape == (hand_net.N_EMB,)
    assert hands.store(tmp_path).get([bad]) == [None]
    assert hand_net.warm([photo], tmp_path, log=lambda m: None) == 0 and hand_net.embed.computed == 0


def test_the_embedding_is_zeroed_where_the_keypoints_say_no_hand():
    """A detection whose keypoints cannot be scaled (all at the wrist) is a no-hand row (64 zeros): its embedding is
    zeroed too, as the ONNX graph zeroes it by the row's hand flag, so both engines answer it as the all-0 row."""
    emb = np.ones((2, hand_net.N_EMB), np.float32)
    x = hand_net.inputs([_raw(HAND), _raw({0: (150, 150)})], emb)
    assert x[0, len(hands.FEATURES) - 1] == 1.0 and (x[0, len(hands.FEATURES):] == 1).all()
    assert not x[1].any()


@training_fixture(scope="module", params=["landmark_mlp", "late_fusion"])
def graph_export(tmp_path_factory, request):
    """An untrained hand-network learner (the one MLP, or the late fusion of two) over 24 drawn 'photos' whose hands
    `_raw` places (every 6th with none, every 3rd a left hand), with LiteRT's embedding of each, and its ONNX export
    as train writes it (.onnx and a card). Returns (learner, the .pkl path, the card's onnx entry, photo paths,
    detections)."""
    pytest.importorskip("mediapipe", reason="the [hands] extra is not installed")
    pytest.importorskip("ai_edge_litert", reason="LiteRT (ai-edge-litert) is not installed")
    import json
    from types import SimpleNamespace

    import pandas as pd

    from pipeline import config
    from pipeline.core.workspace import sha256_file
    from pipeline.models import inference
    from pipeline.kinds.shared import model as shared_model
    from pipeline import kinds

    tmp = tmp_path_factory.mktemp("hand_net_graph")
    rng = np.random.default_rng(0)
    split, paths, dets = [], [], []
    for i in range(24):
        dx, dy = rng.uniform(-30, 30, 2)
        pts = {k: (x + dx, y + dy + (60 if k == 4 and i % 2 else 0)) for k, (x, y) in HAND.items()}
        paths.append(str(tmp / f"{i}.png"))
        _photo(pts, {0: RED, 9: GREEN, 4: BLUE}).save(paths[-1])
        dets.append([False, "", 0.0] + [0.0] * 6 * hands.N_POINTS if i % 6 == 5 else
                    _raw(pts, "Right" if i % 3 == 0 else "Left"))
        split.append((f"{i}.png", "AB"[i % 2], i % 3 == 0))
    split = pd.DataFrame(split, columns=["path", "label", "is_valid"])
    table = pd.DataFrame(hand_net.inputs(dets, hand_net.embed(paths, dets, None, log=lambda m: None)),
                         columns=hand_net.COLUMNS)
    table.insert(0, "path", split["path"])
    dls = shared_model.dataloaders(split, table, ["A", "B"], 8, hand_net.COLUMNS)
    dls.valid_photos = {p: (path, det) for p, path, det, v in zip(split["path"], paths, dets, split["is_valid"]) if v}
    cfg = config.load(None, cwd=tmp, overrides=["datablock.input=hand_net", f"train.arch={request.param}",
                                                "datablock.cache=false"])
    learn = kinds.of(cfg).make_learner(dls, cfg, SimpleNamespace(scratch=tmp))
    learn.export(tmp / "hn.pkl")
    entry = kinds.input_of(learn).export_onnx(learn, tmp / "hn.onnx", cfg.train, log=lambda m: None)
    card = {"sha256": sha256_file(tmp / "hn.pkl"), "vocab": ["A", "B"], "image_size": None, "grayscale": None,
            "input": "hand_net", "hand_net": hand_net.client_settings(), "onnx": entry}
    (tmp / "hn.json").write_text(json.dumps(card))
    return learn, tmp / "hn.pkl", entry, paths, dets


def test_the_onnx_graph_takes_the_crop_and_keypoints_and_answers_as_the_learner(graph_export):
    """The graph runs the hand network rebuilt in torch on the uint8 crop; the learner read LiteRT's embedding of the
    same crop: parity at export (8 validation photos, 2 with no hand), and the onnx engine's answers for every photo
    (`run` offered the lazy `Crops`) are the learner's; a row with no hand is the all-0 row whatever the crop."""
    from pipeline.models import inference
    from pipeline import kinds
    from pipeline.kinds.shared import model as shared_model
    from pipeline.kinds.hand_net import model as hand_net_model

    learn, pkl, entry, paths, dets = graph_export
    assert entry["file"] == "hn.onnx" and entry["family"] == "hand_net"
    assert entry["input"]["name"] == "crop" and entry["input"]["shape"] == ["batch", 224, 224, 3]
    assert entry["features"]["name"] == "features"
    assert entry["parity"]["items"] == 8 and entry["parity"]["top1_agreement"] == 1.0
    assert entry["parity"]["max_abs_prob_diff"] <= 1e-4

    model = kinds.load(pkl, engine="onnx")
    fastai = inference.predict_rows(learn, hand_net.inputs(dets, hand_net.embed(paths, dets, None))).numpy()
    onnx = model.engine.run({"crop": hand_net.Crops(paths, dets), "features": hands.features_of(dets)}, 5)
    assert onnx.shape == (24, 2) and (onnx.argmax(1) == fastai.argmax(1)).all()
    np.testing.assert_allclose(onnx, fastai, atol=1e-4)
    no_hand = inference.predict_rows(learn, np.zeros((1, len(hand_net.COLUMNS)), np.float32)).numpy()
    noise = np.random.default_rng(1).integers(0, 256, (1, hand_net.SIZE, hand_net.SIZE, 3), dtype=np.uint8)
    np.testing.assert_allclose(model.engine.probs(noise, np.zeros((1, hands.N_FEATURES), np.float32)), no_hand,
                               atol=1e-5)


def test_an_export_without_a_graph_still_loads_and_refuses_onnx_in_one_line(graph_export, tmp_path):
    """A hand-network export trained before its graph existed (its card says why there is none): the fastai engine
    loads it; the onnx engine is one line with the card's reason."""
    import json
    import shutil

    from pipeline.core.errors import PipelineError
    from pipeline import kinds

    _, pkl, *_ = graph_export
    old = tmp_path / "old.pkl"
    shutil.copy(pkl, old)
    card = json.loads(pkl.with_suffix(".json").read_text())
    why = ("the hand-network model reads MediaPipe's hand network, a TFLite graph and not a torch module: no ONNX "
           "export of it here; use the fastai engine")
    card["onnx"] = {"file": None, "why": why}
    old.with_suffix(".json").write_text(json.dumps(card))
    assert kinds.load(old).vocab == ["A", "B"]
    with pytest.raises(PipelineError, match=r"lists no ONNX export \(the hand-network model reads .* TFLite graph"):
        kinds.load(old, engine="onnx")


def test_a_hand_net_learner_without_its_validation_photos_has_no_graph(graph_export):
    """The graph's parity needs the validation photos the train stage's DataLoaders keep: without them, the card's
    reason (`Kind.export_onnx`) says so in one line and no file is written."""
    import copy

    from pipeline.core.errors import PipelineError
    from pipeline import kinds

    learn = copy.copy(graph_export[0])
    learn.dls = copy.copy(learn.dls)
    del learn.dls.valid_photos
    with pytest.raises(PipelineError, match="checks its parity on the validation photos"):
        kinds.reading("hand_net").onnx_plan(learn, None)


def test_late_fusion_mixes_two_models_each_trained_on_its_own_loss():
    """`HandNetLateModel` answers the mixture of its two MLPs' probabilities (0.5 each), as the late fusion of two
    fold models that crossval measured; `BranchLoss` trains each branch on its own loss (the keypoint branch's
    gradient is what its loss alone gives, whatever the other branch says), scores the mixture outside training, and
    the export pickles no batch of the last forward."""
    import pickle

    import torch
    import torch.nn.functional as F
    from fastai.losses import CrossEntropyLossFlat

    from pipeline.kinds.hand_net.model import BranchLoss, HandNetLateModel

    torch.manual_seed(0)
    model = HandNetLateModel(5, [16, 8], 0.0)
    loss = BranchLoss(CrossEntropyLossFlat(), model)
    x = torch.randn(12, len(hand_net.COLUMNS))
    y, cats = torch.randint(0, 5, (12,)), torch.zeros(12, 0, dtype=torch.long)
    model.eval()
    a, b = model.keypoints(cats, x[:, :len(hands.FEATURES)]), model.both(cats, x)
    mixed = (F.softmax(a, 1) + F.softmax(b, 1)) / 2
    out = model(cats, x)
    torch.testing.assert_close(loss.activation(out), mixed)
    torch.testing.assert_close(loss(out, y), F.nll_loss(mixed.log(), y))  # outside training: the mixture's loss
    assert model.branches is None

    model.train()
    loss(model(cats, x), y).backward()
    got = [p.grad.clone() for p in model.keypoints.parameters()]
    model.zero_grad()
    F.cross_entropy(model.keypoints(cats, x[:, :len(hands.FEATURES)]), y).backward()
    for g, want in zip(got, model.keypoints.parameters()):
        torch.testing.assert_close(g, want.grad)
    model(cats, x)  # a training forward leaves its branches behind ...
    assert model.branches is not None and pickle.loads(pickle.dumps(model)).branches is None  # ... never in an export
