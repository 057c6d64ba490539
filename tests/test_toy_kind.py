"""A new model kind is one folder and one registration line: a toy kind (a tiny network over 64 features of a
photo) written to a temporary folder, imported and registered, is trained, exported (the .pkl and its ONNX graph),
evaluated, predicted and served by the pipeline as it is, without editing any file of it."""
import sys
import textwrap

import pytest

from tests.conftest import make_image_folder, tiny_config

TOY = {
    "data.py": '''
        """The toy kind's data: 64 features of a photo (its 8x8 gray thumbnail, 0-1), and datablock's table of them."""
        from pathlib import Path

        import numpy as np
        from PIL import Image

        from pipeline.core import artifacts
        from pipeline.core.workspace import pyplot, save_figure, write_csv

        COLUMNS = [f"px{i:02d}" for i in range(64)]


        def features(paths) -> np.ndarray:
            return np.stack([np.asarray(Image.open(p).convert("L").resize((8, 8)), np.float32).ravel() / 255
                             for p in paths])


        def prepare(df, root: Path, ws, log) -> list:
            import pandas as pd

            table = pd.DataFrame(features([root / p for p in df["path"]]), columns=COLUMNS)
            table.insert(0, "path", df["path"].to_numpy())
            plt = pyplot()
            fig, ax = plt.subplots()
            ax.imshow(table[COLUMNS].to_numpy()[:16])
            return [write_csv(ws.artifact("datablock", artifacts.LANDMARKS), table),
                    save_figure(fig, ws.artifact("datablock", artifacts.BATCH_PNG))]
        ''',
    "kind.py": '''
        """A toy kind: fastai's tabular MLP (one hidden layer of 16) on a photo's 64 thumbnail features."""
        from pipeline.core import artifacts
        from pipeline.kinds.base import Kind

        from . import data


        class Toy(Kind):
            name, input, archs, title = "toy thumbnail MLP", "toy", ("toy_mlp",), "toy model"
            writes, needs_package = (artifacts.LANDMARKS,), False

            def seen(self, image_size, grayscale=False):
                return "an 8x8 gray thumbnail"

            def recipe(self, cfg):
                return "thumbnail 8x8"

            def prepare(self, df, root, cfg, ws, log):
                return data.prepare(df, root, ws, log)

            def dataloaders(self, ws, cfg, batch_size=None):
                from pipeline.kinds.landmarks.data import keypoint_table
                from pipeline.kinds.shared.model import dataloaders

                bs = batch_size or cfg.train.batch_size
                df, _, table, vocab = keypoint_table(ws, bs)
                return dataloaders(df, table, vocab, bs, data.COLUMNS)

            def learner(self, dls, t, n_in, common, ws):
                from fastai.tabular.learner import TabularLearner
                from fastai.tabular.model import TabularModel

                model = TabularModel([], 64, len(dls.vocab), [16], ps=0.0, embed_p=0.0, y_range=None)
                return TabularLearner(dls, model, **common)

            def recognises(self, learn):
                return list(getattr(learn.dls, "cont_names", []) or []) == data.COLUMNS

            def probs(self, engine, paths, batch_size, tta, log, folder):
                x = data.features(paths)
                return engine.run({"rows": x, "features": x}, batch_size, log), None

            def read(self, engine, photo, detector):
                x = data.features([photo])
                return engine.run({"rows": x, "features": x}, 1, lambda message: None)[0], None

            def onnx_plan(self, learn, t):
                from pipeline.kinds.landmarks.graph import landmark_plan

                plan = landmark_plan(learn)
                return plan._replace(entry={**plan.entry, "features": {"columns": data.COLUMNS,
                                                                       "how": "8x8 gray thumbnail / 255"}})
        ''',
}


@pytest.mark.slow
def test_a_kind_from_a_folder_of_its_own_trains_exports_predicts_and_serves(tmp_path, monkeypatch):
    import json

    from pipeline import kinds, runner
    from pipeline.serve import app

    folder = tmp_path / "toykind"
    folder.mkdir()
    (folder / "__init__.py").write_text("")
    for name, text in TOY.items():
        (folder / name).write_text(textwrap.dedent(text).lstrip())
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(kinds, "KINDS", kinds.KINDS)  # the registration is undone after the test
    monkeypatch.setattr(kinds, "INPUTS", kinds.INPUTS)
    from toykind.kind import Toy

    kinds.register(Toy())  # the one registration line

    src = make_image_folder(tmp_path / "src", classes=("A", "B", "C"), per_class=12, size=16)
    cfg = tiny_config(tmp_path, {
        "run.name": "toy", "download.source": f"path:{src}", "download.subdir": "", "datablock.valid_pct": 0.25,
        "datablock.input": "toy", "datablock.cache": False, "train.arch": "toy_mlp", "train.epochs": 3,
        "train.pretrained": False, "evaluate.tta": 0, "evaluate.test_sets": [{"name": "same", "source": f"path:{src}"}]})
    assert type(kinds.of(cfg)) is Toy
    runner.run(cfg, list(runner.STAGE_NAMES))

    run = tmp_path / "runs" / "toy"
    pkl = tmp_path / "exports" / "toy.pkl"
    card = json.loads(pkl.with_suffix(".json").read_text())
    assert card["family"] == "toy thumbnail MLP" and card["onnx"]["family"] == "toy" and card["onnx"]["file"]
    metrics = json.loads((run / "evaluate" / "same" / "metrics.json").read_text())
    assert metrics["scored"] == 36
    photos = sorted(src.rglob("*.png"))[:6]
    answers = {}
    for engine in ("fastai", "onnx"):
        model = kinds.load(pkl, engine)
        assert type(model.kind) is Toy
        answers[engine] = model.predict(photos, log=lambda m: None)
        top, drawn, reading = app.Reader(pkl, engine=engine, parallel=1).read(str(photos[0]))
        assert max(top, key=top.get) == answers[engine].labels[0] and drawn is None
    assert answers["fastai"].labels == answers["onnx"].labels
    assert abs(answers["fastai"].probs - answers["onnx"].probs).max() < 1e-4
    assert "toykind" in sys.modules
