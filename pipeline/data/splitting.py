"""How the datablock stage divides images: held-out groups, then a random or a group-aware validation split.

A random split puts photos of the same signer on both sides, so its validation accuracy says how well the model
knows the people it trained on. `group_split` puts whole groups (signers, sessions, one photo's augmented copies)
into validation, which says how it does on people it has not seen. `monitor_split` is for the model that ships:
it trains on every signer and keeps back only a small share of each to watch training by (crossval, not this
split, says how the recipe does on someone new).

`deduplicate` comes first: a file listed twice (two sources over one folder) or copied under another name would
otherwise sit on both sides of the split, and a file given two labels is an error.
"""
from __future__ import annotations

import os
import random
from collections import Counter

from ..core.errors import PipelineError


def group_split(groups: list[str], valid_pct: float, seed: int) -> set[str]:
    """The groups to validate on: visited in an order shuffled with `seed`, each taken while the images taken stay
    within `valid_pct` of all; if every group is larger than that, the smallest one. Never every group, so training
    keeps at least one. Reproducible: the same groups, pct and seed give the same answer."""
    sizes = Counter(groups)
    if len(sizes) < 2:
        raise PipelineError(f"datablock.split = \"group\" needs at least two groups, found {len(sizes)} "
                            f"({', '.join(sizes) or 'none'}): set a source's group_regex, add a source, "
                            f"or use split = \"random\"")
    target = valid_pct * len(groups)
    order = sorted(sizes)
    random.Random(seed).shuffle(order)
    chosen, taken = set(), 0
    for g in order:
        if taken + sizes[g] <= target and len(chosen) < len(sizes) - 1:
            chosen.add(g)
            taken += sizes[g]
    return chosen or {min(order, key=lambda g: (sizes[g], g))}


def monitor_split(groups: list[str], valid_pct: float, seed: int, whole_below: int = 20) -> list[bool]:
    """Which items validate so that every group trains: `valid_pct` of the items of each group of `whole_below` items
    or more (a signer, a session), and of the smaller groups (one photo's augmented copies) whole groups with
    probability `valid_pct`, so copies never straddle the split. Reproducible with `seed`."""
    rng = random.Random(seed)
    members: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    valid = [False] * len(groups)
    for g in sorted(members):
        idx = members[g]
        chosen = (rng.sample(idx, round(valid_pct * len(idx))) if len(idx) >= whole_below
                  else idx if rng.random() < valid_pct else [])
        for i in chosen:
            valid[i] = True
    return valid


def random_split(n: int, valid_pct: float, seed: int) -> set[int]:
    """fastai's `RandomSplitter(valid_pct, seed)` validation indices over `n` items (the split every run before
    group splits used, kept bit for bit)."""
    from fastai.data.transforms import RandomSplitter

    _, valid_idx = RandomSplitter(valid_pct=valid_pct, seed=seed)(range(n))
    return set(int(i) for i in valid_idx)


def holdout_mask(groups: list[str], sources: list[str], names: list[str]) -> list[bool]:
    """Which items `names` (groups or source names) hold out; a name that is neither is an error listing them."""
    known = set(groups) | set(sources)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise PipelineError(f"datablock.holdout names {unknown[0]!r}, which is neither a group nor a source; "
                            f"groups: {', '.join(sorted(set(groups))[:12])}")
    wanted = set(names)
    return [g in wanted or s in wanted for g, s in zip(groups, sources)]


def deduplicate(items: list[tuple], key=lambda path: path, same_file: bool = True, root: str = ""):
    """`items` ((path, label, source, ...) tuples) without each item whose `key(path)` an earlier item of the same
    label has: (items kept, (path left out, path kept) pairs, (path, other path) pairs of equal keys and different
    labels, both kept). `same_file`: the key says the two are one file on disk, and two labels for it are an
    error naming it (under `root`) and both labels; else (the key is the bytes' sha256) two labels are the dataset's own
    question, and both copies stay."""
    first, kept, dropped, clashes = {}, [], [], []
    for item in items:
        path, label, source = item[:3]
        k = key(path)
        seen = first.setdefault((k, label), item)
        other = first.setdefault(k, item)
        if seen is item:
            kept.append(item)
            if other[1] != label:
                if same_file:
                    raise PipelineError(f"file {os.path.join(root, path)!r} is labelled both {other[1]!r} (source {other[2]}) and "
                                        f"{label!r} (source {source}): a file has one label; fix the sources' "
                                        f"label rules, or list its folder in one source only")
                clashes.append((path, other[0]))
        else:
            dropped.append((path, seen[0]))
    return kept, dropped, clashes
