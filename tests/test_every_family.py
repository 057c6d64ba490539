"""Every model kind (pipeline/kinds/), through the commands that answer one photo or a video: a tiny export
per kind (real photos, 2 a letter, one epoch, through the runner: .pkl, .onnx and card), read by serve's `Reader`
and by `spell` under both engines. A kind added without a recipe here fails `test_every_family_has_a_recipe`."""
import csv
import io

import numpy as np
import pytest

from pipeline import runner
from pipeline.core.errors import PipelineError
from pipeline.models import card
from pipeline import kinds
from tests.conftest import SHARED_DATA, asl_photos, tiny_config, training_fixture
from tests.helpers import massey, write_video

RECIPES = {  # the kind's name -> its tiny recipe (one epoch on 2 photos a letter)
    "from-scratch baseline": {"train.arch": "logreg", "train.image_size": 32},
    "pretrained image backbone": {"train.arch": "tf_efficientnet_lite0", "train.pretrained": True,
                                  "train.image_size": 32, "train.method": "fine_tune"},
    "hand landmarks": {"datablock.input": "landmarks", "train.arch": "landmark_mlp"},
    "hand-crop image backbone": {"datablock.input": "hand_crop", "train.arch": "tf_efficientnet_lite0",
                                 "train.pretrained": True, "train.image_size": 32, "train.method": "fine_tune"},
    "hand-crop embedding head": {"datablock.input": "hand_crop", "train.arch": "hand_fused", "train.image_size": 32,
                                 "train.crop_fusion": "keypoints"},
    "hand keypoints + hand-network embedding": {"datablock.input": "hand_net", "train.arch": "landmark_mlp"},
    "hand keypoints, late fusion with the hand-network embedding": {"datablock.input": "hand_net",
                                                                    "train.arch": "late_fusion"},
}


def test_every_family_has_a_recipe():
    assert set(RECIPES) == {k.name for k in kinds.KINDS}
    assert {kinds.of(_config_only(r)).name for r in RECIPES.values()} == set(RECIPES)


def _config_only(recipe):
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        return tiny_config(Path(tmp), recipe)


@training_fixture(scope="module")
def exports(tmp_path_factory):
    """family name -> its export (.pkl), each trained through download, datablock and train."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} not present")
    pytest.importorskip("mediapipe", reason="the [hands] extra is not installed")
    root = tmp_path_factory.mktemp("families")
    # one data folder for every kind: MediaPipe looks at each photo once, the hand kinds read its stored detections
    base = {**asl_photos(SHARED_DATA, 2, "test28"), "train.batch_size": 8, "train.base_lr": 1e-3, "train.epochs": 1,
            "run.data_dir": str(root / "data")}
    out = {}
    for i, (name, recipe) in enumerate(RECIPES.items()):
        project = root / f"p{i}"
        project.mkdir()
        cfg = tiny_config(project, {**base, "run.name": f"family{i}", **recipe})
        runner.run(cfg, ["download", "datablock", "train"])
        out[name] = project / "exports" / f"family{i}.pkl"
    return out


@pytest.mark.slow
@pytest.mark.parametrize("engine", card.ENGINES)
@pytest.mark.parametrize("family", list(RECIPES))
def test_serve_and_spell_read_with_every_family(exports, family, engine, tmp_path, capsys):
    """serve's `Reader.read` answers a photo with the model's top-1 (the same as `kinds.load(...).predict`), the
    keypoints drawn for a model that finds hands; `spell` spells a video with a hand model (one row a frame, the
    hand found in each) and refuses an image model in one line."""
    from pipeline import kinds
    from pipeline.serve import app, live

    photo = SHARED_DATA / "asl_alphabet_test" / "B_test.jpg"
    reader = app.Reader(exports[family], engine=engine, parallel=2)
    top, drawn, reading = reader.read(str(photo))
    model = kinds.load(exports[family], engine)
    expected = model.predict([photo], log=lambda m: None)
    assert len(top) == 5 and reading.startswith(f"{expected.labels[0]} (")
    assert max(top, key=top.get) == expected.labels[0]
    assert abs(top[expected.labels[0]] - expected.confidences[0]) < 1e-4
    assert (drawn is not None) == model.finds_hands

    video = tmp_path / "b.avi"
    n = write_video(video, [(massey(SHARED_DATA, "B", 8), 0.8)])  # a webcam's frame with the hand in the middle
    spell = app.Reader(exports[family], engine=engine, parallel=1)
    if not model.finds_hands:
        with pytest.raises(PipelineError, match="needs a model that finds the hand"):
            live.spell_video(spell, video, log=lambda m: None)
        return
    text = live.spell_video(spell, video, csv_out=True, log=lambda m: None)
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == n and all(r["hand_found"] == "true" for r in rows)
    assert {r["top1"] for r in rows} <= set(model.vocab) and set(text) <= set("".join(model.vocab) + " ")
    frame_p = np.array([float(r["p"]) for r in rows])
    assert (frame_p > 0).all() and (frame_p <= 1).all()
