"""Dataset sources as the stages see them: `sources` plus the wrappers that convert files into image folders once:
`sign_mnist:` (Sign-MNIST CSVs, `sign_mnist.py`) and `mnist:` (IDX files, `idx.py`)."""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from ..core.workspace import COMPLETE_MARKER, listing_fingerprint
from . import sources

list_images = sources.list_images
SIGN_MNIST, MNIST = sources.SIGN_MNIST, sources.MNIST


def materialise(source: str, cache_dir: Path, log=print) -> Path:
    """A local directory for `source`; `sign_mnist:INNER` and `mnist:INNER` convert INNER's files (CSVs, IDX files)
    into image folders once. `mnist:url:` may name a folder: its four published MNIST files are fetched."""
    prefix, inner = sources.split_converted(source)
    if not prefix:
        return sources.materialise(source, cache_dir, log)
    # numpy and pandas: only for these sources, not for every stage that lists images
    if prefix == SIGN_MNIST:
        from . import sign_mnist as converter
        what = "Sign-Language-MNIST CSVs"
    else:
        from . import idx as converter
        what = "IDX files"
    scheme, rest = sources.parse_source(inner, folder_url=prefix == MNIST)
    if scheme == "url" and sources.is_url_folder(rest):  # only mnist: (parse_source refuses one for sign_mnist:)
        base = sources.materialise_url_folder(rest, converter.PUBLISHED_FILES, cache_dir, log)
    else:
        base = sources.materialise(inner, cache_dir, log)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", sources.redact_source(inner))[-60:]
    dest = Path(cache_dir) / f"{prefix[:-1]}-{slug}-{hashlib.sha256(inner.encode()).hexdigest()[:8]}"
    if not (dest / COMPLETE_MARKER).exists():
        log(f"converting {what} from {base} into image folders (once)")
    return converter.convert(base, dest)


def image_root(source: str, subdir: str, cache_dir: Path, log=print) -> Path:
    """The folder of images (or of class folders) that `source` + `subdir` names."""
    return sources.find_image_root(materialise(source, cache_dir, log), subdir)


def local_fingerprint(source: str, subdir: str) -> str:
    """Listing fingerprint of a `path:` folder source (others, `sign_mnist:` and `mnist:` conversions included, are
    cached by name: '')."""
    if sources.split_converted(source)[0]:
        return ""
    scheme, rest = sources.parse_source(source)
    if scheme != "path" or not Path(rest).expanduser().is_dir():
        return ""
    root = sources.find_image_root(Path(rest).expanduser(), subdir)
    return listing_fingerprint(sources.list_image_strings(root), root)


def labelled_images(root: Path, name: str, label_regex: str = "", label_map: dict | None = None, uppercase: bool = False,
                    class_regex: str = "", group_regex: str = "", files: list[str] | None = None
                    ) -> tuple[list[tuple[str, str, str]], dict[str, int]]:
    """((path relative to `root`, label, group) for each image of the source `name` under `root`, counts of what was
    left out: "loose" (no class folder and no label_regex), "unmatched" (label_regex did not match), "filtered"
    (label outside class_regex)). The label comes from label_regex on the file name, else the first folder under
    `root`, then label_map and uppercase; the group ("<source>/<match>") from group_regex searched in the relative
    path, else in the file name (so `^(hand\\d+)_` anchors at the file name), else the source's name. A path that
    group_regex does not match is its own group, counted as "ungrouped". `files`: `root`'s image listing
    (`sources.list_image_strings`), when the caller has it already. The rules are a source's (`SourceCfg.rules()`)."""
    from .labels import Labeller

    label = Labeller(label_regex, label_map or {}, uppercase)
    keep = re.compile(class_regex) if class_regex else None
    group = re.compile(group_regex) if group_regex else None
    items, left = [], {"loose": 0, "unmatched": 0, "filtered": 0, "ungrouped": 0}
    prefix = str(root).rstrip(os.sep) + os.sep
    for p in sources.list_image_strings(root) if files is None else files:
        rel = p[len(prefix):].replace(os.sep, "/")
        if label_regex:
            y = label(Path(rel))
            if y is None:
                left["unmatched"] += 1
                continue
        elif "/" not in rel:
            left["loose"] += 1
            continue
        else:
            y = label.map(rel.split("/", 1)[0])
        if keep is not None and not keep.fullmatch(y):
            left["filtered"] += 1
            continue
        if group is None:
            g = name
        elif m := group.search(rel) or group.search(rel.rsplit("/", 1)[-1]):
            g = f"{name}/{m.group(1)}"
        else:
            g, left["ungrouped"] = f"{name}/{rel}", left["ungrouped"] + 1
        items.append((rel, y, g))
    return items, left
