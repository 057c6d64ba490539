"""Hand landmarks as model input (pipeline/data/hands/): features, augmentation, the tabular learner, the stages."""
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pipeline import config, runner
from pipeline.core import artifacts
from pipeline.core.errors import PipelineError
from pipeline.data import hands
from pipeline.models import inference, training
from pipeline.kinds.shared import model as shared_model
from pipeline.kinds.landmarks import model as landmark_model
from pipeline import kinds
from tests.conftest import asl_photos, pipeline_cmd, subprocess_env, synthetic_landmark_learner, tiny_config


def _hand(seed=0):
    """21 plausible keypoints in [0, 1] image coordinates (wrist first)."""
    rng = np.random.default_rng(seed)
    return (0.5 + rng.uniform(-0.2, 0.2, (21, 3))).astype(np.float32)


def test_canonical_features_ignore_position_size_and_handedness():
    p = _hand()
    f = hands.canonical(p, "Left")
    assert f.shape == (len(hands.FEATURES),) and f[-1] == 1.0
    assert np.allclose(f[:3], 0)  # wrist at the origin
    assert np.isclose(np.linalg.norm(f[27:29]), 1.0)  # middle knuckle (9) at distance 1 in the image plane
    moved = p * 0.5 + 0.1  # the same hand smaller and elsewhere in the frame
    assert np.allclose(hands.canonical(moved, "Left"), f, atol=1e-5)
    mirrored = p.copy()
    mirrored[:, 0] = 1 - mirrored[:, 0]  # the other hand making the same sign
    assert np.allclose(hands.canonical(mirrored, "Right"), f, atol=1e-5)
    assert not np.allclose(hands.canonical(mirrored, "Left"), f, atol=1e-3)
    assert hands.canonical(np.zeros((21, 3)), "Left") is None  # degenerate: no scale


def test_random_rotations_are_rotations_within_the_bound():
    r = shared_model.random_rotations(500, 30.0, generator=torch.Generator().manual_seed(0))
    eye = torch.eye(3).expand(500, 3, 3)
    assert torch.allclose(r @ r.transpose(1, 2), eye, atol=1e-5)
    assert torch.allclose(torch.linalg.det(r), torch.ones(500), atol=1e-5)
    # trace = 1 + 2 cos(total angle); three turns of <= 30 degrees compose to well under 90
    assert (r.diagonal(dim1=1, dim2=2).sum(-1) > 1.0).all()
    assert torch.allclose(shared_model.random_rotations(4, 0.0), torch.eye(3).expand(4, 3, 3))


class _MarkerHands:
    """Stands in for MediaPipe's Hands graph: 'finds' a hand only when the image's brightest pixel lies in its
    top-left quadrant, and puts all 21 keypoints on that pixel (normalised x = column, y = row)."""

    def __init__(self):
        self.calls = 0

    def process(self, img):
        self.calls += 1
        row, col = np.unravel_index(img.sum(2).argmax(), img.shape[:2])
        h, w = img.shape[:2]
        if not (row < h / 2 and col < w / 2):
            return SimpleNamespace(multi_hand_landmarks=None)
        point = SimpleNamespace(x=(col + 0.5) / w, y=(row + 0.5) / h, z=0.25)
        return SimpleNamespace(multi_hand_landmarks=[SimpleNamespace(landmark=[point] * 21)],
                               multi_handedness=[SimpleNamespace(classification=[SimpleNamespace(label="Left", score=0.9)])])


@pytest.mark.parametrize("row,col,turns_tried", [(10, 20, 1), (20, 80, 3), (80, 20, 5), (80, 90, 7)])
def test_detector_turns_the_image_when_no_hand_is_found(tmp_path, row, col, turns_tried):
    """A hand found only in a turned copy of the image (here: the marker must be top-left) comes back in the
    unturned image's coordinates; the turns are tried in order (plain and brightened each) and stop at a find."""
    from PIL import Image

    img = np.zeros((100, 100, 3), np.uint8)
    img[row, col] = 255
    Image.fromarray(img).save(tmp_path / "marker.png")
    detector = hands.Detector.__new__(hands.Detector)  # no MediaPipe graph: the stand-in above
    detector._graphs = {hands.MIN_CONFIDENCE: _MarkerHands()}
    points, handedness, score = detector(tmp_path / "marker.png")
    side = int(100 * (1 + 2 * hands.PAD))
    offset = (side - 100) // 2
    x, y = (col + offset + 0.5) / side, (row + offset + 0.5) / side  # the marker in the padded square
    assert points is not None and len(points) == 21 and handedness == "Left" and score == 0.9
    assert points[0] == pytest.approx([x, y, 0.25], abs=1.5 / side)
    assert detector._graphs[hands.MIN_CONFIDENCE].calls == turns_tried


class _SizedHands(_MarkerHands):
    """A stand-in that finds the brightest pixel only in a square of side `side` (one of the retry borders)."""

    def __init__(self, side: int | None):
        super().__init__()
        self.side = side

    def process(self, img):
        self.calls += 1
        if self.side is not None and img.shape[0] != self.side:
            return SimpleNamespace(multi_hand_landmarks=None)
        row, col = np.unravel_index(img.sum(2).argmax(), img.shape[:2])
        point = SimpleNamespace(x=(col + 0.5) / img.shape[1], y=(row + 0.5) / img.shape[0], z=0.1)
        return SimpleNamespace(multi_hand_landmarks=[SimpleNamespace(landmark=[point] * 21)],
                               multi_handedness=[SimpleNamespace(classification=[SimpleNamespace(label="Left", score=0.8)])])


@pytest.mark.parametrize("pad, confidence, calls", [(0.6, hands.MIN_CONFIDENCE, (9, 0)),
                                                    (0.0, hands.MIN_CONFIDENCE, (10, 0)),
                                                    (0.0, hands.RETRY_CONFIDENCE, (10, 3))])
def test_detector_looks_on_other_borders_then_at_a_lower_threshold(tmp_path, pad, confidence, calls):
    """A hand found only on a wider or no border (or only by the low-threshold graph) comes back in the PAD square's
    coordinates, where every caller reads keypoints (z rescaled alike); the passes are tried in order."""
    from PIL import Image

    img = np.zeros((100, 80, 3), np.uint8)
    img[30, 50] = 255
    Image.fromarray(img).save(tmp_path / "marker.png")
    side = int(100 * (1 + 2 * pad))
    finds = _SizedHands(side)
    detector = hands.Detector.__new__(hands.Detector)
    detector._graphs = {hands.MIN_CONFIDENCE: finds if confidence == hands.MIN_CONFIDENCE else _SizedHands(-1),
                        hands.RETRY_CONFIDENCE: finds if confidence == hands.RETRY_CONFIDENCE else _SizedHands(-1)}
    points, handedness, score = detector(tmp_path / "marker.png")
    std, top, left = hands.padding(100, 80)
    assert points is not None and (handedness, score) == ("Left", 0.8)
    assert points[0] == pytest.approx([(50 + left + 0.5) / std, (30 + top + 0.5) / std, 0.1 * side / std], abs=1.5 / std)
    assert (detector._graphs[hands.MIN_CONFIDENCE].calls, detector._graphs[hands.RETRY_CONFIDENCE].calls) == calls


def test_world_landmarks_turn_back_as_the_image_keypoints_do():
    """`unturn_world` is `unturn` for vectors: a point's offset from the centre, turned back, is the offset of the
    unturned point."""
    rng = np.random.default_rng(1)
    for k in range(4):
        pts = rng.uniform(0.2, 0.8, (21, 3)).tolist()
        # positions in the turned image whose unturned positions are `pts`: apply the forward turn by unturning 4 - k
        fwd = hands.unturn(pts, (4 - k) % 4)
        centred = [[x - 0.5, y - 0.5, z] for x, y, z in fwd]
        back = hands.unturn_world(centred, k)
        assert np.allclose(np.array(back)[:, :2] + 0.5, np.array(pts)[:, :2])


def test_unturn_inverts_each_quarter_turn():
    rng = np.random.default_rng(0)
    img = np.zeros((40, 40), np.uint8)
    for _ in range(5):
        r, c = rng.integers(0, 40, 2)
        img[:] = 0
        img[r, c] = 1
        for k in range(4):
            tr, tc = np.argwhere(np.rot90(img, k))[0]
            back = hands.unturn([[(tc + 0.5) / 40, (tr + 0.5) / 40, 0.0]], k)[0]
            assert back == pytest.approx([(c + 0.5) / 40, (r + 0.5) / 40, 0.0])


def test_shape_features_ignore_turns_but_keep_direction():
    from pipeline.kinds.shared.model import N_SHAPE, shape_features

    conts = torch.tensor(np.stack([hands.canonical(_hand(i), "Left") for i in range(6)] + [np.zeros(64, np.float32)]))
    f = shape_features(conts)
    assert f.shape == (7, N_SHAPE) and torch.equal(f[6], torch.zeros(N_SHAPE))  # no hand: all 0
    rot = shared_model.random_rotations(6, 60.0, generator=torch.Generator().manual_seed(1))
    pts = conts[:6, :63].reshape(6, 21, 3) @ rot.transpose(1, 2)
    turned = shape_features(torch.cat([pts.reshape(6, 63), conts[:6, 63:]], dim=1))
    distances = N_SHAPE - 9
    assert torch.allclose(turned[:, :distances], f[:6, :distances], atol=1e-5)  # the hand's shape: unchanged
    assert not torch.allclose(turned[:, distances:], f[:6, distances:], atol=1e-2)  # where it points: changed
    assert torch.allclose(f[:6, distances:].reshape(6, 3, 3).norm(dim=2), torch.ones(6, 3), atol=1e-5)


def test_jitter_moves_training_hands_only():
    cb = shared_model.jitter_callback(30.0)
    conts = torch.tensor(np.stack([hands.canonical(_hand(i), "Left") for i in range(8)] + [np.zeros(64, np.float32)]))
    cats = torch.zeros(9, 0, dtype=torch.long)
    cb.learn = SimpleNamespace(xb=(cats, conts.clone()), training=True)
    cb.before_batch()
    moved = cb.learn.xb[1]
    assert not torch.allclose(moved[:8, :63], conts[:8, :63])
    assert torch.equal(moved[:, 63], conts[:, 63])  # the found flag is not a coordinate
    assert torch.equal(moved[8], conts[8])  # no hand stays all 0
    assert torch.allclose(moved[:8, :3], torch.zeros(8, 3))  # turned about the wrist
    cb.learn = SimpleNamespace(xb=(cats, conts.clone()), training=False)
    cb.before_batch()
    assert torch.equal(cb.learn.xb[1], conts)


def test_batch_norm_is_settled_on_the_unjittered_training_set_after_fitting(tmp_path):
    """After a jittered fit, the input batch norm holds the mean and variance of the training rows as they are (what
    a photo's keypoints look like), not a running average of the last jittered batches; lr_find leaves it alone."""
    learn, _, split, feats = synthetic_landmark_learner(tmp_path, "coords", overrides=("train.landmark_rotate=45",))
    with training.quiet(learn):
        learn.fit_one_cycle(2, 1e-2)
    train = torch.tensor(feats.loc[~split["is_valid"].to_numpy(), hands.FEATURES].to_numpy(np.float32))
    bn = learn.model.bn_cont
    assert torch.allclose(bn.running_mean, train.mean(0), atol=1e-5)
    assert torch.allclose(bn.running_var, train.var(0), atol=1e-5)
    assert bn.momentum == 0.1  # put back: fastai and a later fit see the usual batch norm
    with training.quiet(learn):
        loss, error, accuracy = learn.validate()
    assert learn.final_valid == pytest.approx({"valid_loss": loss, "valid_accuracy": accuracy,
                                               "valid_error_rate": error}, rel=0.05, abs=1e-4)  # what train records
    before = bn.running_mean.clone()
    from fastai.callback.schedule import LRFinder

    with training.quiet(learn):
        learn.fit(1, cbs=[LRFinder(num_it=5)])  # lr_find's sweep, without its suggestions (5 points are too few)
    assert torch.equal(bn.running_mean, before)


def test_mirror_flips_x_of_training_hands_with_its_probability():
    conts = torch.tensor(np.stack([hands.canonical(_hand(i), "Left") for i in range(400)]))
    cats = torch.zeros(400, 0, dtype=torch.long)
    for p, share in ((0.0, 0.0), (1.0, 1.0), (0.5, 0.5)):
        cb = shared_model.jitter_callback(0.0, mirror=p)
        cb.learn = SimpleNamespace(xb=(cats, conts.clone()), training=True)
        cb.before_batch()
        moved, pts = cb.learn.xb[1][:, :63].reshape(-1, 21, 3), conts[:, :63].reshape(-1, 21, 3)
        flipped = torch.isclose(moved[..., 0], -pts[..., 0]).all(1) & ~torch.isclose(moved[..., 0], pts[..., 0]).all(1)
        kept = torch.equal(moved[..., 1:], pts[..., 1:])  # no rotation, no stretch: only x changes
        assert kept and (torch.equal(moved[~flipped], pts[~flipped]))
        assert abs(flipped.float().mean().item() - share) < 0.1


@pytest.mark.parametrize("overrides,message", [
    (["train.landmark_mirror=1.5"], "landmark_mirror"),
    (["datablock.input=landmarks"], "go together"),
    (["train.arch=landmark_mlp"], "go together"),
    (["datablock.input=landmarks", "train.arch=landmark_mlp", "datablock.cache=true"], "datablock.cache"),
    (["datablock.input=landmarks", "train.arch=landmark_mlp", "datablock.cache=false", "evaluate.tta=2"],
     "evaluate.tta"),
    (["datablock.input=pixels"], "images or landmarks"),
    (["train.landmark_rotate=-5"], "landmark_rotate"),
    (["train.landmark_features=angles"], "landmark_features must be coords or coords"),
])
def test_landmark_options_are_validated(tmp_path, overrides, message):
    """By the config (ranges, choices) or by the kinds (`kinds.check`, the run's preflight)."""
    with pytest.raises(PipelineError, match=message):
        kinds.check(config.load(None, cwd=tmp_path, overrides=overrides))


def test_missing_mediapipe_is_one_line_with_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "mediapipe", None)  # import fails as if it were not installed
    with pytest.raises(PipelineError, match=r"pip install -e '\.\[hands\]'"):
        hands.require()
    monkeypatch.setitem(sys.modules, "mediapipe", SimpleNamespace(__version__="0.10.35"))  # no bundled models
    with pytest.raises(PipelineError, match="0.10.35 does not ship the hand models"):
        hands.require()


@pytest.mark.parametrize("features", ["coords", "coords+shape"])
def test_landmark_learner_trains_calibrates_and_exports(tmp_path, features):
    """Synthetic keypoints (three well-separated hand shapes plus no-hand rows): the tabular learner with the
    jitter callback learns them, the temperature folds into its last layer, and the export loads and predicts
    without our callbacks, as a `landmark_model.HandLearner` (whose `predict` takes a photo) over fastai's
    TabularModel for "coords", or shared_model.LandmarkNet (the shape features) for "coords+shape"."""
    from fastai.learner import load_learner

    learn, _, split, feats = synthetic_landmark_learner(tmp_path, features, overrides=("train.landmark_rotate=10",))
    vocab = list(learn.dls.vocab)
    assert any(type(cb).__name__ == "LandmarkJitter" for cb in learn.cbs)
    with training.quiet(learn):
        learn.fit_one_cycle(8, 1e-2)
        assert learn.validate()[2] > 0.9  # [loss, error_rate, accuracy]
    from stages.train import _calibrate

    before = learn.validate()[0]
    found = _calibrate(learn, log=lambda m: None)  # fits T on the validation split, folds it into the last layer
    assert found["temperature"] > 0 and found["valid_nll_after"] <= found["valid_nll_before"] + 1e-6
    assert learn.validate()[0] == pytest.approx(found["valid_nll_after"], rel=1e-3, abs=1e-6) and before > 0
    training.strip_for_export(learn)
    learn.export(tmp_path / "lm.pkl")
    loaded = load_learner(tmp_path / "lm.pkl")
    assert type(kinds.input_of(loaded)).__name__ == "Landmarks" and list(loaded.dls.vocab) == vocab
    assert type(loaded) is landmark_model.HandLearner
    assert not any(type(cb).__module__.startswith("pipeline") for cb in loaded.cbs)
    model_type = type(loaded.model)
    assert (model_type.__module__, model_type.__name__) == (
        ("pipeline.kinds.shared.model", "LandmarkNet") if features == "coords+shape" else ("fastai.tabular.model", "TabularModel"))
    test = feats.loc[split["is_valid"].to_numpy(), hands.FEATURES].reset_index(drop=True)
    with training.quiet(loaded):
        probs, _ = loaded.get_preds(dl=loaded.dls.test_dl(test))
    predicted = [vocab[i] for i in probs.argmax(1).tolist()]
    assert predicted == list(split.loc[split["is_valid"], "label"])


@pytest.mark.slow
def test_overlapping_silenced_blocks_give_stderr_back():
    """Two threads' silenced blocks overlapping (serve: two streams' frames, or a stream and a photo): stderr is
    /dev/null while either runs and the console again once both are out (each putting back the descriptor it saw
    left /dev/null for good: a second block in had put aside /dev/null)."""
    import threading

    def where():
        st = os.fstat(2)
        return st.st_dev, st.st_ino

    console, devnull = where(), os.stat(os.devnull)
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()

    def a():
        with hands.native_stderr_silenced():
            a_in.set()
            b_in.wait(10)
        a_out.set()

    thread = threading.Thread(target=a)
    thread.start()
    a_in.wait(10)
    with hands.native_stderr_silenced():
        b_in.set()
        a_out.wait(10)
        assert where() == (devnull.st_dev, devnull.st_ino)
    thread.join()
    assert where() == console


@pytest.mark.slow
@pytest.mark.shared_data
def test_landmark_pipeline_on_real_photos(tmp_path, shared_data):
    """The whole pipeline with datablock.input = landmarks on 10 real photos per class: MediaPipe finds most
    hands, landmarks.csv and the drawn batch.png are written, evaluate scores the 28 test photos and counts the
    missed hands, and `predict` labels photos with the export."""
    pytest.importorskip("mediapipe", reason="the [hands] extra is not installed")
    data = shared_data
    cfg = tiny_config(tmp_path, {"run.name": "lm", **asl_photos(data, 10, "test28"), "datablock.input": "landmarks",
                                 "lr_find.num_it": 20, "train.arch": "landmark_mlp", "train.base_lr": 3e-3,
                                 "train.epochs": 10, "train.batch_size": 32, "train.head_dropout": 0.2,
                                 "train.landmark_rotate": 30})
    runner.run(cfg, list(runner.STAGE_NAMES))
    import pandas as pd

    run = tmp_path / "runs" / "lm"
    feats = pd.read_csv(run / "datablock" / artifacts.LANDMARKS)
    assert len(feats) == 290 and list(feats.columns) == ["path"] + hands.COLUMNS + hands.FEATURES
    assert feats["hand_found"].mean() > 0.7
    assert (feats.loc[~feats["hand_found"], hands.FEATURES] == 0).all().all()
    assert (run / "datablock" / "batch.png").stat().st_size > 10_000
    card = json.loads((tmp_path / "exports" / "lm.json").read_text())
    assert card["input"] == "landmarks" and card["arch"] == "landmark_mlp" and card["family"] == "hand landmarks"
    assert card["image_size"] is None and "needs this package" in card["loading"]  # it never sees pixels
    metrics = json.loads((run / "evaluate" / "test28" / "metrics.json").read_text())
    assert metrics["scored"] == 28 and 0 <= metrics["no_hand"] < 28
    assert metrics["accuracy"] > 1 / 29  # 10 photos per class still beat chance on another room's photos
    predictions = pd.read_csv(run / "evaluate" / "test28" / "predictions.csv")
    assert predictions["hand_found"].sum() == 28 - metrics["no_hand"]
    photo = data / "asl_alphabet_test" / "B_test.jpg"
    out = subprocess.run(pipeline_cmd("predict", "--learner", str(tmp_path / "exports" / "lm.pkl"), str(photo)),
                         capture_output=True, text=True, env=subprocess_env(), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    line = out.stdout.strip().splitlines()
    assert len(line) == 1 and line[0].split("\t")[0] == str(photo)  # progress went to stderr, not the output


def _die(path, detector):
    os._exit(3)  # as a native crash in MediaPipe would: no exception, the process is gone


def test_extract_reports_unreadable_images_and_dead_workers(tmp_path, monkeypatch):
    pytest.importorskip("mediapipe", reason="the [hands] extra is not installed")
    from PIL import Image

    good, bad = tmp_path / "blank.png", tmp_path / "broken.jpg"
    Image.new("RGB", (64, 64), "gray").save(good)
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    df = hands.extract([good], log=lambda m: None)
    assert list(df["hand_found"]) == [False] and (df[hands.FEATURES] == 0).all().all()  # no hand in a gray square
    with pytest.raises(PipelineError, match="broken.jpg: cannot read the image"):
        hands.extract([good, bad], log=lambda m: None)
    monkeypatch.setattr(hands.batch, "detection", _die)  # pickled by reference: the spawned workers import this test module
    with pytest.raises(PipelineError, match="process died"):
        hands.extract([good] * 50, log=lambda m: None, workers=2)  # 50 images or more: a pool of processes


def test_warm_fills_the_store_and_skips_what_it_cannot_read(tmp_path):
    """A distributed rank's share of datablock's work (`hands.warm`): readable images go into the detection store,
    an unreadable one is skipped (datablock's verification reports it), and a second call looks at nothing."""
    pytest.importorskip("mediapipe", reason="the [hands] extra is not installed")
    from PIL import Image

    good, bad = tmp_path / "blank.png", tmp_path / "broken.jpg"
    Image.new("RGB", (64, 64), "gray").save(good)
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    store = hands.store(tmp_path / "data", log=lambda m: None)
    assert hands.warm([good, bad], store, log=lambda m: None) == ([(str(good), hands.no_detection())], 2)
    found, missing = store.get([str(good), str(bad)])
    assert found == hands.no_detection() and missing is None
    assert hands.warm([good], store, log=lambda m: None)[1] == 0


def test_mediapipe_native_messages_stay_out_of_the_log(tmp_path):
    """TFLite's "Created TensorFlow Lite XNNPACK delegate" and absl's W0000 lines went straight to stderr."""
    pytest.importorskip("mediapipe")
    from PIL import Image

    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "blank.png")
    p = subprocess.run([sys.executable, "-c", "import sys; from pipeline.data import hands; "
                        "print(hands.Detector()(sys.argv[1])[0])", str(tmp_path / "blank.png")],
                       capture_output=True, text=True, env=subprocess_env(), timeout=120)
    assert p.returncode == 0 and p.stdout == "None\n", p.stderr
    assert p.stderr == "", p.stderr


@pytest.mark.slow
@pytest.mark.shared_data
def test_the_landmark_export_answers_a_photo_from_a_plain_script(tmp_path, shared_data):
    """`load_learner(pkl).predict("photo.jpg")` works on a hand-landmark export in a fresh process, as on an image
    export, from a script with no `if __name__ == "__main__":` guard (one photo's hand is found in the calling
    process): (label, index, probabilities), with a warning for a photo in which no hand is found. `predict --csv`
    says so in its hand_found column."""
    pytest.importorskip("mediapipe", reason="the [hands] extra is not installed")
    from PIL import Image

    learn, _, _, _ = synthetic_landmark_learner(tmp_path)
    with training.quiet(learn):
        learn.fit_one_cycle(1, 1e-2)
    training.strip_for_export(learn)
    learn.export(tmp_path / "lm.pkl")
    vocab = list(learn.dls.vocab)
    photo, gray = shared_data / "asl_alphabet_test" / "B_test.jpg", tmp_path / "gray.png"
    Image.new("RGB", (96, 96), "gray").save(gray)
    script = tmp_path / "use.py"
    script.write_text("import sys, warnings\n"
                      "from fastai.learner import load_learner\n"
                      "learn = load_learner(sys.argv[1])\n"
                      "for photo in sys.argv[2:]:\n"
                      "    with warnings.catch_warnings(record=True) as seen:\n"
                      "        warnings.simplefilter('always')\n"
                      "        label, idx, probs = learn.predict(photo)\n"
                      "    no_hand = any('no hand found' in str(w.message) for w in seen)\n"
                      "    print(label, int(idx), len(probs), float(probs.sum()), no_hand)\n")
    out = subprocess.run([sys.executable, str(script), str(tmp_path / "lm.pkl"), str(photo), str(gray)],
                         capture_output=True, text=True, env=subprocess_env(), cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [line.split() for line in out.stdout.splitlines()]
    assert [no_hand for *_, no_hand in lines] == ["False", "True"]
    for label, idx, n, total, _ in lines:
        assert label == vocab[int(idx)] and int(n) == len(vocab) and float(total) == pytest.approx(1.0, abs=1e-4)
    out = subprocess.run(pipeline_cmd("predict", "--learner", str(tmp_path / "lm.pkl"), "--trust-learner", "--csv",
                                      str(photo), str(gray)),
                         capture_output=True, text=True, env=subprocess_env(), cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [line.split(",") for line in out.stdout.strip().splitlines()]
    assert rows[0] == ["file", "label", "confidence", "hand_found"]
    assert [r[3] for r in rows[1:]] == ["true", "false"] and "no hand found in 1 of 2 image(s)" in out.stderr


def test_predicting_leaves_a_hand_learner_as_it_is(tmp_path):
    """fastai fires after_fit around `get_preds` too: SettleBatchNorm settled the batch norm there, so every
    prediction of a loaded export (whose training set is empty) after the first came from reset statistics (the
    second call's probabilities differed by 0.998), and an in-process learner's moved with each call (0.0015)."""
    import torch
    from fastai.learner import load_learner

    from pipeline.models import inference
    from pipeline.kinds.shared import model as shared_model
    from pipeline.kinds.landmarks import model as landmark_model
    from tests.conftest import synthetic_landmark_learner

    learn, _, _, feats = synthetic_landmark_learner(tmp_path, features="coords+shape")
    with learn.no_bar(), learn.no_logging():
        learn.fit(2, 1e-2)
    x = feats[hands.FEATURES].to_numpy(np.float32)[:12]
    first = inference.predict_rows(learn, x)
    assert torch.equal(inference.predict_rows(learn, x), first)
    learn.export(tmp_path / "m.pkl")
    loaded = load_learner(tmp_path / "m.pkl")
    again = [inference.predict_rows(loaded, x) for _ in range(3)]
    assert all(torch.allclose(p, first, atol=1e-5) for p in again)
