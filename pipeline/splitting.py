"""How the datablock stage divides images: held-out groups, then a random or a group-aware validation split.

A random split puts photos of the same signer on both sides, so its validation accuracy says how well the model
knows the people it trained on. `group_split` puts whole groups (signers, sessions, one photo's augmented copies)
into validation, which says how it does on people it has not seen.
"""
from __future__ import annotations

import random
from collections import Counter

from .errors import PipelineError


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
