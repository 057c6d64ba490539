"""Hand crops as model input (pipeline/hand_crops.py, crop_model.py, fused_model.py, embeddings.py): the crop box,
the families' config checks, and on real photos the stores, the no-hand list, both families and their exports
(a fresh process's `load_learner(pkl).predict(photo)`, `exported.load(...).predict` under both engines)."""
import json
import subprocess
import sys

import pandas as pd
import pytest

from pipeline import artifacts, families, hand_crops, hands, inputs, models, runner
from pipeline.errors import PipelineError
from tests.conftest import asl_photos, subprocess_env, tiny_config


def _raw(xs, ys):
    """A `hands._raw` detection whose 21 keypoints lie at (xs[i], ys[i]) in the padded square."""
    pts = [(xs[i % len(xs)], ys[i % len(ys)], 0.0) for i in range(hands.N_POINTS)]
    return [True, "Left", 0.9] + [v for p in pts for v in p]


def test_the_box_is_a_padded_square_around_the_keypoints():
    w, h = 200, 100
    side, top, left = hands._padding(h, w)  # the square MediaPipe looked in, the photo centred on it
    # keypoints spanning photo pixels x 50..90, y 40..60: a 40-pixel square around (70, 50), padded
    raw = _raw([(50 + left) / side, (90 + left) / side], [(40 + top) / side, (60 + top) / side])
    l, t, r, b = hand_crops.box(raw, w, h)
    half = 40 * (1 + 2 * hand_crops.PAD) / 2
    assert (l, t, r, b) == pytest.approx((70 - half, 50 - half, 70 + half, 50 + half), abs=1e-6)
    thin = hand_crops.box(_raw([(70 + left) / side], [(40 + top) / side, (60 + top) / side]), w, h)
    assert thin[2] - thin[0] == pytest.approx(thin[3] - thin[1])  # a hand seen edge-on still gets a square


def test_a_keypoint_row_is_the_same_through_the_raw_detection():
    import random

    rng = random.Random(0)
    points = [[rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(-0.1, 0.1)] for _ in range(hands.N_POINTS)]
    raw = [True, "Left", 0.9] + [v for q in points for v in q]
    assert hands.row_of(raw)[3:] == pytest.approx(list(hands.canonical(points, "Left")))
    assert hands.row_of([False, "", 0.0] + [0.0] * 63) == [False, "", 0.0] + [0.0] * len(hands.FEATURES)


@pytest.mark.parametrize("overrides, expected", [
    ({"datablock.input": "hand_crop", "train.arch": "resnet18"}, families.HAND_CROP_BACKBONE),
    ({"datablock.input": "hand_crop", "train.arch": "hand_fused"}, families.HAND_FUSED),
    ({"datablock.input": "images", "train.arch": "resnet18"}, families.BACKBONE),
])
def test_a_backbone_on_hand_crops_is_the_crop_family(tmp_path, overrides, expected):
    cfg = tiny_config(tmp_path, overrides)
    assert families.of(cfg) is expected
    assert models.INPUTS[families.of(cfg).input.name].kind is families.of(cfg).input


@pytest.mark.parametrize("overrides, message", [
    ({"datablock.input": "hand_crop", "train.arch": "landmark_mlp"}, "do not go together"),
    ({"datablock.input": "images", "train.arch": "hand_fused"}, "do not go together"),
    ({"datablock.input": "hand_crop", "train.arch": "hand_fused", "train.crop_fusion": "late"}, "crop_fusion"),
    ({"datablock.input": "hand_crop", "train.arch": "resnet18", "datablock.cache": True}, "datablock.cache"),
    ({"datablock.input": "hand_crop", "train.arch": "resnet18", "evaluate.tta": 2}, "evaluate.tta"),
])
def test_hand_crop_configs_are_checked(tmp_path, overrides, message):
    with pytest.raises(PipelineError, match=message):
        tiny_config(tmp_path, overrides)


def test_the_crop_card_says_how_to_crop():
    fields = inputs.HAND_CROP.card_fields(type("T", (), {"image_size": 64})())
    assert fields["image_size"] == 64 and fields["hand_crop"]["size"] == 64 and fields["hand_crop"]["pad"] == hand_crops.PAD
    assert inputs.HAND_CROP.card_problem(fields, 1024) is None
    assert inputs.HAND_CROP.card_problem({**fields, "hand_crop": None}, 1024)[0] == "hand_crop"
