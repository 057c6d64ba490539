"""Fingerprints, manifests, skip-if-unchanged and stale reasons, on the two cheap stages."""
import importlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline import config, runner
from pipeline.core import fingerprints
from pipeline.core.errors import PipelineError
from pipeline.core.workspace import Workspace, read_json
from tests.conftest import REPO, make_image_folder, subprocess_env, tiny_config


@pytest.fixture
def project(tmp_path):
    data = make_image_folder(tmp_path / "imgs", classes=("a", "b", "c"), per_class=5)
    # where a test trains: tiny_config's logistic regression, 2 epochs
    tiny_config(tmp_path, {"download.source": f"path:{data}", "download.subdir": "", "datablock.valid_pct": 0.4,
                           "train.epochs": 2})
    return tmp_path, data


def load(tmp_path, *overrides):
    return config.load(None, list(overrides), cwd=tmp_path)


def test_resolve_stages():
    assert runner.resolve_stages("all") == list(runner.STAGE_NAMES)
    assert runner.resolve_stages("evaluate,train") == ["train", "evaluate"]
    with pytest.raises(PipelineError, match="unknown stage 'trian'; stages are: all, download"):
        runner.resolve_stages("trian")


def test_each_stage_declares_itself_and_reading_the_declarations_imports_no_torch():
    """The runner keeps the order of the names; `STAGE` in stages/<name>.py says what the stage reads, uses and
    writes. Reading them (`stages`, `status`) imports neither torch nor fastai, nor pandas: the stages import those
    where they run."""
    assert [s.name for s in runner.STAGES] == list(runner.STAGE_NAMES)
    assert all(s is importlib.import_module(f"stages.{s.name}").STAGE for s in runner.STAGES)
    probe = "import sys, pipeline.cli; print(sorted({'torch', 'fastai', 'pandas'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=subprocess_env(), capture_output=True,
                         text=True, check=True).stdout
    assert out == "[]\n"


# Each stage's fingerprint as far as the config decides it: the first 16 hex digits of its config part, and the
# stages whose outputs it reads. Recorded for the shipped demo before the stages declared themselves in their own
# modules: a run that was up to date stays up to date (a change here means a rerun for every existing run).
RECORDED = {
    (): {"download": ("ed4eda932a0a5a36", ()), "datablock": ("a769ec1d0747dee1", ("download",)),
         "lr_find": ("84bbddad3be2caea", ("datablock",)), "train": ("118f9ea4ef55c0b5", ("datablock",)),
         "evaluate": ("fc3b71f8433f37e3", ("datablock", "train"))},  # datablock: the training photos (leakage)
    ("train.base_lr=lr_find", "datablock.cache=false", 'datablock.holdout=["data/7"]'): {
        "download": ("ed4eda932a0a5a36", ()), "datablock": ("9c80f2c46b89e25e", ("download",)),
        "lr_find": ("84bbddad3be2caea", ("datablock",)), "train": ("4848c820e9e4124c", ("datablock", "lr_find")),
        "evaluate": ("fc3b71f8433f37e3", ("datablock", "train"))},
}


@pytest.mark.parametrize("overrides", list(RECORDED))
def test_the_config_part_and_inputs_of_each_fingerprint_are_as_recorded(tmp_path, overrides):
    cfg = config.load(config.demo_config(), list(overrides), cwd=tmp_path)
    ws = Workspace(root=tmp_path, exports=tmp_path, data=tmp_path, name="x")
    assert {s.name: (fingerprints.fingerprint(cfg, ws, s).config[:16], s.reads(cfg)) for s in runner.STAGES} == \
        RECORDED[overrides]


@pytest.mark.slow
def test_rerun_skips_and_reasons(project, capsys):
    tmp_path, data = project
    stages = ["download", "datablock"]
    assert runner.run(load(tmp_path), stages) == {"download": "ran", "datablock": "ran"}
    ws = Workspace.from_config(load(tmp_path))
    m = read_json(fingerprints.manifest_path(ws, "datablock"))
    assert set(m["parts"]["inputs"]) == {"download"}
    assert any(k.endswith("splits.csv") for k in m["outputs"])
    assert runner.run(load(tmp_path), stages) == {"download": "skipped", "datablock": "skipped"}

    # a config change of one stage makes only that stage stale
    assert dict(runner.status(load(tmp_path, "datablock.valid_pct=0.5")))["datablock"] == "config changed"
    assert dict(runner.status(load(tmp_path, "datablock.valid_pct=0.5")))["download"] == "up to date"
    # train.epochs does not touch download/datablock/lr_find
    st = dict(runner.status(load(tmp_path, "train.epochs=9")))
    assert st["download"] == st["datablock"] == "up to date" and st["lr_find"] == "never run"

    # new data in the source folder: download is stale; after it reruns, datablock's input changed
    make_image_folder(data, classes=("d",), per_class=5, seed=1)
    assert dict(runner.status(load(tmp_path)))["download"] == "source data changed"
    assert runner.run(load(tmp_path), ["download"]) == {"download": "ran"}
    assert dict(runner.status(load(tmp_path)))["datablock"] == "input changed (download)"

    # asking for datablock alone names nothing stale upstream; a damaged output is caught
    runner.run(load(tmp_path), ["datablock"])
    split = ws.artifact("datablock", "splits.csv")
    split.write_text(split.read_text() + "x,y,False\n")
    assert dict(runner.status(load(tmp_path)))["datablock"].startswith("output datablock/splits.csv was modified")
    split.unlink()
    assert dict(runner.status(load(tmp_path)))["datablock"] == "output datablock/splits.csv is missing"
    assert runner.run(load(tmp_path), ["datablock"], force=False) == {"datablock": "ran"}
    assert runner.run(load(tmp_path), ["datablock"], force=True) == {"datablock": "ran"}


@pytest.mark.slow
def test_touching_a_file_without_changing_it_keeps_outputs_valid(project):
    tmp_path, _ = project
    runner.run(load(tmp_path), ["download", "datablock"])
    ws = Workspace.from_config(load(tmp_path))
    p = ws.artifact("datablock", "vocab.json")
    later = time.time() + 5
    os.utime(p, (later, later))
    assert dict(runner.status(load(tmp_path)))["datablock"] == "up to date"


def test_missing_input_names_the_stage_to_run(project):
    tmp_path, _ = project
    with pytest.raises(PipelineError, match=r"datablock needs the outputs of download.*--stages download,datablock"):
        runner.run(load(tmp_path), ["datablock"])


def test_stale_upstream_is_named(project, capsys):
    tmp_path, _ = project
    runner.run(load(tmp_path), ["download", "datablock"])
    capsys.readouterr()
    runner.run(load(tmp_path, "download.subdir=a"), ["datablock"])
    out = capsys.readouterr().out
    assert "[datablock] note: download is stale (config changed)" in out


def _snapshot(ws):
    return {p.relative_to(ws.root).as_posix(): p.read_bytes() for p in sorted(ws.root.rglob("*")) if p.is_file()
            and not p.name == "config.json"}


@pytest.mark.slow
@pytest.mark.parametrize("failure", [KeyboardInterrupt(), PipelineError("boom")])
def test_a_failed_or_interrupted_stage_keeps_its_previous_outputs(project, monkeypatch, failure):
    """The new outputs go to a staging folder; the previous outputs and manifest stay valid until then."""
    tmp_path, _ = project
    runner.run(load(tmp_path), ["download", "datablock"])
    ws = Workspace.from_config(load(tmp_path))
    before = _snapshot(ws)
    mod = runner.BY_NAME["datablock"].load()

    def half_done(cfg, ws, log):
        ws.artifact("datablock", "splits.csv").write_text("path,label,is_valid\n")  # a partial output
        raise failure

    monkeypatch.setattr(mod, "run", half_done)
    with pytest.raises(type(failure)):
        runner.run(load(tmp_path, "datablock.valid_pct=0.5"), ["datablock"])   # the config changed, then it failed
    assert _snapshot(ws) == before
    assert not ws.staging_dir("datablock").exists()
    assert runner.status(load(tmp_path)) == [("download", "up to date"), ("datablock", "up to date"),
                                             ("lr_find", "never run"), ("train", "never run"),
                                             ("evaluate", "never run")]


def test_a_commit_cut_short_is_finished_by_the_next_run(project, monkeypatch):
    """Killed between moving the old folder aside and moving the new one in: the next run completes the swap."""
    tmp_path, _ = project
    runner.run(load(tmp_path), ["download", "datablock"])
    ws = Workspace.from_config(load(tmp_path))
    real = os.replace

    def killed(src, dst):
        if str(src) == str(ws.staging_dir("datablock")):
            raise KeyboardInterrupt
        return real(src, dst)

    monkeypatch.setattr(runner.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        runner.run(load(tmp_path, "datablock.valid_pct=0.5"), ["datablock"])
    monkeypatch.setattr(runner.os, "replace", real)
    assert (ws.staging_dir("datablock") / "manifest.json").is_file() and not ws.stage_dir("datablock").exists()
    assert runner.run(load(tmp_path, "datablock.valid_pct=0.5"), ["download", "datablock"]) == {
        "download": "skipped", "datablock": "skipped"}
    assert read_json(ws.artifact("datablock", "vocab.json"))["valid_pct"] == 0.5
    assert not ws.staging_dir("datablock").exists() and not (ws.root / ".datablock.old").exists()


def test_an_unknown_arch_stops_the_run_before_any_stage(project, capsys):
    tmp_path, _ = project
    runner.run(load(tmp_path), ["download"])
    capsys.readouterr()
    with pytest.raises(PipelineError, match="unknown arch 'resnet19'"):
        runner.run(load(tmp_path, "train.arch=resnet19"), ["download", "datablock", "lr_find"], force=True)
    assert capsys.readouterr().out == ""
    assert dict(runner.status(load(tmp_path)))["download"] == "up to date"


def test_code_files_follow_the_import_graph():
    """Each stage's code is what stages/<name>.py reaches through imports inside pipeline/ (the hand-kept lists
    missed datasets for download and evaluate, training for evaluate, baselines for lr_find and train)."""
    files = {s: fingerprints.code_files(s, runner.BY_NAME[s].model_code) for s in runner.STAGE_NAMES}
    names = {s: {p.relative_to(REPO).as_posix() for p in f} for s, f in files.items()}
    assert {"stages/download.py", "pipeline/data/datasets.py", "pipeline/data/sources.py", "pipeline/data/sign_mnist.py",
            "pipeline/data/idx.py"} <= names["download"]
    assert {"stages/evaluate.py", "pipeline/data/datasets.py", "pipeline/models/inference.py", "pipeline/data/labels.py",
            "pipeline/models/calibration.py"} <= names["evaluate"]
    model = {f"pipeline/kinds/{k}/model.py" for k in ("images", "landmarks", "hand_crop", "hand_fused", "hand_net")}
    assert model | {"pipeline/models/backbones.py", "pipeline/models/training.py"} <= names["lr_find"] & names["train"]
    assert model <= names["evaluate"]
    assert "pipeline/models/interpretation.py" not in names["download"] | names["datablock"] | names["lr_find"]


def test_download_holds_no_model_code_and_datablock_only_the_kinds_data_preparation():
    """A model edit leaves download up to date, and datablock too unless a kind's data preparation changed: download
    reaches no kind and no model module; datablock reaches the kinds' classes and data preparation (each kind's
    `data.py`, `shared/data.py`) and no network, learner, graph or training code."""
    def names(stage):
        return {p.relative_to(REPO).as_posix() for p in fingerprints.code_files(stage, runner.BY_NAME[stage].model_code)}

    download, datablock = names("download"), names("datablock")
    assert not {n for n in download if n.startswith(("pipeline/kinds/", "pipeline/models/"))}, download
    kinds_code = {n for n in datablock if n.startswith("pipeline/kinds/")}
    assert {f"pipeline/kinds/{k}/data.py" for k in ("images", "landmarks", "hand_crop", "hand_net", "shared")} <= kinds_code
    assert {Path(n).name for n in kinds_code} <= {"__init__.py", "base.py", "loaded.py", "kind.py", "data.py"}, kinds_code
    assert not {n for n in datablock if n.startswith("pipeline/models/")}, datablock
    # and the stages that build or run a model count it all
    assert {"pipeline/kinds/landmarks/model.py", "pipeline/kinds/hand_net/graph.py",
            "pipeline/models/training.py"} <= names("train")


def test_a_kinds_data_preparation_imports_no_model_code():
    """What keeps datablock's fingerprint honest: a kind's data module (and shared/data.py) imports nothing that
    `fingerprints.is_model_code` leaves out of it."""
    for f in sorted((REPO / "pipeline" / "kinds").rglob("data.py")):
        package = ".".join(f.relative_to(REPO).with_suffix("").parts[:-1])
        model = {m for m in fingerprints._imported_modules(f, package) if fingerprints.is_model_code(m)}
        assert not model, f"{f.relative_to(REPO)} imports model code: {sorted(model)}"


@pytest.mark.slow
def test_editing_a_module_a_stage_uses_makes_it_stale(project, monkeypatch, tmp_path_factory):
    """Edit a pipeline module only datablock reaches: status says datablock's code changed, download stays."""
    import shutil

    tmp_path, _ = project
    pkg = tmp_path_factory.mktemp("pkg") / "pipeline"
    shutil.copytree(fingerprints.PKG, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(fingerprints, "PKG", pkg)  # where code_files looks for the package's modules
    runner.run(load(tmp_path), ["download", "datablock"])
    assert dict(runner.status(load(tmp_path)))["datablock"] == "up to date"
    used = {p.name for p in fingerprints.code_files("datablock")} - {p.name for p in fingerprints.code_files("download")}
    assert "splitting.py" in used
    with open(pkg / "data" / "splitting.py", "a") as f:
        f.write("\n# an edit\n")
    st = dict(runner.status(load(tmp_path)))
    assert st["datablock"] == "code changed" and st["download"] == "up to date"
    assert st["lr_find"] == "never run"


@pytest.mark.parametrize("stage", ["lr_find", "train"])
def test_a_batch_larger_than_the_training_split_is_one_line(project, stage):
    tmp_path, _ = project
    cfg = load(tmp_path, "train.batch_size=64", "train.base_lr=0.01")
    runner.run(cfg, ["download", "datablock"])
    with pytest.raises(PipelineError, match=r"^train.batch_size 64 is larger than the training split \(9 images\): "
                                            "lower train.batch_size$"):
        runner.run(cfg, [stage])


@pytest.mark.slow
def test_a_diverging_loss_stops_training_with_one_line_and_no_export(project):
    tmp_path, _ = project
    cfg = load(tmp_path, "train.batch_size=4", "train.base_lr=1e30")
    runner.run(cfg, ["download", "datablock"])
    with pytest.raises(PipelineError, match=r"^training diverged: the loss became (nan|inf) in epoch \d .*nothing was "
                                            "exported: lower train.base_lr"):
        runner.run(cfg, ["train"])
    ws = Workspace.from_config(cfg)
    assert not ws.learner.exists() and not ws.model_card.exists()
    assert dict(runner.status(cfg))["train"] == "never run"


@pytest.mark.slow
def test_a_full_disk_while_checkpointing_is_one_line_naming_the_file(project, monkeypatch):
    """torch reports a failed write as a RuntimeError from its zip writer (here: the real one, writing to /dev/full);
    the run stops with `cannot write PATH: No space left on device`, and nothing is exported."""
    import collections

    import torch

    tmp_path, _ = project
    cfg = load(tmp_path, "train.batch_size=4", "train.base_lr=0.01")
    runner.run(cfg, ["download", "datablock"])
    real_save = torch.save
    monkeypatch.setattr(torch, "save", lambda obj, f, *a, **k: real_save(obj, "/dev/full", *a, **k))
    vfs = collections.namedtuple("vfs", "f_bavail f_frsize")
    monkeypatch.setattr(os, "statvfs", lambda path: vfs(0, 4096))
    ws = Workspace.from_config(cfg)
    ckpt = ws.scratch / "train" / "checkpoint.pth"
    with pytest.raises(PipelineError, match=f"^cannot write {ckpt}: No space left on device$"):
        runner.run(cfg, ["train"])
    assert not ws.learner.exists() and not list(ckpt.parent.glob(".*.tmp"))


def test_an_unreadable_image_with_verify_off_is_one_line_naming_the_option(project):
    tmp_path, data = project
    for c in "abc":
        for i in range(3):
            (data / c / f"broken{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    cfg = load(tmp_path, "datablock.verify=false", "train.batch_size=4", "train.base_lr=0.01")
    with pytest.raises(PipelineError, match=r"^an image could not be decoded \(UnidentifiedImageError: cannot identify "
                                            r"image file .*broken.*; datablock.verify = false skips the image checks"):
        runner.run(cfg, ["download", "datablock"])


@pytest.mark.slow
def test_answers_do_not_depend_on_the_current_folder(tmp_path, monkeypatch, capsys):
    """Relative paths resolve against the config file's folder and manifests are relative to the run folder: status
    and run give the same answers from a subfolder, also with an absolute run.workdir."""
    from pipeline import cli

    project = tmp_path / "proj"
    make_image_folder(project / "imgs", classes=("a", "b"), per_class=4)
    (project / "sub").mkdir()
    tiny_config(project, {"run.workdir": str(tmp_path / "elsewhere"), "download.source": "path:imgs",
                          "download.subdir": ""})
    monkeypatch.chdir(project)
    assert cli.main(["run", "--stages", "download,datablock"]) == 0
    here = capsys.readouterr().out
    monkeypatch.chdir(project / "sub")
    assert cli.main(["status", "--config", "../pipeline.toml"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:4] == [f"config {project / 'pipeline.toml'}", f"run    t ({tmp_path / 'elsewhere' / 't'})",
                       "download   up to date", "datablock  up to date"]
    assert cli.main(["run", "--config", "../pipeline.toml", "--stages", "download,datablock"]) == 0
    assert "ran nothing; skipped download, datablock" in capsys.readouterr().out
    assert f"under {project / 'imgs'}" in here
    m = read_json(tmp_path / "elsewhere" / "t" / "datablock" / "manifest.json")
    assert "datablock/splits.csv" in m["outputs"]


def test_the_demo_resolves_against_the_current_folder(tmp_path):
    cfg = config.load(None, cwd=tmp_path)
    assert Path(cfg.project_dir) == tmp_path and Workspace.from_config(cfg).root == tmp_path / "runs" / "demo"
    named = config.load(config.demo_config(), cwd=tmp_path)
    assert Workspace.from_config(named).root == tmp_path / "runs" / "demo"
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "x.toml").write_text('[download]\nsource = "sign_mnist:path:../data/s"\n')
    other = config.load(tmp_path / "c" / "x.toml", cwd=tmp_path / "elsewhere")
    assert other.download.source == f"sign_mnist:path:{tmp_path / 'data' / 's'}"
    assert Workspace.from_config(other).root == tmp_path / "c" / "runs" / "demo"


@pytest.mark.slow
def test_long_loops_print_progress_in_a_log_and_epochs_are_numbered_alike_in_a_terminal(project, monkeypatch, capsys):
    from pipeline.core import progress
    from pipeline.models import training

    tmp_path, _ = project
    monkeypatch.setattr(progress, "EVERY_S", 0.0)                 # a line per batch: what 30 s would give on big data
    cfg = load(tmp_path, "train.batch_size=2", "train.base_lr=lr_find", "lr_find.num_it=6")
    runner.run(cfg, ["download", "datablock", "lr_find", "train"])
    log = capsys.readouterr().out
    assert "[datablock] verified: 1/15 images (7 %)" in log
    assert "[lr_find] lr_find sweep: 1/6 batches (17 %)" in log and ", loss " in log
    assert "[train] epoch 2 (fit_one_cycle): 4/4 batches (100 %)" in log and "ETA" in log
    assert "[train] epoch 1 (fit_one_cycle), validation: 3/3 batches (100 %)" in log
    logged = [line for line in log.splitlines() if line.startswith("[train] epoch ") and "train_loss" in line]

    monkeypatch.setattr(training, "interactive", lambda: True)     # a terminal: fastai's bar, the same epoch lines
    runner.run(cfg, ["train"], force=True)
    shown = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[train] epoch ")]
    assert [line.split(" train_loss")[0] for line in shown] == [line.split(" train_loss")[0] for line in logged]
    assert [line.split(" train_loss")[0] for line in logged] == ["[train] epoch 1 (fit_one_cycle)",
                                                                 "[train] epoch 2 (fit_one_cycle)"]


@pytest.mark.slow
def test_a_fixed_base_lr_is_said_in_the_log_and_the_report(project, capsys):
    from pipeline import report

    tmp_path, _ = project
    cfg = load(tmp_path, "train.batch_size=2", "train.base_lr=0.01", "lr_find.num_it=6")
    runner.run(cfg, ["download", "datablock", "lr_find", "train"])
    log = capsys.readouterr().out
    assert "[lr_find] train.base_lr is fixed at 1.00e-02: train does not use this sweep's suggestion" in log
    assert "epoch(s) at lr 1.00e-02 (train.base_lr, fixed)" in log
    page = report.build(cfg, runner.status(cfg)).read_text()
    assert "<th>used by train</th><td>1.00e-02 (train.base_lr, fixed)</td>" in page



def test_a_source_listing_key_follows_the_code_that_labels_it(project, monkeypatch, tmp_path_factory):
    """download carries a source's entry over while its key is unchanged: the key covers every module the listing
    code reaches (labels.py through datasets.py), so a labels.py edit re-lists the source (it was left out)."""
    import shutil

    from stages import download

    tmp_path, _ = project
    pkg = tmp_path_factory.mktemp("pkg") / "pipeline"
    shutil.copytree(fingerprints.PKG, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(fingerprints, "PKG", pkg)

    src = load(tmp_path).download.training_sources()[0]
    before = download._key(src)
    assert download._key(src) == before
    with open(pkg / "data" / "labels.py", "a") as f:
        f.write("\n# an edit\n")
    assert download._key(src) != before


def test_every_config_entry_is_a_stage_param_or_declared_as_not_one():
    """A new config key cannot be forgotten: each is in some stage's params (whole section or key) or in
    `stagespec.NOT_PARAMS`, and a stage that takes part of a section names every other key of it in `ignores`
    (lr_find left out label_smoothing, augment_strength and random_crop_scale, so changing them left it up to date)."""
    import dataclasses

    from pipeline.core import stagespec

    cfg = config.Config()
    cfg.datablock.cache, cfg.train.base_lr = True, "lr_find"  # turn on every conditional entry
    cfg.datablock.holdout = ["g"]
    sections = ("run", "download", "datablock", "lr_find", "train", "evaluate")
    fields = {f"{s}.{f.name}" for s in sections for f in dataclasses.fields(getattr(cfg, s))}
    covered = set(stagespec.NOT_PARAMS)
    for stage in runner.STAGES:
        keys = set(stage.keys(cfg))
        covered |= {f for f in fields if f in keys or f.partition(".")[0] in keys}
        for section in {k.partition(".")[0] for k in keys} - keys:  # the sections it takes in part
            left = {f for f in fields if f.startswith(section + ".")} - keys - set(stage.ignored(cfg)) - set(stagespec.NOT_PARAMS)
            assert not left, f"{stage.name} neither uses nor ignores {sorted(left)}"
        assert not set(stage.ignored(cfg)) & keys
    assert fields - covered == set()


def test_with_verify_off_only_a_decoding_failure_is_blamed_on_an_image(project):
    """`datablock.verify = false` turns an image PIL cannot decode into one line naming the option; any other
    ValueError (here a damaged JSON artifact) was reported as "an image could not be decoded" too."""
    import json

    tmp_path, _ = project
    cfg = load(tmp_path, "datablock.verify=false")
    runner.run(cfg, ["download"])
    (Workspace.from_config(cfg).root / "download" / "dataset.json").write_text("{not json")
    with pytest.raises(json.JSONDecodeError):
        runner.run(cfg, ["datablock"])


def test_a_new_train_entry_needs_only_its_role_and_leaves_up_to_date_runs_up_to_date():
    """Each stage's params and ignores follow from the role config.py gives a train entry: a new "model" entry
    reaches lr_find's and train's fingerprints, a new "schedule" entry train's alone, datablock ignores both; an
    entry tagged `later` changes no fingerprint while at its default."""
    import dataclasses

    assert {f.metadata.get("role") for f in dataclasses.fields(config.TrainCfg)} <= set(config.ROLES)

    @dataclasses.dataclass
    class More(config.TrainCfg):
        depth: int = config.entry(2, config.MODEL, later="field")
        patience: int = config.entry(0, config.SCHEDULE, later="field")

    before = config.Config()
    cfg = config.Config()
    cfg.train = More()
    stages = {s.name: s for s in runner.STAGES}
    assert "train.depth" in stages["lr_find"].keys(cfg) and "train.patience" in stages["lr_find"].ignored(cfg)
    assert {"train.depth", "train.patience"} <= set(stages["datablock"].ignored(cfg))
    for stage in runner.STAGES:  # at their defaults, every stage's config part is what it was without them
        assert fingerprints._config_part(cfg, stage.keys(cfg)) == fingerprints._config_part(before, stage.keys(before))
    cfg.train.depth, cfg.train.patience = 3, 5
    assert fingerprints._config_part(cfg, stages["lr_find"].keys(cfg))["train.depth"] == 3
    assert fingerprints._config_part(cfg, stages["train"].keys(cfg))["train"]["patience"] == 5
    assert "train.patience" not in fingerprints._config_part(cfg, stages["lr_find"].keys(cfg))
