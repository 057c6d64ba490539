"""train: fit the learner (fine_tune by default), plot its history, export it (`.pkl`, and `.onnx` checked for
parity against it) with a model card."""
from __future__ import annotations

import platform

from pipeline.core import artifacts, distributed, tracking
from pipeline.core.commit import run_folder_of
from pipeline.core.stagespec import StageSpec
from pipeline.core.workspace import (Workspace, pyplot, read_json, save_figure, save_torch, sha256_file, write_csv,
                                     write_json)
from pipeline import kinds
from pipeline.models import calibration, interpretation

STAGE = StageSpec(
    "train",
    summary="train (fine_tune by default), export the learner (.pkl and .onnx, parity-checked) and its model card",
    writes=(artifacts.HISTORY, artifacts.CURVES_PNG, artifacts.METRICS,  # and exports/<run>.pkl, .onnx, .json
            artifacts.PREDICTIONS, *artifacts.INTERPRETATION),  # the validation split's, as evaluate's per test set
    reads=lambda cfg: ("datablock", "lr_find") if cfg.train.base_lr == "lr_find" else ("datablock",),
    params=("train", "run.seed", "lr_find.suggestion"),
    ignores=("lr_find.start_lr", "lr_find.end_lr", "lr_find.num_it"),  # the sweep: in lr_find's outputs, an input
    exports=True, every_rank=True, builds_model=True, checkpoints=True)


def _plot_history(df, path):
    plt = pyplot()

    fig, (loss, acc) = plt.subplots(1, 2, figsize=(10, 4))
    x = df["epoch"] + 1
    for col, ax in (("loss", loss), ("accuracy", acc)):
        for split in ("train", "valid"):
            name = f"{split}_{col}"
            if name in df:
                ax.plot(x, df[name], marker="o", label=split)
        ax.set(xlabel="epoch", ylabel=col, title=col)
        ax.legend()
    return save_figure(fig, path)


def _versions() -> dict:
    import fastai
    import timm
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "fastai": fastai.__version__,
            "timm": timm.__version__}


def _calibrate(learn, log) -> dict:
    """Temperature scaling on the validation split, folded into the model's last Linear layer."""
    import torch.nn.functional as F
    from fastcore.basics import noop

    from pipeline.models import training

    with training.quiet(learn):
        logits, targets = learn.get_preds(dl=learn.dls.valid, act=noop)
    targets = targets.flatten().long()  # a tabular learner's come as an (N, 1) column of int8 codes
    t = calibration.fit_temperature(logits, targets)
    calibration.fold_temperature(learn.model, t, probe=learn.dls.valid.one_batch()[:learn.dls.n_inp])

    def summary(z):
        conf, pred = F.softmax(z, dim=1).max(dim=1)
        ece, _ = calibration.reliability(conf.numpy(), (pred == targets).numpy())
        return float(F.cross_entropy(z, targets)), ece

    (nll0, ece0), (nll1, ece1) = summary(logits), summary(logits / t)
    log(f"temperature {t:.3f} folded into the last layer: valid NLL {nll0:.4f} → {nll1:.4f}, "
        f"ECE {ece0:.4f} → {ece1:.4f}")
    return {"temperature": t, "valid_nll_before": nll0, "valid_nll_after": nll1, "valid_ece_before": ece0,
            "valid_ece_after": ece1}


def run(cfg, ws, log):
    from fastai.torch_core import set_seed

    from pipeline.models import training  # fastai: imported when the stage runs, not when its declaration is read

    t = cfg.train
    if t.base_lr == "lr_find":
        lr, lr_source = read_json(ws.artifact("lr_find", artifacts.LR_FIND))["chosen"], f"lr_find's {cfg.lr_find.suggestion}"
    else:
        lr, lr_source = t.base_lr, "train.base_lr, fixed"
    set_seed(cfg.run.seed, reproducible=True)
    kind = kinds.of(cfg)
    dls = kind.dataloaders(ws, cfg)
    learn = kind.make_learner(dls, cfg, ws)
    shape = kind.seen(t.image_size, t.grayscale)
    log(f"{t.method} {t.arch} (pretrained={t.pretrained}) for {t.epochs} epoch(s) at lr {lr:.2e} ({lr_source}), "
        f"{len(dls.train_ds)} train / {len(dls.valid_ds)} valid images, {shape}, bs {t.batch_size}")
    ckpt = ws.checkpoints("train")  # each epoch's checkpoint: the runner removes it once train commits
    if distributed.is_main():
        ckpt.mkdir(parents=True, exist_ok=True)
    distributed.barrier()
    key = ws.fingerprint  # the runner's: a checkpoint resumes only under the same config, inputs and code
    tracker = None
    if distributed.is_main():  # run.track: a resumed run goes on logging where it began
        from pipeline.models.checkpoints import read_checkpoint

        resumed = (read_checkpoint(ckpt, key) or {}).get("tracking")
        tracker = tracking.open_tracker(cfg.run.track, ws.root, "train", resumed)
    try:
        with kind.training_data(learn, ws, cfg, log) as cached, distributed.training(learn):
            rows, stopping = training.fit(learn, lr, log, method=t.method, epochs=t.epochs,
                                          freeze_epochs=t.freeze_epochs, lr_mult=t.lr_mult, patience=t.patience,
                                          monitor=t.monitor, checkpoints=ckpt, key=key, tracker=tracker)
        if not distributed.is_main():  # rank 0 writes every artifact
            return []
        return _export(cfg, ws, log, learn, dls, rows, stopping, lr, lr_source, tracker, cached)
    finally:
        if tracker:
            tracker.close()


def _export(cfg, ws, log, learn, dls, rows, stopping, lr, lr_source, tracker, cached):
    """The history, its plot and metrics, the export (.pkl, .onnx) and its card (`cached`: it trained from the pixel
    cache); the run's params and the exported model's metrics to `tracker`."""
    import pandas as pd

    from pipeline.models import training

    t, kind = cfg.train, kinds.of(cfg)
    history = pd.DataFrame(rows)
    write_csv(ws.artifact("train", artifacts.HISTORY), history)
    # the model as exported: the last epoch's, or with train.patience the best epoch's; a learner whose fit changes it
    # after that (kinds.shared.model.SettleBatchNorm) says how it validates then, in `final_valid`
    last = {**rows[stopping["best_epoch"] - 1 if stopping else -1], **getattr(learn, "final_valid", {})}
    metrics = {"valid_loss": last["valid_loss"], "valid_accuracy": last["valid_accuracy"],
               "valid_error_rate": last["valid_error_rate"], "epochs": len(rows), "lr": lr, "lr_source": lr_source,
               "train_seconds": round(sum(r["seconds"] for r in rows), 1),
               "runtime": {**kind.decide_runtime(t).as_dict(), "cache": cached},
               "distributed": distributed.describe(t.batch_size, lr),
               # the validation photos with a near-copy in training (data/leakage.py): how far valid_accuracy is
               # a figure on unseen photos; in the card too
               "valid_near_copies": read_json(ws.artifact("datablock", artifacts.VOCAB)).get("leakage"),
               **({"early_stopping": stopping} if stopping else {})}
    log(f"valid accuracy {metrics['valid_accuracy']:.4f}" + (f" (epoch {stopping['best_epoch']} of {len(rows)}: the best "
                                                             f"{t.monitor})" if stopping else ""))
    if t.calibrate:
        metrics["calibration"] = _calibrate(learn, log)
    valid, interpreted = interpretation.validation(learn, ws, kind.finds_hands, log)  # as exported
    metrics.update(valid)

    training.strip_for_export(learn)
    save_torch(ws.learner, learn.export)
    onnx = kind.export_onnx(learn, ws.onnx, t, log)
    if onnx["file"]:
        metrics["onnx_parity"] = onnx["parity"]
    card = {"run": cfg.run.name, "learner": ws.learner.name, "sha256": sha256_file(ws.learner),
            "run_folder": run_folder_of(Workspace.from_config(cfg)),  # whose export it is (`status`, `run`)
            "arch": t.arch, "family": kind.name, "pretrained": t.pretrained, "vocab": list(dls.vocab),
            **kind.card_fields(t),  # image_size, grayscale: None for a model that never sees pixels
            "normalisation": {k: v.flatten().tolist() for k, v in zip(("mean", "std"), training.normalisation(dls.valid))
                              if v is not None}, "input": cfg.datablock.input, "loading": kind.loading(ws.learner.name),
            "metrics": metrics, "onnx": onnx,
            "runtime": metrics["runtime"],
            "versions": _versions(), "config": cfg.to_saved_dict()}
    log(f"exported {ws.learner.name} (sha256 {card['sha256'][:12]}…): it replaces the one in the exports folder "
        "once train completes")
    if tracker:
        tracker.hparams(tracking.params(cfg.to_saved_dict()), {f"final/{k}": v for k, v in metrics.items()})
        log(f"tracked in {tracker.folder.relative_to(ws.root)} (TensorBoard: tensorboard --logdir "
            f"{ws.root / tracking.FOLDER})")
    return [ws.artifact("train", artifacts.HISTORY), _plot_history(history, ws.artifact("train", artifacts.CURVES_PNG)),
            write_json(ws.artifact("train", artifacts.METRICS), metrics), ws.learner,
            *([ws.onnx] if onnx["file"] else []), write_json(ws.model_card, card), *interpreted]
