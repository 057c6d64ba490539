"""ONNX export and the onnx engine (pipeline/models/onnx_export.py, pipeline/models/onnx_engine.py): the parity train records,
the same labels as fastai from `predict` and evaluate, no fastai in the onnx path, fastai's pixels without fastai,
and the landmark family's graph. Tiny generated data; the real photos are in tests/test_serve.py."""
import json
import shutil
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from pipeline import config, runner
from pipeline.core.errors import PipelineError
from pipeline.data import hands
from pipeline.models import onnx_engine, onnx_export, training
from pipeline import kinds
from tests.conftest import subprocess_env, synthetic_landmark_learner


@pytest.fixture(scope="module")
def tiny(trained, tmp_path_factory):
    """A copy of the session's tiny run (conftest's `tiny_project`: a logistic regression on three generated classes
    at 16 px, 24 validation photos, through all five stages, with a test set `t` of 12 scored photos and 2 that are
    not: 14 in its folder)."""
    return trained.copy("tiny_run", tmp_path_factory.mktemp("onnx") / "project")


def test_train_writes_an_onnx_with_its_parity(tiny):
    import onnx

    card = json.loads((tiny / "exports" / "tiny.json").read_text())
    entry = card["onnx"]
    path = tiny / "exports" / entry["file"]
    assert path.name == "tiny.onnx" and onnx_export.sha256_file(path) == entry["sha256"]
    assert entry["family"] == "images" and entry["opset"] >= 17
    p = entry["parity"]
    assert p["items"] == 24 and p["max_abs_prob_diff"] <= 1e-4 and p["top1_agreement"] == 1.0
    metrics = json.loads((tiny / "runs" / "tiny" / "train" / "metrics.json").read_text())
    assert metrics["onnx_parity"] == p
    graph = onnx.load(str(path))
    (inp,) = graph.graph.input
    dims = inp.type.tensor_type.shape.dim
    assert inp.name == "image" and inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [16, 16, 3]  # a named, dynamic batch axis
    model = onnx_engine.load_verified(tiny / "exports" / "tiny.pkl")
    for n in (1, 5):
        probs = model.probs(np.zeros((n, 16, 16, 3), np.uint8))
        assert probs.shape == (n, 3) and np.allclose(probs.sum(1), 1, atol=1e-5)


def test_onnx_engine_gives_fastais_labels_in_evaluate_and_predict(tiny):
    """evaluate with either engine writes the same predictions; `predict --engine onnx` prints the fastai
    engine's labels and imports neither fastai nor torch."""
    out = tiny / "runs" / "tiny" / "evaluate" / "t" / "predictions.csv"
    runner.run(config.load(None, cwd=tiny), ["evaluate"], force=True)
    by_fastai = pd.read_csv(out)
    runner.run(config.load(None, ["evaluate.engine=onnx"], cwd=tiny), ["evaluate"], force=True)
    by_onnx = pd.read_csv(out)
    assert len(by_onnx) == 12 and list(by_onnx["predicted"]) == list(by_fastai["predicted"])
    assert np.allclose(by_onnx["confidence"], by_fastai["confidence"], atol=1e-4)
    assert json.loads((out.parent / "metrics.json").read_text())["engine"] == "onnx"

    script = ("import sys, runpy\nsys.argv = ['pipeline', 'predict', '--engine', 'onnx', '--learner', "
              "'exports/tiny.pkl', 'test']\ntry:\n    runpy.run_module('pipeline', run_name='__main__')\n"
              "except SystemExit as e:\n    assert not e.code, e.code\n"
              "print('imported:', sorted(m for m in ('fastai', 'torch') if m in sys.modules), file=sys.stderr)\n")
    p = subprocess.run([sys.executable, "-c", script], cwd=tiny, capture_output=True, text=True, env=subprocess_env())
    assert p.returncode == 0, p.stderr
    assert "imported: []" in p.stderr
    rows = [line.split("\t") for line in p.stdout.strip().splitlines()]
    predicted = dict(zip(by_fastai["file"], by_fastai["predicted"]))
    assert len(rows) == 14 and all(predicted[f.split("/")[-1]] == label for f, label, _ in rows
                                   if f.split("/")[-1] in predicted)
    assert {f.split("/")[-1] for f, _, _ in rows} == set(predicted) | {"README.png", "z999_test.png"}


def test_onnx_engine_refuses_a_graph_that_does_not_match_its_card(tiny, tmp_path):
    for name in ("tiny.pkl", "tiny.json", "tiny.onnx"):
        shutil.copy(tiny / "exports" / name, tmp_path / name)
    with open(tmp_path / "tiny.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(PipelineError, match=r"tiny.onnx sha256 does not match its model card"):
        onnx_engine.load_verified(tmp_path / "tiny.pkl")
    (tmp_path / "tiny.onnx").unlink()
    with pytest.raises(PipelineError, match=r"tiny.onnx does not exist: rerun"):
        onnx_engine.load_verified(tmp_path / "tiny.onnx")


@pytest.mark.parametrize("grayscale", [False, True])
def test_load_image_gives_fastais_pixels(tmp_path, grayscale):
    """fastai's validation pipeline (data.image_block's type transforms, then Resize) and `load_image` give the
    same uint8 pixels: odd sizes both ways, a sideways phone photo (EXIF orientation 6), a palette image."""
    from fastai.vision.all import PILImage, PILImageBW, Resize
    from PIL import Image

    from pipeline.data import loaders

    rng = np.random.default_rng(0)
    files = []
    for i, (w, h) in enumerate([(37, 23), (23, 41), (16, 16), (90, 61)]):
        f = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(f)
        files.append(f)
    sideways = tmp_path / "exif.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)).save(sideways, exif=exif)
    palette = tmp_path / "p.png"
    Image.fromarray(rng.integers(0, 256, (29, 33, 3), dtype=np.uint8)).convert("P").save(palette)
    cls = PILImageBW if grayscale else PILImage
    for f in files + [sideways, palette]:
        x = f
        for tfm in loaders.image_block(cls).type_tfms:
            x = tfm(x)
        want = np.asarray(Resize(16)(x, split_idx=1))
        got = onnx_engine.load_image(f, 16, grayscale)
        assert got.shape == (16, 16, 3) and got.dtype == np.uint8
        assert np.array_equal(got[:, :, 0] if grayscale else got, want), f.name


def _landmark_learner(tmp_path, features: str):
    """A tabular learner on synthetic keypoints of three hand shapes plus no-hand rows, trained a few epochs."""
    learn, cfg, split, feats = synthetic_landmark_learner(tmp_path, features, n_hands=120, n_nothing=20, valid_every=4)
    with training.quiet(learn):
        learn.fit_one_cycle(3, 1e-2)
    training.strip_for_export(learn)
    return learn, cfg, feats.loc[split["is_valid"].to_numpy(), hands.FEATURES]


@pytest.mark.parametrize("features", ["coords", "coords+shape"])
def test_landmark_graph_is_the_tabular_model_over_the_64_features(tmp_path, features):
    learn, cfg, valid = _landmark_learner(tmp_path, features)
    entry = kinds.input_of(learn).export_onnx(learn, tmp_path / "lm.onnx", cfg.train, log=lambda m: None)
    assert entry["family"] == "landmarks" and entry["input"]["name"] == "features"
    assert entry["input"]["features"]["columns"] == hands.FEATURES
    assert entry["parity"]["items"] == len(valid) == 35 and entry["parity"]["max_abs_prob_diff"] <= 1e-4
    with training.quiet(learn):
        p_fastai, _ = learn.get_preds(dl=learn.dls.test_dl(valid.reset_index(drop=True)))
    p_onnx = onnx_engine.session(tmp_path / "lm.onnx").run(None, {"features": valid.to_numpy(np.float32)})[0]
    assert np.abs(p_onnx - p_fastai.numpy()).max() <= 1e-4
    assert (p_onnx.argmax(1) == p_fastai.numpy().argmax(1)).all()


def test_an_export_that_fails_parity_is_an_error_and_writes_nothing(tmp_path, monkeypatch):
    learn, cfg, _ = _landmark_learner(tmp_path, "coords")
    monkeypatch.setattr(onnx_export, "TOLERANCE", -1.0)  # no graph can meet it
    monkeypatch.setattr(onnx_export, "NOISE_FACTOR", -1.0)
    with pytest.raises(PipelineError, match=r"ONNX export fails parity on the validation split \(35 items\).*"
                                            r"fastai's own float32 result is [0-9.e+-]+ from float64"):
        kinds.input_of(learn).export_onnx(learn, tmp_path / "lm.onnx", cfg.train, log=lambda m: None)
    assert list(tmp_path.glob("*lm.onnx*")) == []


@pytest.mark.parametrize("noise, passes", [(1e-4, True), (1e-5, False)])
def test_parity_allows_a_difference_within_ten_times_float32_rounding(tmp_path, monkeypatch, noise, passes):
    """A graph 5e-4 from fastai (over TOLERANCE) with the same top-1 labels passes where fastai's own float32
    rounding on that batch is 1e-4 (a deep convnet's sums in another order), and fails where it is 1e-5."""
    learn, cfg, _ = _landmark_learner(tmp_path, "coords")
    real = onnx_export.parity
    monkeypatch.setattr(onnx_export, "parity", lambda *a: {**real(*a), "max_abs_prob_diff": 5e-4})
    monkeypatch.setattr(onnx_export, "float32_noise", lambda model, batch: noise)
    if passes:
        entry = kinds.input_of(learn).export_onnx(learn, tmp_path / "lm.onnx", cfg.train, log=lambda m: None)
        assert entry["parity"]["tolerance"] == pytest.approx(1e-3) and entry["parity"]["float32_noise"] == noise
        assert (tmp_path / "lm.onnx").is_file()
    else:
        with pytest.raises(PipelineError, match=r"5\.00e-04 \(limit 0\.0001, or 10 x fastai's own float32"):
            kinds.input_of(learn).export_onnx(learn, tmp_path / "lm.onnx", cfg.train, log=lambda m: None)
        assert list(tmp_path.glob("*lm.onnx*")) == []


def test_a_family_without_a_graph_gets_the_reason_in_its_card(tmp_path):
    """A kind whose model has no ONNX graph exports no `.onnx`: the card entry says why, and the onnx engine repeats
    it; a learner no kind here made is one line."""
    class NoGraph(kinds.Kind):
        name = "graphless"

    entry = NoGraph().export_onnx(SimpleNamespace(), tmp_path / "f.onnx", None, log=lambda m: None)
    assert entry == {"file": None, "why": "no ONNX export for a graphless model"}
    assert not (tmp_path / "f.onnx").exists()
    other = SimpleNamespace(dls=SimpleNamespace(cont_names=[], valid=SimpleNamespace(after_item=SimpleNamespace(fs=[]))))
    with pytest.raises(PipelineError, match=r"^no model kind here reads this learner \(SimpleNamespace over "
                                            r"SimpleNamespace\): only image, hand keypoints, hand-crop model, "
                                            r"hand keypoints \+ hand-network model, "
                                            r"hand keypoints \+ hand-network late-fusion model$"):
        kinds.input_of(other)
    (tmp_path / "f.json").write_text(json.dumps({"vocab": ["A"], "onnx": entry}))
    with pytest.raises(PipelineError, match=r"lists no ONNX export \(no ONNX export for a graphless model\)"):
        onnx_engine.load_verified(tmp_path / "f.pkl")


def _copy_export(tiny, folder):
    for name in ("tiny.pkl", "tiny.json", "tiny.onnx"):
        shutil.copy(tiny / "exports" / name, folder / name)
    return folder / "tiny.pkl"


def _one_error_line(p) -> str:
    assert p.returncode == 2 and "Traceback" not in p.stderr, (p.returncode, p.stderr[-3000:])
    (line,) = p.stderr.strip().splitlines()
    return line


@pytest.mark.parametrize("field, value, expected", [
    ("onnx.file", "/etc/tiny.onnx", "onnx.file '/etc/tiny.onnx' is not the name of an .onnx file beside the card"),
    ("image_size", 32, "image_size 32 does not match the graph's input 16x16"),
    ("vocab", ["A", "B"], "vocab has 2 class(es) but the graph gives 3 probabilities"),
])
def test_a_tampered_model_card_is_one_line_naming_the_field(tiny, tmp_path, field, value, expected):
    """`predict --engine onnx` (and so serve and evaluate, through `card.read`) on a card whose graph entry, input
    size or vocab was changed: one `error:` line naming the card and the field, not a traceback."""
    pkl = _copy_export(tiny, tmp_path)
    meta = json.loads(pkl.with_suffix(".json").read_text())
    *parents, key = field.split(".")
    target = meta
    for k in parents:
        target = target[k]
    target[key] = value
    pkl.with_suffix(".json").write_text(json.dumps(meta))
    image = next((tiny / "train" / "A").glob("*.png"))
    p = subprocess.run([sys.executable, "-m", "pipeline", "predict", "--engine", "onnx", "--learner", str(pkl),
                        str(image)], capture_output=True, text=True, env=subprocess_env())
    assert _one_error_line(p) == (f"error: the model card {pkl.with_suffix('.json')} is damaged: {expected}; rerun "
                                  f"train (`python -m pipeline run --stages train --force`) or restore the card")


def test_a_damaged_onnx_with_trust_learner_is_one_line(tiny, tmp_path):
    pkl = _copy_export(tiny, tmp_path)
    raw = pkl.with_suffix(".onnx").read_bytes()
    pkl.with_suffix(".onnx").write_bytes(raw[:40] + b"\xff" * 64 + raw[104:])
    image = next((tiny / "train" / "A").glob("*.png"))
    p = subprocess.run([sys.executable, "-m", "pipeline", "predict", "--engine", "onnx", "--trust-learner",
                        "--learner", str(pkl), str(image)], capture_output=True, text=True, env=subprocess_env())
    assert _one_error_line(p).startswith(f"error: cannot load {pkl.with_suffix('.onnx')} as an ONNX graph (")


def _landmark_export(tmp_path):
    """A landmark learner's `.pkl`, `.onnx` and model card (as train writes them) in tmp_path: lm.pkl."""
    from pipeline.core.workspace import sha256_file

    learn, cfg, _ = _landmark_learner(tmp_path, "coords")
    learn.export(tmp_path / "lm.pkl")
    entry = kinds.input_of(learn).export_onnx(learn, tmp_path / "lm.onnx", cfg.train, log=lambda m: None)
    card = {"sha256": sha256_file(tmp_path / "lm.pkl"), "vocab": list(learn.dls.vocab), "image_size": None,
            "grayscale": None, "input": "landmarks", "onnx": entry}
    (tmp_path / "lm.json").write_text(json.dumps(card))
    return tmp_path / "lm.pkl"


@pytest.mark.parametrize("family, extra, expected", [
    ("images", {"image_size": 64}, "onnx.family 'images' reads uint8 images (batch, H, W, 3), but the graph's input "
                                   "'features' is float (batch, 64)"),
    ("hand_crop", {"image_size": 64, "hand_crop": {}}, "onnx.family 'hand_crop' reads uint8 images (batch, H, W, 3), "
                                                       "but the graph's input 'features' is float (batch, 64)"),
    ("hand_net", {}, "onnx.family 'hand_net' reads uint8 hand-network crops (batch, 224, 224, 3), but the graph's "
                     "input 'features' is float (batch, 64)"),
])
def test_a_card_naming_another_family_than_the_landmark_graph_is_one_line(tmp_path, family, extra, expected):
    """A landmark export's card edited to say family "images" reached onnxruntime's `InvalidArgument: Unexpected input
    data type` when predicting (issue 36): the card's family against the graph's input, at load."""
    from pipeline import kinds

    pkl = _landmark_export(tmp_path)
    card = json.loads(pkl.with_suffix(".json").read_text())
    card["onnx"]["family"] = family
    card.update(extra)
    pkl.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(PipelineError) as err:
        kinds.load(pkl, engine="onnx")
    assert str(err.value) == (f"the model card {pkl.with_suffix('.json')} is damaged: {expected}; rerun train "
                              f"(`python -m pipeline run --stages train --force`) or restore the card")


def test_a_card_naming_the_landmark_family_for_an_image_graph_is_one_line(tiny, tmp_path):
    pkl = _copy_export(tiny, tmp_path)
    meta = json.loads(pkl.with_suffix(".json").read_text())
    meta["onnx"]["family"] = "landmarks"
    pkl.with_suffix(".json").write_text(json.dumps(meta))
    image = next((tiny / "train" / "A").glob("*.png"))
    p = subprocess.run([sys.executable, "-m", "pipeline", "predict", "--engine", "onnx", "--learner", str(pkl),
                        str(image)], capture_output=True, text=True, env=subprocess_env())
    assert _one_error_line(p) == (
        f"error: the model card {pkl.with_suffix('.json')} is damaged: onnx.family 'landmarks' reads float keypoint "
        f"rows (batch, 64), but the graph's input 'image' is uint8 (batch, 16, 16, 3); rerun train (`python -m "
        f"pipeline run --stages train --force`) or restore the card")


def test_the_graph_records_its_vocab_and_a_card_with_another_is_one_line(tiny, tmp_path):
    """ONNX labels come from the card: a card whose vocab was reversed made `--engine onnx` print every A as C at
    p 1.000 (issue 36). The graph keeps its vocab's sha256 in its metadata (`signpipe.vocab_sha256`), checked at
    load; a graph exported before that (no such key) still loads."""
    import onnx

    from pipeline.models import card

    pkl = _copy_export(tiny, tmp_path)
    meta = json.loads(pkl.with_suffix(".json").read_text())
    graph = onnx.load(str(pkl.with_suffix(".onnx")))
    props = {p.key: p.value for p in graph.metadata_props}
    assert props == {card.VOCAB_KEY: card.vocab_sha256(meta["vocab"])}
    meta["vocab"] = meta["vocab"][::-1]
    pkl.with_suffix(".json").write_text(json.dumps(meta))
    image = next((tiny / "train" / "A").glob("*.png"))
    p = subprocess.run([sys.executable, "-m", "pipeline", "predict", "--engine", "onnx", "--learner", str(pkl),
                        str(image)], capture_output=True, text=True, env=subprocess_env())
    assert _one_error_line(p) == (
        f"error: the model card {pkl.with_suffix('.json')} is damaged: vocab ['C', 'B', 'A'] is not the one the graph "
        f"was exported with (its sha256 is in the graph's metadata, {card.VOCAB_KEY}); rerun train (`python -m "
        f"pipeline run --stages train --force`) or restore the card")

    del graph.metadata_props[:]                      # a graph exported before the key: the card alone says the vocab
    onnx.save(graph, str(pkl.with_suffix(".onnx")))
    meta["onnx"]["sha256"] = onnx_export.sha256_file(pkl.with_suffix(".onnx"))
    pkl.with_suffix(".json").write_text(json.dumps(meta))
    assert onnx_engine.load_verified(pkl).vocab == ["C", "B", "A"]
