"""The model-family registry: one lookup from `train.arch`, one arch check; the landmark pairing the config checks."""
import pytest

from pipeline import config
from pipeline.core.errors import PipelineError
from pipeline.models import families, inputs, registry


@pytest.mark.parametrize("arch, want", [
    ("landmark_mlp", families.HAND_LANDMARKS),
    ("cnnnet", families.BASELINE), ("logreg", families.BASELINE),
    ("resnet18", families.BACKBONE), ("tf_efficientnet_lite0", families.BACKBONE),
])
def test_each_arch_has_one_family(arch, want):
    assert families.family(arch) is want
    assert want.input.pixels == (arch != "landmark_mlp")


def test_an_unknown_arch_names_every_family():
    with pytest.raises(PipelineError, match=r"^unknown arch 'resnet19': .*a timm model name.*landmark_mlp.*cnnnet"):
        registry.check_arch("resnet19")
    for arch in ("landmark_mlp", "aslnet", "resnet34"):
        registry.check_arch(arch)


@pytest.mark.parametrize("sets, message", [
    (["train.arch=landmark_mlp"], "go together"),
    (["datablock.input=landmarks"], "go together"),
    (["datablock.input=landmarks", "train.arch=landmark_mlp", "datablock.cache=true"], "datablock.cache stores"),
    (["datablock.input=landmarks", "train.arch=landmark_mlp", "datablock.cache=false", "evaluate.tta=2"],
     "evaluate.tta augments pixels"),
])
def test_the_config_pairs_the_landmark_family_with_its_input(tmp_path, sets, message):
    with pytest.raises(PipelineError, match=message):
        config.load(None, sets, cwd=tmp_path)


def test_the_registry_names_exactly_the_models_their_modules_build():
    """The arch names `families.py` gives a family (kept there so that config checks import no model code) are the
    ones its builder module makes: a baseline added to baselines.py but not to the registry would be taken for a
    timm name."""
    from pipeline.models import baselines

    assert set(families.BASELINE.archs) == set(baselines._FACTORIES) == set(baselines._INFO)
    assert set(registry.LEARNERS) == set(families.FAMILIES)
    assert {f.input for f in families.FAMILIES} == {i.kind for i in registry.INPUTS.values()} == set(inputs.KINDS.values())
