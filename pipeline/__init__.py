"""signpipe: a fastai transfer-learning pipeline for sign-language images.

The layers, bottom up (`tests/test_house.py` holds that none imports a higher one): `core` (the run's machinery),
`data` (sources, stores, DataLoaders), `models` (training, export and the engines), `kinds` (the model kinds),
`serve` (the app); on top, `config`, `runner` and the commands (`cli`, `report`, `compare`, `crossval`).

The model kinds sit between `models` and `serve`: `kinds/<kind>/`, one package each. Exports pickled under an
earlier layout name modules that have moved (a landmark learner names `pipeline.hand_model` or
`pipeline.models.hand_model`): `_OldNames` answers those names with the modules that hold the classes now.
"""
import importlib
import importlib.abc
import importlib.util
import sys
import types

__version__ = "0.1.0"

# A module an export made by an earlier layout can name -> the modules that hold its classes now. An export
# pickles its classes by module and name: a landmark learner `HandLearner` (and `LandmarkNet`, `SettleBatchNorm`),
# a crop learner's `CropReader`, a fused learner's `FusedLearner`, `FusedNet`, `PhotoDls`, a hand-network learner's
# `HandNetLearner`, `HandNetModel`, `HandNetLateModel`, `BranchLoss`; an image export names none of this package.
# The flat layout (`pipeline.hand_model`, `pipeline.training`) came first; the model modules under `pipeline.models`
# came next; each kind's package (`pipeline.kinds.<kind>`) is now. `tests/test_package.py` loads a fresh export of
# every kind with its class paths rewritten to the `pipeline.models` names.
MOVED = {
    "hand_model": ("kinds.landmarks.model", "kinds.shared.model"),
    "training": ("models.training",),
    "models.hand_model": ("kinds.landmarks.model", "kinds.shared.model"),
    "models.crop_model": ("kinds.hand_crop.model",),
    "models.fused_model": ("kinds.hand_fused.model", "kinds.hand_fused.graph"),
    "models.embeddings": ("kinds.hand_fused.embeddings",),
    "models.hand_net_model": ("kinds.hand_net.model", "kinds.hand_net.graph"),
    "models.hand_net_torch": ("kinds.hand_net.network",),
    "models.baselines": ("kinds.images.model",),
    "data.hand_crops": ("kinds.hand_crop.data", "kinds.shared.data"),
    "data.hand_net": ("kinds.hand_net.data",),
}


class _OldNames(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """`import pipeline.<old>` (and pickle's lookup of `pipeline.<old>.Class`) gets a module whose names are those of
    the modules that hold them now (a lookup is answered by the first of them that has the name)."""

    def find_spec(self, name, path=None, target=None):
        head, _, old = name.partition(".")
        if head != __name__ or old not in MOVED:
            return None
        return importlib.util.spec_from_loader(name, self)

    def create_module(self, spec):
        homes = [importlib.import_module(f"{__name__}.{m}") for m in MOVED[spec.name.partition(".")[2]]]
        if len(homes) == 1:
            return homes[0]
        module = types.ModuleType(spec.name, f"now in {', '.join(h.__name__ for h in homes)}")

        def __getattr__(name):
            for home in homes:
                if hasattr(home, name):
                    return getattr(home, name)
            raise AttributeError(f"module {spec.name!r} (now {', '.join(h.__name__ for h in homes)}) has no {name!r}")

        module.__getattr__ = __getattr__
        return module

    def exec_module(self, module):
        pass  # the modules it answers with ran when create_module imported them


if not any(isinstance(f, _OldNames) for f in sys.meta_path):
    sys.meta_path.append(_OldNames())
