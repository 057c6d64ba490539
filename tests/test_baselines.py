"""Baseline model factories: shapes, parameter counts, and that models unpickle without this project."""

import itertools
import json
import os
import re
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from pipeline.core.errors import PipelineError
from pipeline.kinds.images.model import BASELINES, baseline_info, create_baseline, is_baseline

N_CLASSES = 24
CASES = list(itertools.product(BASELINES, (1, 3), (28, 40)))
CASE_IDS = [f"{a}-in{n}-{s}px" for a, n, s in CASES]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("arch,n_in,size", CASES, ids=CASE_IDS)
def test_output_shape(arch, n_in, size):
    model = create_baseline(arch, N_CLASSES, n_in=n_in, size=size)
    assert isinstance(model, nn.Sequential)
    model.eval()
    with torch.no_grad():
        out = model(torch.rand(5, n_in, size, size))
    assert out.shape == (5, N_CLASSES)
    model.train()
    out = model(torch.rand(3, n_in, size, size))  # BatchNorm in training mode needs B > 1
    assert out.shape == (3, N_CLASSES)
    out.sum().backward()


@pytest.mark.parametrize("arch", BASELINES)
def test_only_stock_torch_modules(arch):
    model = create_baseline(arch, N_CLASSES)
    for m in model.modules():
        assert type(m).__module__.startswith("torch.nn"), f"{arch}: {type(m)} is not a stock torch module"


@pytest.fixture(scope="module")
def unpickled(tmp_path_factory):
    """Save every case with torch.save, load them all in ONE subprocess that imports only torch."""
    root = tmp_path_factory.mktemp("pickled")
    torch.manual_seed(0)
    expected = {}
    for (arch, n_in, size), case_id in zip(CASES, CASE_IDS):
        model = create_baseline(arch, N_CLASSES, n_in=n_in, size=size).eval()
        x = torch.rand(2, n_in, size, size)
        with torch.no_grad():
            y = model(x)
        torch.save({"model": model, "x": x}, root / f"{case_id}.pt")
        expected[case_id] = y
    script = textwrap.dedent("""
        import json, sys
        import torch
        root, ids = sys.argv[1], sys.argv[2:]
        report = {}
        for case in ids:
            obj = torch.load(f"{root}/{case}.pt", weights_only=False)
            model = obj["model"]
            with torch.no_grad():
                y = model(obj["x"])
            torch.save(y, f"{root}/{case}.out")
            report[case] = sorted({type(m).__module__ for m in model.modules()})
        report["__foreign__"] = sorted(m for m in sys.modules if m == "pipeline" or m.startswith(("pipeline.", "fastai", "stages")))
        print(json.dumps(report))
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-I", "-c", script, str(root), *CASE_IDS],  # -I: no cwd / PYTHONPATH on sys.path
        cwd=root, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    return root, expected, report


def test_unpickling_imports_nothing_from_project(unpickled):
    _, _, report = unpickled
    assert report["__foreign__"] == []


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_pickle_round_trip_in_clean_process(unpickled, case_id):
    root, expected, report = unpickled
    assert all(mod.startswith("torch") for mod in report[case_id]), report[case_id]
    got = torch.load(root / f"{case_id}.out")
    torch.testing.assert_close(got, expected[case_id])


def test_param_counts():
    assert n_params(create_baseline("logreg", 25)) == 784 * 25 + 25
    assert n_params(create_baseline("logreg", 24, n_in=3, size=40)) == 3 * 40 * 40 * 24 + 24
    assert n_params(create_baseline("mlp", 24)) == (784 * 512 + 512) + (512 * 512 + 512) + (512 * 24 + 24)
    convs = (1 * 25 * 16 + 16) + (16 * 25 * 32 + 32)
    for size in (28, 40, 30, 64):
        model = create_baseline("aslnet", 24, size=size)
        fc = model[-1]
        assert isinstance(fc, nn.Linear) and fc.in_features == 32 * (size // 4) ** 2
        assert n_params(model) == convs + 32 * (size // 4) ** 2 * 24 + 24
    # cnnnet on 28x28: the Kaggle Keras model's 264,049 params minus BatchNorm running stats (2 x 150)
    assert n_params(create_baseline("cnnnet", 24)) == 264_049 - 2 * (75 + 50 + 25)


@pytest.mark.parametrize("size,flat", [(28, 25 * 4 * 4), (40, 25 * 5 * 5), (29, 25 * 4 * 4), (7, 25 * 1 * 1)])
def test_cnnnet_flat_features_follow_keras_same_pooling(size, flat):
    model = create_baseline("cnnnet", 10, size=size)
    first_fc = next(m for m in model if isinstance(m, nn.Linear))
    assert first_fc.in_features == flat
    assert model.training  # sizing the dummy pass must not leave the model in eval mode


def test_cnnnet_layout():
    model = create_baseline("cnnnet", 24)
    convs = [m for m in model if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [75, 50, 25]
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)
    pools = [m for m in model if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 3 and all(p.stride == 2 and p.ceil_mode for p in pools)
    assert [m.p for m in model if isinstance(m, nn.Dropout)] == [0.2, 0.3]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model) == 3


def test_unknown_arch():
    assert not is_baseline("resnet18") and is_baseline("mlp")
    with pytest.raises(PipelineError, match="logreg, mlp, cnnnet, aslnet"):
        create_baseline("resnet18", 24)
    with pytest.raises(PipelineError, match="unknown baseline"):
        baseline_info("nope")


def test_bad_sizes():
    with pytest.raises(PipelineError, match="n_classes"):
        create_baseline("mlp", 0)
    with pytest.raises(PipelineError, match="size"):
        create_baseline("aslnet", 24, size=3)


@pytest.mark.parametrize("arch", BASELINES)
def test_baseline_info_describes_the_model_it_builds(arch):
    """The description's layer widths (in order) and conv kernels are the built model's, so neither can change
    alone."""
    info = baseline_info(arch)
    assert info["arch"] == arch and "\n" not in info["description"]
    layers = [m for m in create_baseline(arch, N_CLASSES, n_in=1, size=28).modules()
              if isinstance(m, (nn.Conv2d, nn.Linear))]
    widths = [getattr(m, "out_channels", None) or m.out_features for m in layers][:-1]  # the last is n_classes
    numbers = iter(int(n) for n in re.findall(r"(?<![\dx])\d+(?![\dx])", info["description"]))
    assert all(w in numbers for w in widths), f"{info['description']!r} does not list the widths {widths}"
    kernels = {"{}x{}".format(*m.kernel_size) for m in layers if isinstance(m, nn.Conv2d)}
    assert kernels == set(re.findall(r"\d+x\d+", info["description"]))
