"""Label conflicts across sources, from crossval's out-of-fold predictions: the classes a held-out source (or
signer) spells its own way.

Each crossval fold's model never saw the group it reads, so where most photos of one class of that group are read
as one other class, the group forms (or photographs, or freezes the motion of) that letter as no other group
does: its labels disagree with the rest, and no amount of training on the others will read them. A letter that is
merely hard is wrong in many directions (spread confusion), and is not flagged.

    table(predictions)      per held-out group, class and class read as: photos, share, flag, verdict
    flagged(table)          the flagged cells, one row each (what the report and crossval.md list)
    sentence(row)           "grassknoted's T is read as A in 60% (24 of 40 photos): this group spells T its own way"
"""
from __future__ import annotations

import json

MOST = 0.5       # the share of a class's photos read as one other class above which the cell is flagged: most of them
MIN_PHOTOS = 5   # a class with fewer photos in a group is never flagged: too few to say
EXAMPLES = 4     # photos kept per flagged cell, for the report's thumbnails
COLUMNS = ["held_out", "class", "photos", "read_as", "count", "share", "flag", "verdict", "examples"]
CONFLICT, SPREAD = "spelled its own way", "spread confusion"


def table(predictions):
    """`predictions` (held_out, true, predicted, and `path` where the report should show photos: one row per
    out-of-fold photo) → one row per held-out group, class and class read as: `photos` of that class in that group,
    `count` read as `read_as` and its `share`; `flag` on the row of another class that takes more than `MOST` of
    them (with `MIN_PHOTOS` or more); `verdict` on every row of the cell: `CONFLICT` where one is flagged, `SPREAD`
    where most are wrong but no one class takes more than `MOST`, else empty; `examples`: a JSON list of up to `EXAMPLES`
    paths of a flagged row's photos."""
    import pandas as pd

    rows = []
    has_path = "path" in predictions
    for (unit, cls), g in predictions.groupby(["held_out", "true"], sort=True):
        n = len(g)
        counts = g["predicted"].value_counts()
        wrong = counts.drop(cls, errors="ignore")
        top = wrong.index[0] if len(wrong) and wrong.iloc[0] / n > MOST and n >= MIN_PHOTOS else None
        verdict = CONFLICT if top is not None else (SPREAD if wrong.sum() / n > MOST and n >= MIN_PHOTOS else "")
        for read_as, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
            ex = (list(g.loc[g["predicted"] == read_as, "path"].astype(str)[:EXAMPLES])
                  if read_as == top and has_path else [])
            rows.append({"held_out": unit, "class": cls, "photos": n, "read_as": read_as, "count": int(c),
                         "share": c / n, "flag": read_as == top, "verdict": verdict,
                         "examples": json.dumps(ex) if ex else ""})
    return pd.DataFrame(rows, columns=COLUMNS)


def flagged(t):
    """The flagged rows of `table(...)`'s `t`, the largest share first."""
    flag = t["flag"].astype(str).str.lower() == "true"
    return t[flag].sort_values(["share", "held_out", "class"], ascending=[False, True, True])


def sentence(row) -> str:
    """One flagged row as the report and the log say it."""
    return (f"{row['held_out']}'s {row['class']} is read as {row['read_as']} in {float(row['share']):.0%} "
            f"({row['count']} of {row['photos']} photos): this group spells {row['class']} its own way")


def said(t) -> str:
    """The log's one line about a conflicts table."""
    f = flagged(t)
    spread = t.drop_duplicates(["held_out", "class"])
    n_spread = int((spread["verdict"] == SPREAD).sum())
    if not len(f):
        return (f"label conflicts: none (no class of a held-out group is read as one other class in over {MOST:.0%} "
                f"of its photos); {n_spread} class(es) mostly wrong in many directions (spread confusion)")
    shown = "; ".join(sentence(r) for _, r in f.head(3).iterrows())
    return (f"label conflicts: {len(f)} class(es) of a held-out group read as one other class in over {MOST:.0%} "
            f"of their photos: {shown}" + (f"; and {len(f) - 3} more" if len(f) > 3 else "")
            + f" ({n_spread} more mostly wrong in many directions: spread confusion, not flagged)")
