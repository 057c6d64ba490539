"""The model kinds (pipeline/kinds/): one lookup from (`datablock.input`, `train.arch`), one arch check,
the pairings the config checks, and every kind complete."""
from types import SimpleNamespace

import pytest

from pipeline import config, runner
from pipeline.core.errors import PipelineError
from pipeline import kinds


def _cfg(input, arch):
    return SimpleNamespace(datablock=SimpleNamespace(input=input), train=SimpleNamespace(arch=arch))


@pytest.mark.parametrize("input, arch, want", [
    ("landmarks", "landmark_mlp", "hand landmarks"),
    ("hand_net", "landmark_mlp", "hand keypoints + hand-network embedding"),
    ("images", "cnnnet", "from-scratch baseline"), ("images", "logreg", "from-scratch baseline"),
    ("images", "resnet18", "pretrained image backbone"), ("images", "tf_efficientnet_lite0", "pretrained image backbone"),
    ("hand_crop", "resnet18", "hand-crop image backbone"), ("hand_crop", "hand_fused", "hand-crop embedding head"),
    ("images", "landmark_mlp", None), ("landmarks", "resnet18", None), ("hand_crop", "cnnnet", None),
    ("hand_net", "hand_fused", None),
])
def test_each_input_and_arch_have_one_kind(input, arch, want):
    found = kinds.find(input, arch)
    assert (found.name if found else None) == want
    if found:
        assert found.pixels == (input == "images") and found.finds_hands == (input != "images")


def test_an_unknown_arch_names_every_kind():
    with pytest.raises(PipelineError, match=r"^unknown arch .resnet19.: .*a timm model name.*cnnnet.*landmark_mlp"):
        kinds.check_arch(_cfg("images", "resnet19"))
    with pytest.raises(PipelineError, match=r"^unknown arch 'resnet19'"):
        kinds.check_arch(_cfg("hand_crop", "resnet19"))
    for input, arch in (("landmarks", "landmark_mlp"), ("images", "aslnet"), ("images", "resnet34"),
                        ("hand_crop", "hand_fused")):
        kinds.check_arch(_cfg(input, arch))


@pytest.mark.parametrize("sets, message", [
    (["train.arch=landmark_mlp"], 'datablock.input = "images" and train.arch = "landmark_mlp" do not go together: '
                                  '"landmark_mlp" reads "landmarks" or "hand_net"; "images" goes with "logreg" or '
                                  '"mlp" or "cnnnet" or "aslnet" or a backbone'),
    (["datablock.input=landmarks"], '"landmarks" goes with "landmark_mlp"$'),
    (["datablock.input=hand_net", "train.arch=resnet18"],  # a backbone: it said '"resnet18" reads ; ...'
     '"resnet18" reads "images" or "hand_crop"; "hand_net" goes with'),
    (["datablock.input=hand_crop", "train.arch=cnnnet"], '"hand_crop" goes with "hand_fused" or a backbone$'),
    (["datablock.input=landmarks", "train.arch=landmark_mlp", "datablock.cache=true"], "datablock.cache stores"),
    (["datablock.input=landmarks", "train.arch=landmark_mlp", "datablock.cache=false", "evaluate.tta=2"],
     "evaluate.tta augments pixels"),
    (["datablock.input=pixels"], "datablock.input must be images or landmarks or hand_crop or hand_net, got 'pixels'"),
])
def test_the_config_pairs_each_kind_with_its_input(tmp_path, sets, message):
    """The kinds check a config (`kinds.check`, the run's preflight, before any stage starts): config.py asks none."""
    cfg = config.load(None, sets, cwd=tmp_path)
    with pytest.raises(PipelineError, match=message):
        kinds.check(cfg)
    with pytest.raises(PipelineError, match=message):
        runner.preflight(cfg, ["download"])


def test_the_kinds_name_exactly_the_models_their_modules_build():
    """The arch names a kind claims (kept in its class so that config checks import no model code) are the ones its
    builder module makes: a baseline added to baselines.py but not to its kind would be taken for a timm name."""
    from pipeline.kinds.images import model as baselines

    baseline = kinds.find("images", "logreg")
    assert set(baseline.archs) == set(baselines.BASELINES) == set(baselines._FACTORIES)


def test_every_kind_is_complete_and_named_once():
    """Each kind builds, reads and answers (no method left to the base class's NotImplementedError), and no two share
    a name (a card's `family`) or an (input, arch) claim."""
    names = [k.name for k in kinds.KINDS]
    assert len(set(names)) == len(names) == 7
    for k in kinds.KINDS:
        for method in ("prepare", "dataloaders", "learner", "probs", "read"):
            assert getattr(type(k), method) is not getattr(kinds.Kind, method), (k.name, method)
        assert k.input in kinds.INPUTS and k.title
    claims = [(k.input, a) for k in kinds.KINDS for a in (k.archs or ("*",))]
    assert len(set(claims)) == len(claims)


def test_the_kinds_import_no_model_code_until_used():
    """config's checks, download and a card read the kinds' descriptions without torch (a fresh interpreter)."""
    import subprocess
    import sys

    code = ("import sys; from pipeline import kinds; from pipeline import config; "
            "print(sorted(m for m in ('torch', 'fastai', 'timm', 'mediapipe') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_each_kind_recognises_only_its_own_learners():
    """`input_of` asks every kind in turn: a kind asked about another kind's learner says no, whatever that learner's
    DataLoaders lack (a loaded fused learner's `PhotoDls` has no `valid`: the image kind, asked first, raised)."""
    from types import SimpleNamespace

    from pipeline.kinds.hand_fused import model as fused_model

    fused = fused_model.FusedLearner.__new__(fused_model.FusedLearner)
    fused.dls = fused_model.PhotoDls(["A"], 16, [0.5] * 3, [0.5] * 3, False)
    assert kinds.input_of(fused).name == "hand-crop embedding head"
    for odd in (SimpleNamespace(dls=SimpleNamespace()), SimpleNamespace(dls=SimpleNamespace(valid=None))):
        assert not any(k.recognises(odd) for k in kinds.KINDS)
