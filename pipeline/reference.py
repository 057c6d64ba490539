"""The config and CLI references, generated from the code: docs/reference/config.md from the config dataclasses'
fields and the comments beside them (pipeline/config.py), docs/reference/cli.md from the argument parser
(pipeline/cli.py). A key or flag without its line of meaning is an error, not a blank cell.

    python -m pipeline.reference            # rewrite both files
    python -m pipeline.reference --check    # exit 1 naming what is missing or out of date (what the tests check)
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import re
import sys
import typing
from pathlib import Path

from . import cli, config

DOCS = Path(__file__).resolve().parent.parent / "docs" / "reference"
SECTIONS = {"run": config.RunCfg, "download": config.DownloadCfg, "datablock": config.DatablockCfg,
            "lr_find": config.LrFindCfg, "train": config.TrainCfg, "evaluate": config.EvaluateCfg}
TABLES = {"download.sources": config.SourceCfg, "evaluate.test_sets": config.TestSetCfg}  # [[...]] tables' keys
_FIELD = re.compile(r"^(\s+)(\w+)\s*:")


def comments(cls: type) -> dict[str, str]:
    """Field name -> its meaning: the comment lines right above the field, the comment at the end of its line and
    the comment-only lines under it indented past the field's name (continuations), for `cls` and its bases."""
    out = {}
    for klass in reversed(cls.__mro__[:-1]):
        if not dataclasses.is_dataclass(klass):
            continue
        lines, above, i = inspect.getsource(klass).splitlines(), [], 0
        names = {f.name for f in dataclasses.fields(klass)}
        while i < len(lines):
            line, i = lines[i], i + 1
            m = _FIELD.match(line)
            if line.strip().startswith("#"):
                above.append(line.strip()[1:].strip())
                continue
            if not m or m.group(2) not in names:
                above = []
                continue
            parts = above + ([line.split("  # ", 1)[1].strip()] if "  # " in line else [])
            while i < len(lines) and lines[i].strip().startswith("#") and _indent(lines[i]) > len(m.group(1)):
                parts.append(lines[i].strip()[1:].strip())
                i += 1
            out[m.group(2)] = " ".join(p for p in parts if p)
            above = []
    return out


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def allowed(meaning: str) -> list[str]:
    """The values a meaning lists as `a | b | c` (each maybe followed by a parenthesis or a colon), else []."""
    pieces, depth, cur = [], 0, ""
    for ch in meaning:
        depth += (ch == "(") - (ch == ")")
        cur += ch
        if depth == 0 and cur.endswith(" | "):
            pieces.append(cur[:-3])
            cur = ""
    pieces.append(cur)
    if len(pieces) < 2:
        return []
    first = re.sub(r"\s*\([^()]*\)\s*$", "", pieces[0]).split()[-1]
    rest = [p.split()[0] for p in pieces[1:] if p.strip()]
    return [v.rstrip(":") for v in [first, *rest]]


def _type(tp) -> str:
    if isinstance(tp, str):
        return tp
    if typing.get_origin(tp) is typing.Union or type(tp).__name__ == "UnionType":
        return " or ".join(_type(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) in (list, dict):
        return repr(tp).replace("typing.", "").replace("pipeline.config.", "")
    return getattr(tp, "__name__", str(tp))


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return ""
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    return f"`{json.dumps(value)}`" if isinstance(value, str) else f"`{value}`"


def config_rows(sections=None, tables=None) -> tuple[list[tuple], list[str]]:
    """(rows of (key, type, default, allowed values, meaning), the keys without a meaning)."""
    rows, missing = [], []
    sections, tables = SECTIONS if sections is None else sections, TABLES if tables is None else tables
    for prefix, cls in {**sections, **tables}.items():
        notes, hints = comments(cls), typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            key, meaning = f"{prefix}.{f.name}", notes.get(f.name, "")
            if not meaning:
                missing.append(key)
            values = allowed(meaning)
            if hints[f.name] is bool:
                values = ["true", "false"]
            rows.append((key, _type(hints[f.name]), _default(f), ", ".join(f"`{v}`" for v in values), meaning))
    return rows, missing


def _cell(text: str) -> str:
    """`text` for a table cell of code: its pipes escaped."""
    return text.replace("|", "\\|").replace("\n", " ")


def _text(text: str) -> str:
    """`text` for a table cell or a paragraph of prose: pipes and angle brackets escaped (Markdown takes `<run>` for
    an HTML tag)."""
    return _cell(text).replace("<", "&lt;").replace(">", "&gt;")


def config_md(rows: list[tuple]) -> str:
    out = ["# Config reference", "",
           "<!-- generated by `python -m pipeline.reference` from pipeline/config.py: edit the comments there -->", "",
           "One TOML file, a section per stage plus `[run]`; `--set SECTION.KEY=VALUE` sets one key from the command",
           "line. `download.sources.*` are the keys of each `[[download.sources]]` table, `evaluate.test_sets.*` those",
           "of each `[[evaluate.test_sets]]` table. Relative paths resolve against the config file's folder.", ""]
    section = None
    for key, tp, default, values, meaning in rows:
        head = key.rsplit(".", 1)[0]
        if head != section:
            section = head
            out += ["", f"## `{head}`" if head not in TABLES else f"## `[[{head}]]`", "",
                    "| key | type | default | allowed | meaning |", "|---|---|---|---|---|"]
        out.append(f"| `{key}` | {_cell(tp)} | {_cell(default)} | {_cell(values)} | {_text(meaning)} |")
    return "\n".join(out).replace("\n\n\n", "\n\n") + "\n"


def _subcommands(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield name, helps.get(name) or "", sub


def cli_rows(parser: argparse.ArgumentParser | None = None) -> tuple[list[tuple], list[str]]:
    """(rows of (command, its help, [(flag, default, choices, help)]), the commands and flags without a help)."""
    parser = parser or cli._parser("python -m pipeline")
    rows, missing = [], []
    for name, help_, sub in _subcommands(parser):
        if not help_:
            missing.append(name)
        flags = []
        for a in sub._actions:
            if isinstance(a, argparse._HelpAction) or a.help == argparse.SUPPRESS:
                continue
            flag = ", ".join(a.option_strings) or a.dest
            if a.option_strings and a.nargs != 0:
                flag += f" {a.metavar or a.dest.upper()}"
            if not a.help:
                missing.append(f"{name} {flag}")
            default = "" if a.default in (None, False, [], argparse.SUPPRESS) or a.required else f"`{a.default}`"
            choices = ", ".join(f"`{c}`" for c in a.choices) if a.choices else ""
            flags.append((flag, default, choices, a.help or ""))
        rows.append((name, help_, flags))
    return rows, missing


def cli_md(rows: list[tuple]) -> str:
    out = ["# Command-line reference", "",
           "<!-- generated by `python -m pipeline.reference` from pipeline/cli.py: edit the help texts there -->", "",
           "`python -m pipeline COMMAND …` (installed: `signpipe COMMAND …`). `--debug` shows the traceback of an",
           "error instead of its one line. Commands that read a config take `--config` and `--set`."]
    for name, help_, flags in rows:
        out += ["", f"## `{name}`", "", _text(help_) + ".", "", "| flag | default | choices | meaning |", "|---|---|---|---|"]
        out += [f"| `{_cell(f)}` | {_cell(d)} | {_cell(c)} | {_text(h)} |" for f, d, c, h in flags]
    return "\n".join(out) + "\n"


def generate() -> tuple[dict[Path, str], list[str]]:
    """{file: its text}, and what has no line of meaning."""
    crows, cmissing = config_rows()
    lrows, lmissing = cli_rows()
    return {DOCS / "config.md": config_md(crows), DOCS / "cli.md": cli_md(lrows)}, cmissing + lmissing


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipeline.reference", description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file is out of date or a key or "
                                                        "flag has no line of meaning")
    args = p.parse_args(argv)
    files, missing = generate()
    for what in missing:
        print(f"error: {what} has no line of meaning (a comment beside the config field, a help= for the flag)")
    stale = [path for path, text in files.items() if not path.is_file() or path.read_text() != text]
    if args.check:
        for path in stale:
            print(f"error: {path} is out of date: run `python -m pipeline.reference`")
        return 1 if missing or stale else 0
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(files[path])
        print(f"wrote {path}")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
