"""Labels for test images: a regex on the file name or the parent folder, then a label map."""
from __future__ import annotations

import re
from pathlib import Path

from ..core.errors import PipelineError


class Labeller:
    """Label a path by `regex` group 1 on its file name (or its parent folder's name when `regex` is empty),
    then apply `label_map` and optional `uppercase`. Returns None for a file name the regex does not match
    (unlike fastai's RegexLabeller, which asserts)."""

    def __init__(self, regex: str = "", label_map: dict[str, str] | None = None, uppercase: bool = False):
        try:
            self.regex = re.compile(regex) if regex else None
        except re.error as e:
            raise PipelineError(f"invalid label_regex {regex!r}: {e}") from None
        if self.regex is not None and self.regex.groups < 1:
            raise PipelineError(f"label_regex {regex!r} needs a capture group around the label, e.g. ^([A-Za-z]+)_test")
        self.label_map, self.uppercase = dict(label_map or {}), uppercase

    def __call__(self, path: Path) -> str | None:
        path = Path(path)
        if self.regex is None:
            label = path.parent.name
        else:
            m = self.regex.search(path.name)
            if m is None:
                return None
            label = m.group(1)
        return self.map(label)

    def map(self, label: str) -> str:
        """`label` after `label_map` and `uppercase` (for a label found some other way, e.g. a class folder)."""
        label = self.label_map.get(label, label)
        return label.upper() if self.uppercase else label
