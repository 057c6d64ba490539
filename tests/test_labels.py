from pathlib import Path

import pytest

from pipeline.core.errors import PipelineError
from pipeline.data.labels import Labeller


def test_grassknoted_test_names():
    lab = Labeller(r"^([A-Za-z]+)_test\.jpg$")
    assert lab(Path("t/A_test.jpg")) == "A"
    assert lab(Path("t/nothing_test.jpg")) == "nothing"
    assert lab(Path("t/A_test.png")) is None  # a non-match is None, never an assertion error


def test_danrasband_names_with_map():
    lab = Labeller(r"([A-Za-z]+)\d+_test\.jpg$", {"Del": "del"})
    assert lab(Path("A0001_test.jpg")) == "A"
    assert lab(Path("Del0012_test.jpg")) == "del"
    assert lab(Path("readme.jpg")) is None


def test_folder_labels_and_uppercase():
    assert Labeller()(Path("massey/a/hand1_a_bot_seg_1_cropped.jpeg")) == "a"
    assert Labeller("", uppercase=True)(Path("massey/a/x.jpeg")) == "A"


def test_bad_regex_is_a_clear_error():
    with pytest.raises(PipelineError, match="invalid label_regex"):
        Labeller("([")
    with pytest.raises(PipelineError, match="needs a capture group"):
        Labeller(r"^\w+_test")
