"""One registry of model families, as timm's `create_model` is one factory over its registered models: what each
family is. A family knows which `train.arch` names it builds, the input kind its data is prepared as
(`inputs.InputKind`), the config checks that follow from that, and what its export needs to load.

The registry has two halves so that every stage's code fingerprint stays exact (`fingerprints.code_files` follows
imports): this one and inputs.py import no model code, so config, datablock and the runtime read them without a
model edit making download or datablock stale; `registry.py` is the other, how each family builds (DataLoaders,
learner, export) and how a loaded model reads a photo. Adding a family: a `Family` here, its builder in
`registry.LEARNERS`, its module, and their tests (a new input kind also: inputs.py and `registry.Input`).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..core.errors import PipelineError
from . import inputs

LANDMARK_ARCH = "landmark_mlp"
FUSED_ARCH = inputs.FUSED_ARCH  # a head on a frozen backbone's embedding of the hand crop (+ the keypoints)
BASELINE_ARCHS = ("logreg", "mlp", "cnnnet", "aslnet")  # built by baselines.py


@dataclass(frozen=True)
class Family:
    name: str
    input: inputs.InputKind     # what its DataLoaders read (the value of datablock.input)
    archs: tuple[str, ...]      # the train.arch names it builds; () = every name no other family claims
    channels_last: bool         # train.channels_last = "auto" turns it on on a GPU (pretrained convnets gain)
    needs_package: bool         # its export unpickles classes of this package (`load_learner` needs it installed)

    def owns(self, arch: str) -> bool:
        return arch in self.archs or not self.archs

    def loading(self, learner: str) -> str:
        """How to load its export `learner` in another process, and what must be installed there (the card's
        `loading`)."""
        needs = ("this package installed with its [hands] extra (pip install -e '.[hands]' in its repository, or its "
                 "wheel): the export unpickles its classes" if self.needs_package else "fastai and timm; not this package")
        return f"from fastai.learner import load_learner; load_learner('{learner}').predict('photo.jpg') needs {needs}"

    def problems(self, cfg) -> list[str]:
        """What in `cfg` does not fit this family, one line each (`config.validate` raises the first)."""
        found = []
        if cfg.datablock.input != self.input.name:
            found.append(f'datablock.input = "{cfg.datablock.input}" and train.arch = "{cfg.train.arch}" do not go '
                         f'together: the {self.name} read "{self.input.name}" (hand keypoints and "hand_net" go with "{LANDMARK_ARCH}", '
                         f'hand crops with a backbone or "{FUSED_ARCH}")')
        if not self.input.pixels:
            if cfg.datablock.cache:
                found.append(f'datablock.cache stores decoded pixels: turn it off for datablock.input = "{self.input.name}"')
            if cfg.evaluate.tta:
                found.append(f'evaluate.tta augments pixels: turn it off for datablock.input = "{self.input.name}"')
        return found


HAND_LANDMARKS = Family("hand landmarks", inputs.LANDMARKS, (LANDMARK_ARCH,), channels_last=False, needs_package=True)
BASELINE = Family("from-scratch baseline", inputs.IMAGES, BASELINE_ARCHS, channels_last=False, needs_package=False)
BACKBONE = Family("pretrained image backbone", inputs.IMAGES, (), channels_last=True, needs_package=False)
# hand crops (crop_model.py): a head on a frozen backbone's crop embedding, and any backbone fine-tuned on the crops
HAND_FUSED = Family("hand-crop embedding head", inputs.HAND_CROP, (FUSED_ARCH,), channels_last=False, needs_package=True)
HAND_CROP_BACKBONE = Family("hand-crop image backbone", inputs.HAND_CROP, (), channels_last=True, needs_package=True)
# the landmark MLP with MediaPipe's hand-network embedding beside the keypoints (hand_net_model.py): `of` picks it for
# landmark_mlp on datablock.input = "hand_net"
HAND_NET = Family("hand keypoints + hand-network embedding", inputs.HAND_NET, (LANDMARK_ARCH,), channels_last=False,
                  needs_package=True)
# looked up by arch in this order: any other name is a backbone's (the crop backbone's when `of` sees hand crops)
FAMILIES = (HAND_LANDMARKS, HAND_FUSED, BASELINE, BACKBONE, HAND_CROP_BACKBONE, HAND_NET)


def family(arch: str) -> Family:
    """The family whose models `arch` names (a name no family knows is the backbone's: `models.check_arch`
    refuses it before any stage starts)."""
    return next(f for f in FAMILIES if f.owns(arch))


def of(cfg) -> Family:
    """The family of `cfg.train.arch` (a backbone's name on `datablock.input = "hand_crop"`: the crop backbone's;
    landmark_mlp on "hand_net": the hand-network one's)."""
    found = family(cfg.train.arch)
    if found is BACKBONE and cfg.datablock.input == inputs.HAND_CROP.name:
        return HAND_CROP_BACKBONE
    return HAND_NET if found is HAND_LANDMARKS and cfg.datablock.input == inputs.HAND_NET.name else found


def check(cfg) -> None:
    """Refuse, in one line, a config whose `datablock.input` is unknown or does not fit its family."""
    if cfg.datablock.input not in inputs.KINDS:
        raise PipelineError(f"datablock.input must be {' or '.join(inputs.KINDS)}, got {cfg.datablock.input!r}")
    problems = of(cfg).problems(cfg)
    if problems:
        raise PipelineError(problems[0])


def named_archs() -> str:
    """The arch names the families other than the backbone's accept, for an error message."""
    return ", ".join(dict.fromkeys(a for f in FAMILIES for a in f.archs))
