"""What a newcomer reads: the config and CLI references match the code (every key and flag with its line), the docs
site builds with `mkdocs build --strict` (a broken link fails), the README stays short and keeps its quick start,
and the product's tests stay apart from research/ and bench/."""
import argparse
import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import reference
from tests.conftest import REPO


def test_the_references_name_every_key_and_flag_and_are_up_to_date():
    files, missing = reference.generate()
    assert missing == [], f"without a line of meaning: {missing}"
    for path, text in files.items():
        assert path.is_file() and path.read_text() == text, f"{path} is out of date: run `python -m pipeline.reference`"
    config_md = files[reference.DOCS / "config.md"]
    assert "| `train.arch` |" in config_md and "| `download.sources.group_regex` |" in config_md
    assert "`landmarks`, `hand_crop`, `hand_net`" in config_md  # datablock.input's allowed values, from its comment
    assert "## `spell`" in files[reference.DOCS / "cli.md"] and "`--max-streams N`" in files[reference.DOCS / "cli.md"]


def test_a_key_or_flag_without_its_line_is_named():
    @dataclasses.dataclass
    class Section:
        said: int = 1  # what it is
        # what this one is, above it
        above: str = "a"
        silent: float = 0.5

    rows, missing = reference.config_rows({"s": Section}, {})
    assert missing == ["s.silent"]
    assert [r[4] for r in rows] == ["what it is", "what this one is, above it", ""]
    p = argparse.ArgumentParser()
    sub = p.add_subparsers()
    sp = sub.add_parser("go", help="go somewhere")
    sp.add_argument("--far", type=int, default=3, help="how far")
    sp.add_argument("--fast", action="store_true")
    sub.add_parser("stay")
    rows, missing = reference.cli_rows(p)
    assert missing == ["go --fast", "stay"]
    assert rows[0][2][0] == ("--far FAR", "`3`", "", "how far")


def test_allowed_values_are_read_from_the_comment():
    assert reference.allowed("valley | slide | minimum: the one train uses") == ["valley", "slide", "minimum"]
    assert reference.allowed("landmarks input: coords | coords+shape (+ distances)") == ["coords", "coords+shape"]
    assert reference.allowed("hand_fused: none (the crop alone) | keypoints (a | b)") == ["none", "keypoints"]
    assert reference.allowed("a number, or lr_find") == []


def test_the_docs_site_builds_strictly(tmp_path):
    """Every page in mkdocs.yml's nav exists and every link between pages resolves (`--strict` fails on a warning)."""
    pytest.importorskip("mkdocs", reason="mkdocs is not installed: `pip install -e '.[docs]'` (scripts/setup.sh does)")
    pytest.importorskip("material", reason="mkdocs-material is not installed: `pip install -e '.[docs]'`")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # Material's banner about its successor
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                       cwd=REPO, capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (tmp_path / "site" / "index.html").is_file()


def test_the_readme_is_short_and_keeps_the_quick_start():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    for command in ("bash scripts/demo.sh", "bash scripts/test.sh"):
        assert command in text
    assert "configs/asl_multi.toml" in text and "serve --learner exports/asl_multi.pkl" in text  # live reader


HISTORY = re.compile(r"round [0-9]|issue [0-9]")


def test_code_and_readme_describe_what_is_not_its_history():
    said = [f"{p.relative_to(REPO)}:{i}" for top in ("pipeline", "stages") for p in sorted((REPO / top).rglob("*.py"))
            for i, line in enumerate(p.read_text().splitlines(), 1) if HISTORY.search(line)]
    said += [f"README.md:{i}" for i, line in enumerate((REPO / "README.md").read_text().splitlines(), 1)
             if HISTORY.search(line)]
    assert said == []


APART = re.compile(r"^\s*(?:from|import)\s+(bench|research|tests\.(?:\w+\.)*test_\w+|test_\w+)\b", re.M)


def foreign_imports(root: Path) -> list[str]:
    """`file: module` for each import, under `root`, of bench/, research/ or a test module (code in strings too:
    a script a test runs in a subprocess)."""
    return [f"{p.relative_to(root)}: {m.group(1)}" for p in sorted(root.rglob("*.py"))
            for m in APART.finditer(p.read_text())]


def test_the_tests_import_nothing_from_bench_research_or_another_test_module():
    assert foreign_imports(REPO / "tests") == []


def test_the_import_check_sees_each_kind(tmp_path):
    (tmp_path / "test_a.py").write_text("import os\nfrom tests.helpers import serving\nfrom bench import live\n")
    (tmp_path / "test_b.py").write_text('S = """\nfrom tests.reliability.test_store import compute\n"""\n'
                                        "    from research.keypoint_levers import _fold\nimport test_a\n")
    assert foreign_imports(tmp_path) == ["test_a.py: bench", "test_b.py: tests.reliability.test_store",
                                         "test_b.py: research", "test_b.py: test_a"]
