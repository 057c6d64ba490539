"""signpipe: a fastai transfer-learning pipeline for sign-language images.

The layers, bottom up (`tests/test_house.py` holds that none imports a higher one): `core` (the run's machinery),
`data` (sources, stores, DataLoaders), `models` (the model kinds, export and engines), `serve` (the
app); on top, `config`, `runner` and the commands (`cli`, `report`, `compare`, `crossval`).

Exports pickled before the modules moved into those subpackages name the old flat modules (a landmark learner
names `pipeline.hand_model`): `_OldNames` answers those names with the moved modules, so they still load.
"""
import importlib
import importlib.abc
import importlib.util
import sys

__version__ = "0.1.0"

# Old flat module -> where it lives now (the move into subpackages), for the modules an export made before the
# move can name: a landmark learner's classes (`hand_model`) and the training callbacks an export kept before
# `training.strip_for_export`. An image export names no module of this package, and the crop, fused and hand-network
# kinds came after the move (an export of every kind, scanned: only `pipeline.models.hand_model` and the kinds' own
# modules appear). Other old names (`pipeline.hands`, ...) were never pickled, so they are not kept alive here.
MOVED = {"hand_model": "models.hand_model", "training": "models.training"}


class _OldNames(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """`import pipeline.<old>` (and pickle's lookup of `pipeline.<old>.Class`) gets the moved module itself."""

    def find_spec(self, name, path=None, target=None):
        head, _, old = name.partition(".")
        if head != __name__ or old not in MOVED:
            return None
        return importlib.util.spec_from_loader(name, self)

    def create_module(self, spec):
        return importlib.import_module(f"{__name__}.{MOVED[spec.name.partition('.')[2]]}")

    def exec_module(self, module):
        pass  # the moved module ran when create_module imported it


if not any(isinstance(f, _OldNames) for f in sys.meta_path):
    sys.meta_path.append(_OldNames())
