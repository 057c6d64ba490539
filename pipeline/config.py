"""Config: one dataclass per TOML section, `--set` overrides typed against the field, strict keys.

Longer than the house's ~300 lines on purpose: the whole schema (every key with its default and comment, and its
range check in `validate`) stays in one file, so a key is found, and checked, in one place.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from .core import tracking
from .core.errors import PipelineError
from .core.stagespec import DATA, MODEL, ROLES, RUNTIME, SCHEDULE  # noqa: F401  (ROLES: for readers of config)
from .models import card

if sys.version_info >= (3, 11):
    import tomllib
else:  # pyproject installs tomli there: the same parser, before it joined the standard library
    import tomli as tomllib

def demo_config() -> Path:
    """The embedded demo config: an installed wheel carries it as pipeline/configs/demo.toml (pyproject maps
    configs/ there), a checkout has the repo's configs/demo.toml."""
    installed = Path(__file__).resolve().parent / "configs" / "demo.toml"
    return installed if installed.is_file() else installed.parent.parent.parent / "configs" / "demo.toml"


# A train entry's role (DATA, MODEL, SCHEDULE, RUNTIME: core/stagespec.py) says which stages' results it changes.


def entry(default, role: str, later: str = ""):
    """A config field with its `role` (ROLES) and, for an entry added after fingerprints were first recorded,
    `later`: "field" (left out of every fingerprint while at its default) or "key" (left out while at its default
    where a stage takes it as a single entry; a stage that takes the whole section keeps it): an up-to-date run
    stays up to date when a release adds an entry it does not use (`fingerprints._config_part`)."""
    return field(default=default, metadata={"role": role, "later": later})


@dataclass
class RunCfg:
    name: str = "demo"            # run name: runs/<name>/, exports/<name>.pkl
    seed: int = 42                # global seed (split, sampling, training)
    workdir: str = "runs"         # per-run artifacts, relative to the config file's folder
    exports: str = "exports"      # exported learners
    data_dir: str = "data"        # download cache (datasets, converted weights)
    track: str = "none"           # none | tensorboard: each run's metrics and params as event files in runs/<name>/tracking/


@dataclass
class FolderCfg:
    """A folder of labelled photos, a training source ([[download.sources]]) or a test set ([[evaluate.test_sets]]):
    where it is and how its labels are read (data/labels.py)."""
    name: str = ""                # names it in logs, splits.csv and plots (a source), or evaluate's folder (a test set)
    source: str = ""              # same syntax as download.source
    subdir: str = ""              # image root inside the source; "" = auto-detect
    label_regex: str = ""         # group 1 of a match on the file name is the label; "" = the class folder's name
    label_map: dict[str, str] = field(default_factory=dict)  # labels renamed after reading, e.g. {"Del" = "del"}
    uppercase: bool = False       # map labels to upper case (e.g. Massey's lowercase letters)


@dataclass
class SourceCfg(FolderCfg):
    class_regex: str = ""         # keep only the labels this fully matches (after the label rules); "" = all
    group_regex: str = ""         # group 1 of a match on the path relative to the source's root = the signer or
                                  # session (e.g. '^(hand\d+)_'); "" = the whole source is one group
    fold: str = "group"           # group | source: crossval --by group holds this source out a group at a time or whole

    def rules(self) -> dict:
        """Its name and how its labels and groups are read, as `datasets.labelled_images` takes them."""
        return {"name": self.name, "label_regex": self.label_regex, "label_map": dict(self.label_map),
                "uppercase": self.uppercase, "class_regex": self.class_regex, "group_regex": self.group_regex}


DEFAULT_SOURCE = "data"  # the name of a config's single `download.source`


@dataclass
class DownloadCfg:
    source: str = "sklearn:digits"  # kaggle:OWNER/SLUG | path:DIR_OR_ARCHIVE | url:URL | sklearn:digits
                                    # | sign_mnist:SOURCE (CSVs) | mnist:SOURCE (IDX files)
    subdir: str = ""                # image root inside the source; "" = auto-detect
    # several training sources ([[download.sources]]); when set, source and subdir above are unused
    sources: list[SourceCfg] = field(default_factory=list, metadata={"later": "field"})

    def training_sources(self) -> list[SourceCfg]:
        """`sources`, or the single `source`/`subdir` as one source named "data" (class folders, no label rules:
        the layout every single-source config has used)."""
        return list(self.sources) or [SourceCfg(name=DEFAULT_SOURCE, source=self.source, subdir=self.subdir)]


@dataclass
class DatablockCfg:
    valid_pct: float = 0.2        # RandomSplitter's validation fraction
    max_per_class: int = 0        # 0 = all images; else a seeded sample per class
    verify: bool = True           # open every image; corrupt ones are listed and excluded
    cache: bool = False           # decode+resize every image once (at train.image_size) into cache.npy; train from it
    input: str = "images"         # images | landmarks (MediaPipe hand keypoints into landmarks.csv; train.arch = "landmark_mlp")
                                  # | hand_crop (a square around the hand MediaPipe finds: a backbone's name, or "hand_fused")
                                  # | hand_net (keypoints + MediaPipe's hand-network embedding; train.arch = "landmark_mlp")
    # random (RandomSplitter) | group (whole groups, e.g. signers, into validation)
    # | monitor (valid_pct of every group: the shipped model trains on every signer)
    split: str = field(default="random", metadata={"later": "field"})
    # groups (or source names) left out of training and validation; evaluate scores them as the test set "holdout"
    # (crossval folds)
    holdout: list[str] = field(default_factory=list, metadata={"later": "field"})


LR_SUGGESTIONS = ("valley", "slide", "minimum", "steep")  # fastai's lr_find suggestions, in the order it names them


@dataclass
class LrFindCfg:
    suggestion: str = "valley"    # valley | slide | minimum | steep: the one train uses when base_lr = "lr_find"
    start_lr: float = 1e-7        # the sweep's first learning rate
    end_lr: float = 10.0          # the sweep's last learning rate
    num_it: int = 100             # mini-batches the sweep takes, the rate growing exponentially


@dataclass
class TrainCfg:
    # resnet18/34/50 (torchvision), any timm name, or a name a model kind builds (pipeline/kinds/: the
    # baselines logreg/mlp/cnnnet/aslnet; landmark_mlp, hand_fused, late_fusion for datablock.input's hand kinds)
    arch: str = entry("tf_efficientnet_lite0", MODEL)
    pretrained: bool = entry(True, MODEL)  # start from ImageNet weights (lite0's ship offline; resnets' download once)
    method: str = entry("fine_tune", SCHEDULE)  # fine_tune | fit_one_cycle | fit
    base_lr: float | str = entry("lr_find", SCHEDULE)  # a number, or "lr_find" to take lr_find's chosen suggestion
    epochs: int = entry(4, SCHEDULE)  # training epochs (fine_tune: the unfrozen ones, after freeze_epochs)
    freeze_epochs: int = entry(1, SCHEDULE)  # fine_tune only
    lr_mult: float = entry(100.0, SCHEDULE)  # fine_tune only: the body's earliest layers train at base_lr / lr_mult
    head_dropout: float = entry(0.5, MODEL)  # dropout (fastai `ps`) in the head vision_learner puts on a backbone
    batch_size: int = entry(64, MODEL)  # images a training batch (per process when distributed)
    image_size: int = entry(224, DATA)  # pixels of the square each image is resized to (hand_crop: the crop's)
    grayscale: bool = entry(False, DATA)  # single-channel input (baselines)
    opt: str = entry("adam", MODEL)  # adam | sgd
    momentum: float = entry(0.9, MODEL)  # sgd only
    wd: float = entry(0.0, MODEL)  # weight decay (0 = fastai default)
    augment: bool = entry(False, MODEL)  # fastai aug_transforms (no flips)
    # default | strong (stronger lighting, rotation, zoom, warp; hue and saturation)
    augment_strength: str = entry("default", MODEL, later="key")
    # > 0: RandomResizedCropGPU(min_scale) on every training batch (0 = off)
    random_crop_scale: float = entry(0.0, MODEL, later="key")
    label_smoothing: float = entry(0.0, MODEL, later="key")  # > 0: LabelSmoothingCrossEntropy(eps)
    # landmarks input: turn each training hand by a random 3D rotation up to ± this many degrees
    landmark_rotate: float = entry(0.0, MODEL)
    # landmarks input: mirror each training hand left to right with this probability
    landmark_mirror: float = entry(0.0, MODEL, later="field")
    # landmarks input: coords | coords+shape (+ keypoint distances and hand direction)
    landmark_features: str = entry("coords", MODEL)
    # hand_fused: the frozen timm backbone whose pooled crop embedding it reads
    crop_backbone: str = entry("tf_efficientnet_lite0", MODEL, later="field")
    # hand_fused: none (the crop embedding alone) | keypoints (+ the 64 keypoint features: early fusion)
    crop_fusion: str = entry("none", MODEL, later="field")
    calibrate: bool = entry(False, SCHEDULE)  # fit a temperature on the validation split, fold it into the last layer
    # > 0: a phase stops after this many epochs without a better `monitor`; the export is the best epoch's model
    # (0 = off: every epoch runs, the last one is exported)
    patience: int = entry(0, SCHEDULE, later="field")
    monitor: str = entry("valid_loss", SCHEDULE, later="field")  # valid_loss | valid_accuracy: what patience watches
    num_workers: int = entry(-1, RUNTIME)  # DataLoader workers; -1 = auto for this machine (pipeline/core/runtime.py)
    precision: str = entry("auto", RUNTIME)  # auto | fp32 | fp16 | bf16 (auto: mixed precision on CUDA, fp32 on CPU)
    channels_last: str = entry("auto", RUNTIME)  # auto | on | off (auto: on for pretrained convnets on CUDA)

    def entries(self, role: str) -> dict:
        """The entries tagged `role` (ROLES), by name: what a function of that role takes as keywords
        (`runtime.decide(**t.entries(RUNTIME))`)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.metadata.get("role") == role}


@dataclass
class TestSetCfg(FolderCfg):
    """A test set evaluate scores: a FolderCfg and nothing more."""


@dataclass
class EvaluateCfg:
    batch_size: int = card.BATCH  # images scored a batch
    # the out-of-domain test sets ([[evaluate.test_sets]]), each scored into runs/<run>/evaluate/<name>/
    test_sets: list[TestSetCfg] = field(default_factory=list)
    trust_learner: bool = False   # skip the sha256 check of the export (only for a file you trust)
    tta: int = 0                  # > 0: test-time augmentation, mean of n augmented passes blended with the plain one
    engine: str = "fastai"        # fastai (the .pkl) | onnx (the .onnx with onnxruntime: no fastai, nothing unpickled)


@dataclass
class Config:
    run: RunCfg = field(default_factory=RunCfg)
    download: DownloadCfg = field(default_factory=DownloadCfg)
    datablock: DatablockCfg = field(default_factory=DatablockCfg)
    lr_find: LrFindCfg = field(default_factory=LrFindCfg)
    train: TrainCfg = field(default_factory=TrainCfg)
    evaluate: EvaluateCfg = field(default_factory=EvaluateCfg)
    source_file: str = ""         # where it was loaded from (not a TOML key)
    project_dir: str = "."        # relative paths in the config resolve against this (the config file's folder)

    def section(self, name: str) -> dict:
        """The resolved section `name` as plain JSON-able data."""
        return dataclasses.asdict(getattr(self, name))

    def to_dict(self) -> dict:
        return {s: self.section(s) for s in SECTIONS}

    def to_saved_dict(self) -> dict:
        """`to_dict` with every source redacted (a signed URL's token is a credential): what runs and cards keep."""
        from .data.sources import redact_source

        data = self.to_dict()
        data["download"]["source"] = redact_source(data["download"]["source"])
        for t in data["download"]["sources"] + data["evaluate"]["test_sets"]:
            t["source"] = redact_source(t["source"])
        return {"source_file": self.source_file, **data}


SECTIONS = ("run", "download", "datablock", "lr_find", "train", "evaluate")


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value, tp, where: str):
    """Check or convert `value` to the annotated type `tp`; `where` names the key in errors."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for t in typing.get_args(tp):
            try:
                return _coerce(value, t, where)
            except PipelineError as e:
                errors.append(str(e))
        raise PipelineError(f"{where}: expected {' or '.join(_type_name(t) for t in typing.get_args(tp))}, got {value!r}")
    if origin is dict:
        if not isinstance(value, dict):
            raise PipelineError(f"{where}: expected a table, got {value!r}")
        return {str(k): str(v) for k, v in value.items()}
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise PipelineError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise PipelineError(f"{where}: expected a table, got {value!r}")
        return _build(tp, value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise PipelineError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise PipelineError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise PipelineError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise PipelineError(f"{where}: expected a string, got {value!r}")
    raise TypeError(f"unsupported config type {tp}")


def _build(cls, data: dict, where: str):
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.name not in ("source_file", "project_dir")]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise PipelineError(f"unknown key {where}.{unknown[0]}; valid keys in [{where}]: {', '.join(names)}")
    return cls(**{k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()})


def _parse_set_value(raw: str, tp):
    """Turn the text of a `--set` value into the annotated type `tp` (TOML literal syntax, bare strings allowed)."""
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    if tp is str or (typing.get_origin(tp) in (typing.Union, types.UnionType) and str in typing.get_args(tp)
                     and not isinstance(value, (int, float))):
        return raw if not isinstance(value, str) else value
    return value


def apply_set(data: dict, assignment: str) -> None:
    """Apply one `SECTION.KEY=VALUE` override to the raw config table `data`."""
    if "=" not in assignment or "." not in assignment.split("=", 1)[0]:
        raise PipelineError(f"--set expects SECTION.KEY=VALUE, got {assignment!r}")
    dotted, raw = assignment.split("=", 1)
    section, key = dotted.strip().split(".", 1)
    if section not in SECTIONS:
        raise PipelineError(f"unknown config section [{section}] in --set; valid sections: {', '.join(SECTIONS)}")
    cls = typing.get_type_hints(Config)[section]
    hints = typing.get_type_hints(cls)
    if key not in hints:
        raise PipelineError(f"unknown key {section}.{key}; valid keys in [{section}]: {', '.join(hints)}")
    data.setdefault(section, {})[key] = _parse_set_value(raw.strip(), hints[key])




def _plain_name(name: str) -> bool:
    """Whether `name` can name one folder (no path separator, not `.` or `..`, no NUL)."""
    return bool(name) and not any(c in name for c in "/\\\0") and name not in (".", "..")


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def check_source(source: str, where: str) -> None:
    """The one-line error for a source string of none of the supported forms (before any stage starts)."""
    from .data.sources import check

    try:
        check(source)
    except PipelineError as e:
        raise PipelineError(f"{where}: {e}") from None


def validate(cfg: Config) -> None:
    """Reject values no stage could use, with the fix in the message."""
    lr, f = cfg.lr_find, cfg.train
    checks = [
        (0.0 < cfg.datablock.valid_pct < 1.0, "datablock.valid_pct must be between 0 and 1 (exclusive)"),
        (cfg.datablock.max_per_class >= 0, "datablock.max_per_class must be >= 0 (0 = all images)"),
        (0 < cfg.train.image_size <= card.MAX_IMAGE_SIZE,
         f"train.image_size must be a positive number of pixels, at most {card.MAX_IMAGE_SIZE}"),
        (cfg.train.batch_size > 0, "train.batch_size must be a positive integer"),
        (cfg.evaluate.batch_size > 0, "evaluate.batch_size must be a positive integer"),
        (cfg.train.epochs >= 1, "train.epochs must be >= 1"),
        (cfg.train.freeze_epochs >= 0, "train.freeze_epochs must be >= 0"),
        (cfg.train.method in ("fine_tune", "fit_one_cycle", "fit"), "train.method must be fine_tune, fit_one_cycle or fit"),
        (cfg.train.opt in ("adam", "sgd"), "train.opt must be adam or sgd"),
        (cfg.lr_find.suggestion in LR_SUGGESTIONS,
         f"lr_find.suggestion must be {', '.join(LR_SUGGESTIONS[:-1])} or {LR_SUGGESTIONS[-1]}"),
        (isinstance(cfg.train.base_lr, float) or cfg.train.base_lr == "lr_find",
         "train.base_lr must be a number or \"lr_find\""),
        (not isinstance(f.base_lr, float) or _positive(f.base_lr), "train.base_lr must be a finite number > 0"),
        (_positive(lr.start_lr) and _positive(lr.end_lr), "lr_find.start_lr and lr_find.end_lr must be finite numbers > 0"),
        (lr.start_lr < lr.end_lr, "lr_find.start_lr must be smaller than lr_find.end_lr"),
        (lr.num_it > 0, "lr_find.num_it must be >= 1"),
        (math.isfinite(f.wd) and f.wd >= 0, "train.wd must be a finite number >= 0"),
        (0 <= f.momentum <= 1, "train.momentum must be in [0, 1]"),
        (cfg.train.augment_strength in ("default", "strong"), "train.augment_strength must be default or strong"),
        (0.0 <= cfg.train.random_crop_scale < 1.0, "train.random_crop_scale must be in [0, 1) (0 = off)"),
        (0.0 <= cfg.train.label_smoothing < 1.0, "train.label_smoothing must be in [0, 1)"),
        (cfg.evaluate.tta >= 0, "evaluate.tta must be >= 0 (0 = off)"),
        (cfg.evaluate.engine in card.ENGINES, f"evaluate.engine must be {' or '.join(card.ENGINES)}"),
        (not (cfg.evaluate.engine == "onnx" and cfg.evaluate.tta),
         "evaluate.tta runs fastai's augmentations: use evaluate.engine = \"fastai\" with it"),
        (0.0 <= cfg.train.landmark_rotate <= 180.0, "train.landmark_rotate must be in [0, 180] degrees (0 = off)"),
        (0.0 <= cfg.train.landmark_mirror <= 1.0, "train.landmark_mirror must be a probability in [0, 1] (0 = off)"),
        (cfg.train.landmark_features in ("coords", "coords+shape"), "train.landmark_features must be coords or coords+shape"),
        (cfg.train.crop_fusion in ("none", "keypoints"), "train.crop_fusion must be none or keypoints"),
        (cfg.train.num_workers >= -1, "train.num_workers must be >= 0, or -1 for auto"),
        (cfg.train.precision in ("auto", "fp32", "fp16", "bf16"), "train.precision must be auto, fp32, fp16 or bf16"),
        (cfg.train.channels_last in ("auto", "on", "off"), "train.channels_last must be auto, on or off"),
        (math.isfinite(f.lr_mult) and f.lr_mult >= 1, "train.lr_mult must be a finite number >= 1"),
        (0 <= cfg.train.head_dropout < 1, "train.head_dropout must be in [0, 1)"),
        (0 <= cfg.run.seed < 2**32, "run.seed must be a whole number in [0, 2**32) (numpy's and torch's range)"),
        (f.patience >= 0, "train.patience must be >= 0 (0 = off: every epoch runs)"),
        (f.monitor in ("valid_loss", "valid_accuracy"), "train.monitor must be valid_loss or valid_accuracy"),
        (_plain_name(cfg.run.name), "run.name must be a plain name (it names runs/<name>/ and exports/<name>.pkl)"),
    ]
    for ok, message in checks:
        if not ok:
            raise PipelineError(message)
    tracking.check(cfg.run.track)  # a known tracker, and its package installed
    check_source(cfg.download.source, "download.source")
    for what, entries in (("evaluate.test_sets", cfg.evaluate.test_sets), ("download.sources", cfg.download.sources)):
        names = [t.name for t in entries]
        for t in entries:
            if not t.name or not t.source:
                raise PipelineError(f"every [[{what}]] needs a name and a source")
            if not _plain_name(t.name):
                raise PipelineError(f"{what} name {t.name!r} must be a plain name (it names a folder and a group)")
        if len(set(names)) != len(names):
            raise PipelineError(f"{what} names must be unique, got {names}")
        for t in entries:
            check_source(t.source, f"{'test set' if what == 'evaluate.test_sets' else 'source'} {t.name}")
    for s in cfg.download.sources:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", s.name):
            raise PipelineError(f"download.sources name {s.name!r} must be a plain name (letters, digits, _ . -): it "
                                "starts each of its groups' names")
        if s.fold not in ("group", "source"):
            raise PipelineError(f"download.sources {s.name}: fold must be group or source")
        for key in ("label_regex", "class_regex", "group_regex"):
            try:
                compiled = re.compile(getattr(s, key))
            except re.error as e:
                raise PipelineError(f"download.sources {s.name}: invalid {key} {getattr(s, key)!r}: {e}") from None
            if key != "class_regex" and getattr(s, key) and compiled.groups < 1:
                raise PipelineError(f"download.sources {s.name}: {key} {getattr(s, key)!r} needs a capture group")
    if cfg.datablock.split not in ("random", "group", "monitor"):
        raise PipelineError("datablock.split must be random, group or monitor")


def resolve_source(source: str, base: Path) -> str:
    """`source` with a relative `path:` made absolute against the folder `base` (a `sign_mnist:` or `mnist:` prefix
    kept)."""
    from .data.sources import split_converted

    prefix, inner = split_converted(source)
    scheme, _, rest = inner.partition(":")
    if scheme != "path" or not rest or Path(rest).expanduser().is_absolute():
        return source
    return f"{prefix}path:{os.path.normpath(base / rest)}"


def load(path: str | Path | None = None, overrides: list[str] = (), cwd: Path | None = None) -> Config:
    """Load the config at `path` (else ./pipeline.toml, else the embedded demo), apply `overrides`, validate.

    Relative paths in it (`run.workdir`, `run.exports`, `run.data_dir`, `path:` sources) resolve against the config
    file's folder, so every command gives the same answers from any folder; the embedded demo's (configs/demo.toml,
    also when named with --config) resolve against `cwd`, so the demo runs wherever it is started."""
    cwd = Path(cwd or Path.cwd())
    if path is None:
        path = cwd / "pipeline.toml" if (cwd / "pipeline.toml").exists() else demo_config()
    path = Path(path)
    if path.is_dir():
        raise PipelineError(f"config file {path} is a folder: name a .toml file (--config FILE)")
    if not path.exists():
        if path.is_symlink():  # a loop, or a link to nothing
            raise PipelineError(f"config file {path} is a symbolic link that leads to no file")
        raise PipelineError(f"config file {path} does not exist")
    project_dir = cwd if path.resolve() == demo_config() else path.resolve().parent
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise PipelineError(f"{path}: invalid TOML: {e}") from None
    except UnicodeDecodeError as e:
        raise PipelineError(f"{path}: not UTF-8 text (byte {e.start}): save the config as UTF-8") from None
    except OSError as e:
        raise PipelineError(f"cannot read the config file {path}: {e.strerror or e}") from None
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise PipelineError(f"{path}: unknown section [{unknown[0]}]; valid sections: {', '.join(SECTIONS)}")
    for assignment in overrides:
        apply_set(data, assignment)
    cfg = _build(Config, data, "config")
    cfg.source_file, cfg.project_dir = str(path.resolve()), str(project_dir.resolve())
    cfg.download.source = resolve_source(cfg.download.source, project_dir)
    for t in cfg.evaluate.test_sets + cfg.download.sources:
        t.source = resolve_source(t.source, project_dir)
    validate(cfg)
    return cfg


def dumps(cfg: Config) -> str:
    """The resolved config as JSON (saved with each run)."""
    return json.dumps(cfg.to_saved_dict(), indent=2, sort_keys=True)
