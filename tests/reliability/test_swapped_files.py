"""A model file swapped between its check and its load: the loaders read the file once and load the bytes they
hashed, so a `.pkl` replaced by a payload right after its sha256 was checked never runs (`predict --sha256`,
`evaluate` and `serve` load through `inference.load_verified`); the same for the `.onnx` and its card."""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
from pathlib import Path

import pytest

from pipeline.core.errors import PipelineError
from pipeline.models import inference


class Payload:
    """A pickle that, when unpickled, makes the folder `marker`: the proof that it ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


@pytest.fixture
def swap_after_hashing(monkeypatch):
    """`swap(path, data)`: once a sha256 of anything is next taken (the check), `path` is replaced by `data` on disk
    before the caller goes on: the race a loop swapping two files every few ms wins on a real disk."""
    pending = {}
    real = hashlib.sha256

    class Swapping:
        def __init__(self, *args, **kwargs):
            self._h = real(*args, **kwargs)

        def update(self, data):
            self._h.update(data)

        def hexdigest(self):
            digest = self._h.hexdigest()
            for path, data in list(pending.items()):
                Path(path).write_bytes(data)
                del pending[path]
            return digest

    def swap(path, data):
        pending[path] = data
        monkeypatch.setattr(hashlib, "sha256", Swapping)

    return swap


def test_a_pkl_swapped_for_a_payload_after_its_check_never_runs(tmp_path, swap_after_hashing):
    good = pickle.dumps(["a harmless pickle: not a learner"])
    marker = tmp_path / "the payload ran"
    pkl = tmp_path / "m.pkl"
    pkl.write_bytes(good)
    swap_after_hashing(pkl, pickle.dumps(Payload(marker)))
    with pytest.raises(PipelineError, match=r"^cannot load .*m\.pkl as an exported fastai learner"):
        inference.load_verified(pkl, sha256=hashlib.new("sha256", good).hexdigest())
    assert pkl.read_bytes() != good  # the swap happened, after the check
    assert not marker.exists(), "the payload swapped in after the sha256 check was unpickled"


def test_an_onnx_swapped_after_its_check_is_not_the_graph_loaded(tmp_path, swap_after_hashing, trained):
    from pipeline.models import onnx_engine

    folder = tmp_path / "copy"
    folder.mkdir()
    for name in ("tiny.pkl", "tiny.json", "tiny.onnx"):  # the session's tiny run: a logistic regression on A, B, C
        shutil.copy(trained("tiny_run") / "exports" / name, folder / name)
    swap_after_hashing(folder / "tiny.onnx", b"not the graph the card's sha256 names")
    model = onnx_engine.load_verified(folder / "tiny.pkl")  # the bytes it checked: the graph train wrote
    assert model.vocab == json.loads((folder / "tiny.json").read_text())["vocab"] == ["A", "B", "C"]
    assert (folder / "tiny.onnx").read_bytes() == b"not the graph the card's sha256 names"
