"""Dataset sources as the stages see them: `sources` plus the `sign_mnist:` CSV → image-folder wrapper."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

from . import sign_mnist, sources
from .workspace import listing_fingerprint

list_images = sources.list_images
SIGN_MNIST = "sign_mnist:"


def materialise(source: str, cache_dir: Path, log=print) -> Path:
    """A local directory for `source`; `sign_mnist:INNER` converts INNER's CSVs into image folders once."""
    if not source.startswith(SIGN_MNIST):
        return sources.materialise(source, cache_dir, log)
    inner = source[len(SIGN_MNIST):]
    base = sources.materialise(inner, cache_dir, log)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", sources.redact_source(inner))[-60:]
    dest = Path(cache_dir) / f"sign_mnist-{slug}-{hashlib.sha256(inner.encode()).hexdigest()[:8]}"
    if not (dest / ".complete").exists():
        log(f"converting Sign-Language-MNIST CSVs from {base} into image folders (once)")
    return sign_mnist.convert(base, dest)


def image_root(source: str, subdir: str, cache_dir: Path, log=print) -> Path:
    """The folder of images (or of class folders) that `source` + `subdir` names."""
    return sources.find_image_root(materialise(source, cache_dir, log), subdir)


def local_fingerprint(source: str, subdir: str) -> str:
    """Listing fingerprint of a `path:` folder source (others, `sign_mnist:` conversions included, are cached by
    name: '')."""
    if source.startswith(SIGN_MNIST):
        return ""
    scheme, rest = sources.parse_source(source)
    if scheme != "path" or not Path(rest).expanduser().is_dir():
        return ""
    root = sources.find_image_root(Path(rest).expanduser(), subdir)
    return listing_fingerprint(sources.list_image_strings(root), root)
