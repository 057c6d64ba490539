"""House rules read from the source with `ast` (nothing is imported): no two modules of pipeline/ and stages/
import each other, directly or around a loop; no layer of pipeline/ imports a higher one; artifact file names are
written only in pipeline/core/artifacts.py.

Imports are read the way `fingerprints.code_files` reads them (function-level ones included); the runner's own
`importlib.import_module("stages.<name>")` counts as an import of every stage.
"""
import ast
from pathlib import Path

from pipeline.core import fingerprints
from pipeline import runner
from pipeline.core import artifacts
from tests.conftest import REPO

# Loops still in the house, each with its reason (none now: the runner passes train its fingerprint through the
# workspace, and evaluate reads train's manifest through it); a new loop fails the test.
KNOWN_CYCLES: set = set()


def import_graph(root: Path, stages: tuple[str, ...] = ()) -> dict[str, set[str]]:
    """Module name -> the modules of pipeline/ and stages/ under `root` that it imports; `pipeline.runner` also
    imports `stages.<name>` for each of `stages`."""
    files = {module_name(f, root): f for f in python_files(root)}
    graph = {}
    for name, f in files.items():
        package = name if f.stem == "__init__" else name.rpartition(".")[0]
        graph[name] = {m for m in fingerprints._imported_modules(f, package) if m in files and m != name}
    graph.setdefault("pipeline.runner", set()).update(f"stages.{s}" for s in stages)
    return graph


def python_files(root: Path) -> list[Path]:
    """Every module of pipeline/ (its subpackages included) and stages/ under `root`."""
    return sorted(f for d in ("pipeline", "stages") for f in (root / d).rglob("*.py"))


def module_name(f: Path, root: Path) -> str:
    parts = f.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def reach(graph: dict[str, set[str]], start: str) -> set[str]:
    """The modules `start` reaches through imports in `graph`, transitively."""
    seen, todo = set(), [start]
    while todo:
        for m in graph.get(todo.pop(), ()):
            if m not in seen:
                seen.add(m)
                todo.append(m)
    return seen


def cycles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """The groups of modules that reach each other through imports (strongly connected, more than one module)."""
    reached = {m: reach(graph, m) for m in graph}
    return {frozenset({m} | {n for n in reached[m] if m in reached[n]}) for m in graph if m in reached[m]}


def test_no_import_cycles_beyond_the_known_ones():
    found = cycles(import_graph(REPO, tuple(runner.STAGE_NAMES)))
    assert found <= KNOWN_CYCLES, f"import cycles: {sorted(sorted(c) for c in found - KNOWN_CYCLES)}"


def test_the_graph_sees_a_loop_through_a_function_level_import(tmp_path):
    (tmp_path / "pipeline").mkdir()
    (tmp_path / "stages").mkdir()
    (tmp_path / "pipeline" / "a.py").write_text("from .b import x\n")
    (tmp_path / "pipeline" / "b.py").write_text("def f():\n    from pipeline import c\n")
    (tmp_path / "pipeline" / "c.py").write_text("import pipeline.a\n")
    (tmp_path / "pipeline" / "d.py").write_text("from . import a\n")
    (tmp_path / "stages" / "s.py").write_text("from pipeline import runner\n")
    (tmp_path / "pipeline" / "runner.py").write_text("")
    graph = import_graph(tmp_path, ("s",))
    assert cycles(graph) == {frozenset({"pipeline.a", "pipeline.b", "pipeline.c"}),
                             frozenset({"pipeline.runner", "stages.s"})}


KNOWN_LITERALS: set = set()


def test_artifact_file_names_are_written_only_in_artifacts_py():
    names = {v for k, v in vars(artifacts).items() if k.isupper()}
    found = {(f.relative_to(REPO).as_posix(), node.value)
             for f in python_files(REPO) if f.name != "artifacts.py"
             for node in ast.walk(ast.parse(f.read_text())) if isinstance(node, ast.Constant) and node.value in names}
    assert found <= KNOWN_LITERALS, f"use pipeline.core.artifacts for: {sorted(found - KNOWN_LITERALS)}"


def test_a_module_over_300_lines_says_why():
    long = {}
    for f in sorted((REPO / "pipeline").rglob("*.py")):
        text = f.read_text()
        if len(text.splitlines()) > 300 and "300 lines" not in (ast.get_docstring(ast.parse(text)) or ""):
            long[f.name] = len(text.splitlines())
    assert not long, f"split these, or say in the docstring why they are over 300 lines: {long}"


# The modules of the classes each model kind's export pickles, its graph and the model machinery (and MediaPipe's),
# which may test what they hold; everywhere else, the kinds' classes (`kinds/<kind>/kind.py`) included, asks a kind
# instead of testing which one it has.
REGISTRY_FILES = {"pipeline/models/backbones.py", "pipeline/models/onnx_export.py",
                  "pipeline/kinds/base.py",  # a kind's defaults follow from its description (`pixels`, `finds_hands`)
                  "pipeline/data/hands/detect.py"}
KIND_FILES_THAT_MAY_BRANCH = ("model.py", "graph.py", "network.py", "embeddings.py")


def may_branch(rel: str) -> bool:
    """Whether the file `rel` (relative to the repo) may test which kind, learner or engine it holds."""
    parts = rel.split("/")
    return rel in REGISTRY_FILES or (parts[:2] == ["pipeline", "kinds"] and len(parts) == 4
                                     and (parts[2] == "shared" or parts[3] in KIND_FILES_THAT_MAY_BRANCH))


BRANCHES = [
    r"\bis_baseline\(",                                          # what an arch is
    r"""(arch|input)\s*[!=]=\s*["']""",                          # a kind's arch or input by its name
    r"\bif\b[^#\n]*\.(pixels|finds_hands)\b",                     # a kind's property tested
    r"isinstance\([^)]*\b(OnnxModel|FastaiEngine|HandLearner)\b",  # which engine or learner class
]


def branches_outside_the_registry(root: Path) -> list[str]:
    import re

    found = []
    for f in python_files(root):
        if may_branch(f.relative_to(root).as_posix()):
            continue
        for i, line in enumerate(f.read_text().splitlines(), 1):
            code = line.split("#")[0]
            found += [f"{f.relative_to(root)}:{i}: {line.strip()}" for p in BRANCHES if re.search(p, code)][:1]
    return found


def test_no_family_or_input_branch_outside_the_registry():
    """A new model kind touches its own modules only: nothing else tests which one it has (there were 22 such
    branches in datablock, train, evaluate, serve, onnx_engine, compare, cli and report, and the crop module branched
    on fused or not four times)."""
    assert branches_outside_the_registry(REPO) == []


def test_the_branch_check_sees_each_kind_of_branch(tmp_path):
    (tmp_path / "pipeline").mkdir()
    (tmp_path / "stages").mkdir()
    (tmp_path / "pipeline" / "kinds" / "landmarks").mkdir(parents=True)
    (tmp_path / "pipeline" / "kinds" / "landmarks" / "model.py").write_text("if arch == 'landmark_mlp': pass\n")  # it may
    (tmp_path / "stages" / "s.py").write_text(
        "if baselines.is_baseline(arch): pass\nif cfg.datablock.input == 'landmarks': pass\n"
        "if not kind.pixels: pass  # cache\nx = isinstance(m, onnx_engine.OnnxModel)\nok = kind.prepare(df)\n"
        "# if arch == 'x' in a comment\n")
    assert [line.split(":")[1] for line in branches_outside_the_registry(tmp_path)] == ["1", "2", "3", "4"]


def forwarders(root: Path) -> list[str]:
    """`file:line name` for each function of the model kinds (pipeline/kinds/) whose body, past its docstring
    and imports, is one `return f(...)` handing on its own parameters unchanged, in order: a forwarder."""
    found = []
    for f in sorted((root / "pipeline" / "kinds").rglob("*.py")):
        if f.name not in ("kind.py", "base.py"):  # the kinds' classes
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            body = [n for n in node.body if not isinstance(n, (ast.Import, ast.ImportFrom))
                    and not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
            params = [a.arg for a in node.args.args if a.arg not in ("self", "cls")]
            if len(body) == 1 and isinstance(body[0], ast.Return) and isinstance(body[0].value, ast.Call):
                call = body[0].value
                passed = [a.id for a in call.args if isinstance(a, ast.Name)] + [
                    k.value.id for k in call.keywords if isinstance(k.value, ast.Name) and k.arg == k.value.id]
                if passed == params and len(call.args) + len(call.keywords) == len(params):
                    found.append(f"{f.relative_to(root).as_posix()}:{node.lineno} {node.name}")
    return found


def test_the_model_kinds_have_no_forwarders():
    """One class per kind: a kind's method does its work or binds the function that does (`prepare =
    staticmethod(...)`), never a function that only hands its arguments on (there were 16, in registry.py and
    inputs.py, joining four objects per kind)."""
    assert forwarders(REPO) == []


def test_the_forwarder_check_sees_one(tmp_path):
    (tmp_path / "pipeline" / "kinds" / "k").mkdir(parents=True)
    (tmp_path / "pipeline" / "kinds" / "k" / "kind.py").write_text(
        "class K:\n"
        "    def probs(self, engine, paths, log):\n        from .. import m\n\n        return m.probs(engine, paths, log)\n"
        "    def read(self, engine, photo):\n        '''Doc.'''\n        return m.read(engine, photo=photo)\n"
        "    def plan(self, learn, t):\n        return m.plan(learn, t.image_size)\n"
        "    def keep(self, df):\n        df = df.dropna()\n        return m.keep(df)\n")
    assert forwarders(tmp_path) == ["pipeline/kinds/k/kind.py:2 probs", "pipeline/kinds/k/kind.py:6 read"]


# pipeline/'s layers, bottom up; its top-level modules (config, runner, cli, report, compare, crossval) sit above
# them all, and the package's own __init__ below them all.
LAYERS = ("core", "data", "models", "kinds", "serve")


def layer(module: str) -> int:
    parts = module.split(".")
    if parts == ["pipeline"]:
        return -1
    return LAYERS.index(parts[1]) if parts[1] in LAYERS else len(LAYERS)


def upward_imports(root: Path) -> list[str]:
    """`a -> b` for each module of pipeline/ under `root` that imports a module of a higher layer."""
    graph = import_graph(root)
    return sorted(f"{a} -> {b}" for a, deps in graph.items() if a.startswith("pipeline")
                  for b in deps if b.startswith("pipeline") and layer(b) > layer(a))


def test_no_layer_imports_a_higher_one():
    """core/ imports neither data/ nor models/; data/ never imports models/; nothing below the top imports the
    config, the runner or the commands."""
    assert upward_imports(REPO) == []


def test_the_layer_check_sees_an_upward_import(tmp_path):
    for pkg in ("core", "data", "models"):
        (tmp_path / "pipeline" / pkg).mkdir(parents=True)
        (tmp_path / "pipeline" / pkg / "__init__.py").write_text("")
    (tmp_path / "stages").mkdir()
    (tmp_path / "pipeline" / "config.py").write_text("from .models import families\n")
    (tmp_path / "pipeline" / "core" / "a.py").write_text("def f():\n    from ..data import b\n")
    (tmp_path / "pipeline" / "data" / "b.py").write_text("from pipeline import config\nfrom ..core import a\n")
    (tmp_path / "pipeline" / "models" / "families.py").write_text("from ..data import b\n")
    assert upward_imports(tmp_path) == ["pipeline.core.a -> pipeline.data", "pipeline.core.a -> pipeline.data.b",
                                        "pipeline.data.b -> pipeline.config"]


# Where the config may go: the stages, the model kinds' classes (`kinds/<kind>/kind.py`, `kinds/base.py`: each turns
# its section into plain values), the commands on top, and the machinery that derives from it (fingerprints,
# stagespec, the workspace's paths). Below that a function takes the values it uses (`loaders.dataloaders(ws, bs,
# image_size, ...)`, `training.fit(learn, lr, log, method=..., epochs=...)`, `runtime.decide(**t.entries(RUNTIME))`,
# `backbones.learner(dls, arch, pretrained, ...)`), so no config section crosses into data/, serve/, core/, models/
# or a kind's data, model, graph and network modules.
CONFIG_FREE = ("pipeline/data", "pipeline/serve", "pipeline/core", "pipeline/models")
CONFIG_MACHINERY = ("pipeline/core/fingerprints.py", "pipeline/core/stagespec.py", "pipeline/core/workspace.py")
SECTION_NAMES = {"cfg", "download", "datablock", "train", "evaluate"}  # a parameter named as the config or a section


def config_free(rel: str) -> bool:
    """Whether no config section may cross into the module `rel` (relative to the repo)."""
    parts = rel.split("/")
    in_kind = parts[:2] == ["pipeline", "kinds"] and len(parts) == 4 and parts[3] not in ("kind.py", "__init__.py")
    return (rel.startswith(CONFIG_FREE) or in_kind) and rel not in CONFIG_MACHINERY


def config_takers(root: Path) -> list[str]:
    """`file:line name` for each function of the config-free modules (`config_free`) with a parameter named as the
    config or one of its sections, or annotated as one (a `...Cfg` or `Config` class)."""
    import re

    found = []
    for f in python_files(root):
        rel = f.relative_to(root).as_posix()
        if not config_free(rel):
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                params = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
                if any(a.arg in SECTION_NAMES or (a.annotation is not None and re.search(
                        r"\b\w*(Cfg|Config)\b", ast.unparse(a.annotation))) for a in params):
                    found.append(f"{rel}:{node.lineno} {getattr(node, 'name', 'lambda')}")
    return found


def test_the_config_stops_at_the_kinds_and_the_stages():
    assert config_takers(REPO) == []


def test_the_config_check_sees_a_taker(tmp_path):
    for d in ("pipeline/data", "pipeline/core", "pipeline/kinds/images", "pipeline/models", "stages"):
        (tmp_path / d).mkdir(parents=True)
    (tmp_path / "pipeline/data/loaders.py").write_text("def dataloaders(ws, cfg, bs=None):\n    return cfg.train\n"
                                                       "def split(ws, bs):\n    return bs\n")
    (tmp_path / "pipeline/core/tracking.py").write_text("def open_tracker(root, *, cfg):\n    return root\n")
    (tmp_path / "pipeline/core/fingerprints.py").write_text("def fingerprint(cfg, ws):\n    return cfg\n")
    (tmp_path / "pipeline/kinds/images/kind.py").write_text("def dataloaders(ws, cfg):\n    return cfg\n")
    (tmp_path / "pipeline/kinds/images/model.py").write_text("def network(n_out, t: 'TrainCfg'):\n    return t\n")
    (tmp_path / "pipeline/models/fit.py").write_text("def fit(learn, train):\n    return train\n"
                                                     "def plan(learn, t):\n    return t\n")
    (tmp_path / "stages/train.py").write_text("def run(cfg, ws, log):\n    return cfg\n")
    assert config_takers(tmp_path) == ["pipeline/core/tracking.py:1 open_tracker",
                                       "pipeline/data/loaders.py:1 dataloaders",
                                       "pipeline/kinds/images/model.py:1 network", "pipeline/models/fit.py:1 fit"]


def engine_questions(root: Path) -> list[str]:
    """`file:line` for each place a model kind (pipeline/kinds/) asks which engine it holds: `engine.learn` (the
    learner behind a fastai engine) or `getattr(engine, ...)` (what one engine has and the other lacks)."""
    found = []
    for f in sorted((root / "pipeline" / "kinds").rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            asks = (isinstance(node, ast.Attribute) and node.attr == "learn" and isinstance(node.value, ast.Name)
                    and node.value.id == "engine")
            asks |= (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr")
                     and node.args and isinstance(node.args[0], ast.Name) and node.args[0].id == "engine")
            if asks:
                found.append(f"{f.relative_to(root).as_posix()}:{node.lineno}")
    return found


def test_the_kinds_never_ask_which_engine_they_hold():
    """Both engines answer one call (`Engine.run`, offered named inputs): a kind neither reaches for the learner behind
    an engine nor asks what an engine has (there were six such places, in the crop, fused and hand-network kinds)."""
    assert engine_questions(REPO) == []


def test_the_engine_check_sees_a_question(tmp_path):
    (tmp_path / "pipeline" / "kinds" / "k").mkdir(parents=True)
    (tmp_path / "pipeline" / "kinds" / "k" / "kind.py").write_text(
        "def probs(engine, x):\n    if engine.learn is None:\n        return getattr(engine, 'threads', 1)\n"
        "    return engine.run({'rows': x})\n")
    assert engine_questions(tmp_path) == ["pipeline/kinds/k/kind.py:2", "pipeline/kinds/k/kind.py:3"]


def test_the_engines_import_no_kind():
    """The engines and the loader's engine half (`models/exported.py`, `inference.py`, `onnx_engine.py`) reach no
    module of `pipeline.kinds`, directly or through what they import."""
    graph = import_graph(REPO)
    for engine in ("pipeline.models.exported", "pipeline.models.inference", "pipeline.models.onnx_engine"):
        assert not {m for m in reach(graph, engine) if m.startswith("pipeline.kinds")}, engine
