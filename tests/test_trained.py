"""The suite's shared trained models (tests/conftest.py's `trained`): each recipe is trained once per session,
however many tests and xdist workers ask for it; a build stopped half-way is started again; and a test that uses a
training fixture is marked slow at collection."""
import pytest

from tests.conftest import RECIPES, Trained


def test_a_recipe_is_trained_once_per_session(trained):
    project = trained("tiny_run")
    assert trained("tiny_run") == project and (project / "exports" / "tiny.pkl").is_file()
    assert trained.count("tiny_run") == 1
    assert all(trained.count(name) <= 1 for name in RECIPES)  # every recipe other tests asked for, in any worker


def test_a_build_stopped_half_way_is_started_again_from_an_empty_folder(tmp_path, monkeypatch):
    calls = []

    def flaky(project):
        assert list(project.iterdir()) == []
        calls.append(project)
        (project / "half").write_text("")
        if len(calls) == 1:
            raise RuntimeError("stopped half-way")

    monkeypatch.setitem(RECIPES, "flaky", flaky)
    models = Trained(tmp_path)
    with pytest.raises(RuntimeError, match="stopped half-way"):
        models("flaky")
    assert models("flaky") == models("flaky") == tmp_path / "flaky"
    assert len(calls) == 2 and models.count("flaky") == 2


def test_a_test_that_uses_a_training_fixture_is_marked_slow(request, trained):
    assert request.node.get_closest_marker("slow") is not None


def test_a_test_that_trains_nothing_is_not_marked_slow(request):
    assert request.node.get_closest_marker("slow") is None
