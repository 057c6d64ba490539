"""The base of every model kind (`Kind`): its description's defaults and the methods each kind fills in (the kinds
and their registry: kinds/__init__.py)."""
from __future__ import annotations

from pathlib import Path

from ..core import runtime
from ..core.errors import PipelineError
from ..core.stagespec import RUNTIME
from ..models.card import MAX_IMAGE_SIZE

UINT8_IMAGES = ("tensor(uint8)", 4, "uint8 images (batch, H, W, 3)")
FLOAT_ROWS = ("tensor(float)", 2, "float keypoint rows (batch, 64)")


def size_problem(card: dict) -> tuple[str, str] | None:
    """What is wrong with a card's `image_size` (the side of the square the model reads), or None."""
    size = card.get("image_size")
    if not (isinstance(size, int) and not isinstance(size, bool) and 1 <= size <= MAX_IMAGE_SIZE):
        return "image_size", f"{size!r} is not a whole number of pixels (1 to {MAX_IMAGE_SIZE})"
    return None


class Kind:
    """One kind of model. The defaults are those of a model that reads no pixels and finds no hands."""
    name = ""                   # what a card's `family` and the logs call it ("hand landmarks")
    input = ""                  # the value of datablock.input it reads (kinds sharing one share its data)
    archs: tuple = ()           # the train.arch names it builds; () = any name no kind claims (a backbone's)
    title = ""                  # what the app and its log call a model of it ("image model")
    pixels = False              # whole decoded images at train.image_size: the pixel cache and pixel TTA apply
    finds_hands = False         # photos become hand keypoints (MediaPipe) first: the [hands] extra, keypoints drawn
    writes: tuple = ()          # what datablock writes for it, beside the split
    params: tuple = ()          # the config entries its `prepare` reads beyond datablock's (datablock's params_if)
    channels_last = False       # train.channels_last = "auto" turns it on on a GPU (pretrained convnets gain)
    needs_package = True        # its export unpickles classes of this package (`load_learner` needs it installed)
    graph_input = FLOAT_ROWS    # (onnxruntime's type, rank, in words) of its ONNX graph's first input

    # --- what it is, in words and checks --------------------------------------------------------------------------
    def require(self) -> None:
        """Fail now, in one line, when what it needs is not installed (before minutes of verifying)."""
        if self.finds_hands:
            from ..data import hands

            hands.require()

    def check_arch(self, arch: str, also: str = "") -> None:
        """Refuse, in one line, an `arch` it cannot build (run before any stage starts; `also`: what other kinds
        accept, for the message)."""

    def problems(self, cfg) -> list[str]:
        """What in `cfg` does not fit it, one line each (`config.validate` raises the first)."""
        found = []
        if not self.pixels:
            if cfg.datablock.cache:
                found.append(f'datablock.cache stores decoded pixels: turn it off for datablock.input = "{self.input}"')
            if cfg.evaluate.tta:
                found.append(f'evaluate.tta augments pixels: turn it off for datablock.input = "{self.input}"')
        return found

    def seen(self, image_size: int | None, grayscale: bool = False) -> str:
        """What the model sees, in words, for a log line, a report and a recipe."""
        return "hand keypoints (MediaPipe), no pixels"

    def recipe(self, cfg) -> str:
        """Its part of a recipe, in words, for compare's table: what the model sees and how it is augmented."""
        t = cfg.train
        return ", ".join(["hand landmarks" + (" + shape" if t.landmark_features == "coords+shape" else "")]
                         + ([f"rotate ±{t.landmark_rotate:g}°"] if t.landmark_rotate else []))

    def card_fields(self, t) -> dict:
        """The model card's `image_size` and `grayscale` (None for a model that never sees pixels), and what else a
        client needs to make what the model reads."""
        return {"image_size": None, "grayscale": None}

    def card_problem(self, card: dict) -> tuple[str, str] | None:
        """(field, what is wrong) with what a model card says of this kind's input, or None."""
        return None

    def loading(self, learner: str) -> str:
        """How to load its export `learner` in another process, and what must be installed there (the card's
        `loading`)."""
        needs = ("this package installed with its [hands] extra (pip install -e '.[hands]' in its repository, or its "
                 "wheel): the export unpickles its classes" if self.needs_package else "fastai and timm; not this package")
        return f"from fastai.learner import load_learner; load_learner('{learner}').predict('photo.jpg') needs {needs}"

    # --- datablock ------------------------------------------------------------------------------------------------
    def keep(self, df, holdout, root: Path, cfg, ws, log):
        """(the images it can train on, before the split is made; vocab.json's fields that count the others)."""
        return df, {}

    def prepare(self, df, root: Path, cfg, ws, log) -> list[Path]:
        """What datablock writes for it, after the split is written (`writes`)."""
        raise NotImplementedError

    def warm(self, paths: list, cfg, folder: Path, log) -> int:
        """Fill the content stores its `prepare` reads (a distributed launch's ranks share this work): images looked
        at."""
        return 0

    # --- its model ------------------------------------------------------------------------------------------------
    def dataloaders(self, ws, cfg, batch_size: int | None = None):
        """fastai DataLoaders over the persisted split."""
        raise NotImplementedError

    def decide_runtime(self, t) -> runtime.Runtime:
        """This machine's choices (workers, precision, channels-last) for the [train] config `t`'s runtime entries
        and a model of this kind (`runtime.decide`)."""
        return runtime.decide(**t.entries(RUNTIME), suits_channels_last=self.channels_last)

    @staticmethod
    def batch_tfms(t) -> list:
        """The training-batch augmentation the [train] config `t` asks for (`loaders.batch_augmentation`)."""
        from ..data.loaders import batch_augmentation

        return batch_augmentation(t.image_size, t.grayscale, t.augment, t.augment_strength, t.random_crop_scale)

    def training_data(self, learn, ws, cfg, log):
        """`cache.training_data` for `cfg`: within the block `learn` trains from datablock's pixel cache where it
        has one for the config's pixels (a kind that reads whole photos, `datablock.cache`); yields whether it does."""
        from ..data import cache

        t = cfg.train
        return cache.training_data(learn, ws, log, self.pixels and cfg.datablock.cache, t.image_size, t.grayscale)

    def learner(self, dls, t, n_in: int, common: dict, ws):
        """Its fastai Learner on `dls`, with `common` (loss, optimiser, metrics, path) passed on."""
        raise NotImplementedError

    def make_learner(self, dls, cfg, ws):
        """A fastai Learner for `cfg.train.arch` (the one factory), with the loss, optimiser, metrics and runtime
        (precision, channels-last) every kind shares."""
        import fastai.callback.schedule  # noqa: F401  (adds Learner.fit_one_cycle, fine_tune, lr_find)
        from fastai.losses import CrossEntropyLossFlat, LabelSmoothingCrossEntropyFlat
        from fastai.metrics import accuracy, error_rate

        from ..models.training import opt_func

        t = cfg.train
        loss = LabelSmoothingCrossEntropyFlat(eps=t.label_smoothing) if t.label_smoothing else CrossEntropyLossFlat()
        common = dict(loss_func=loss, opt_func=opt_func(t.opt, t.momentum), metrics=[error_rate, accuracy],
                      path=ws.scratch, model_dir="models", wd=t.wd or None)
        learn = self.learner(dls, t, 1 if t.grayscale else 3, common, ws)
        learn.recorder.train_metrics = True
        runtime.apply(learn, self.decide_runtime(t))
        return learn

    def recognises(self, learn) -> bool:
        """Whether a loaded (exported) learner is one of this kind's."""
        return False

    def probs(self, engine, paths: list, batch_size: int, tta: int, log, folder: Path | None):
        """(probabilities, hand found or None) for photos, through the one call every engine answers
        (`engine.run`, offered the inputs this kind makes of them; `folder`: a data folder whose per-photo stores to
        reuse and fill, or None)."""
        raise NotImplementedError

    def read(self, engine, photo, detector):
        """(probabilities, or None with no hand; the keypoints or None) for one photo (a path, with a `detector()`)
        or one frame of a stream (an RGB array, with a `tracker()`), through `engine.run`."""
        raise NotImplementedError

    def onnx_plan(self, learn, t):
        """How `learn` exports to ONNX (`onnx_export.Plan`); a PipelineError says why it does not."""
        raise PipelineError(f"no ONNX export for a {self.name} model")

    def export_onnx(self, learn, path, t, log=print) -> dict:
        """Write the ONNX graph of `learn` to `path` (parity-checked, `onnx_export.export`) and return the model card's
        `onnx` entry; where it has no graph, an entry saying why, and no file."""
        from ..models import onnx_export

        try:
            plan = self.onnx_plan(learn, t)
        except PipelineError as e:
            log(f"no ONNX export: {e}")
            return {"file": None, "why": str(e)}
        return onnx_export.export(learn, path, plan, self.input, log)

    def detector(self):
        """A per-photo detector of its own for `read` (MediaPipe Hands: not thread-safe, one per concurrent reader),
        or None for a kind that needs none."""
        if self.finds_hands:
            from ..data import hands

            return hands.Detector()
        return None

    def tracker(self, track: bool = True):
        """A detector for `read` over the frames of one stream, following the hand from frame to frame (MediaPipe in
        video mode; `track=False` finds it afresh in each), or None for a kind that finds no hand."""
        if self.finds_hands:
            from ..data import hands

            return hands.Tracker(track=track)
        return None
