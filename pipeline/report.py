"""`python -m pipeline report`: one self-contained HTML page per run (images inlined, no network, no scripts):
dataset summary, sample batch, class counts, near-copies across the split, lr_find, training curves and metrics,
and per test set the accuracy, calibration, per-category tallies, confusion matrix, the worst mistakes with their
images, and the interpretation (per-class precision/recall/F1, most confused pairs, top-losses gallery; the validation split's too);
the leave-one-group-out tables and plot where `crossval` has run.
Built only from the artifacts on disk; a stage that has not run is shown as such.

The page is a jinja2 template with autoescape on: every value (a file name, a class, a config path) is escaped
where it is written, so no name can inject markup. This module gathers the values; the template lays them out.
It is over 300 lines because that template (a hundred lines of layout) sits beside the functions that fill it.

It also shows what says how far the figures can be trusted: the validation photos and each test set's photos with
a near-copy among the training photos (data/leakage.py, with the gallery of the closest pairs), and crossval's
label conflicts (conflicts.py: the classes a held-out group spells its own way, with its photos)."""
from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import jinja2

from .core import artifacts
from .core.workspace import Workspace, write_text
from .data import loaders
from . import kinds

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222;
padding:0 1rem} h1{margin-bottom:.2rem} h2{border-bottom:2px solid #ddd;padding-bottom:.2rem;margin-top:2.2rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.9rem} td,th{border:1px solid #ccc;padding:.25rem .6rem;
text-align:right} th{background:#f3f3f3} td:first-child,th:first-child{text-align:left}
img.plot{max-width:100%;border:1px solid #eee;margin:.4rem 0} .muted{color:#777} .grid{display:flex;flex-wrap:wrap;
gap:.6rem} figure{margin:0;width:130px;font-size:.75rem;text-align:center;overflow-wrap:anywhere} figure img{width:128px;height:128px;
object-fit:contain;background:#111} .bad{color:#b00020} .good{color:#1b7f3a} .kv td{text-align:left}
"""

TEMPLATE = """\
{%- macro img(p) -%}
{% if p.uri %}<img class="plot" alt="{{ p.alt }}" src="{{ p.uri }}">
{%- else %}<p class="muted">({{ p.name }} not written yet)</p>{% endif %}
{%- endmacro -%}
{%- macro kv(pairs) -%}
<table class="kv">{% for k, v in pairs %}<tr><th>{{ k }}</th><td>{{ v }}</td></tr>{% endfor %}</table>
{%- endmacro -%}
{%- macro table(t) -%}
<table{% if t.id %} id="{{ t.id }}"{% endif %}><tr>{% for c in t.columns %}<th>{{ c }}</th>{% endfor %}</tr>
{%- for row in t.rows %}<tr>{% for cell in row %}<td>{{ cell }}</td>{% endfor %}</tr>{% endfor %}</table>
{%- endmacro -%}
{%- macro interpretation(i, h) -%}
{% if i.report %}<{{ h }}>Per class: precision, recall, F1</{{ h }}>{{ table(i.report) }}{% endif %}
{%- if i.confused %}<{{ h }}>Most confused (true → predicted)</{{ h }}>
{%- if i.confused.rows %}{{ table(i.confused) }}
{%- else %}<p class="good">no confusions: every image was right.</p>{% endif %}
{%- endif %}
{%- if i.top_losses.uri %}<{{ h }}>Top losses (the photos the model got most wrong, highest loss first)</{{ h }}>
{{ img(i.top_losses) }}{% endif %}
{%- endmacro -%}
{%- macro section(s, missing) -%}
{% if s %}{{ kv(s.pairs) }}{% for title, p in s.images %}{% if title %}<h3>{{ title }}</h3>{% endif %}{{ img(p) }}{% endfor %}
{%- if s.get("interpretation") %}{{ interpretation(s.interpretation, "h3") }}{% endif %}
{%- else %}<p class="muted">{{ missing }}</p>{% endif %}
{%- endmacro -%}
<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>{{ run }}: pipeline report</title><style>{{ css | safe }}</style></head><body>
<h1>{{ run }}</h1><p class="muted">config {{ config }} · run folder {{ root }}</p>
<table class="kv"><tr><th>stage</th><th>status</th></tr>
{%- for name, state in status %}<tr><td>{{ name }}</td><td>{{ state }}</td></tr>{% endfor %}</table>
<h2>Dataset</h2>{{ section(dataset, "download has not run.") }}
<h2>Learning-rate finder</h2>{{ section(lr_find, "lr_find has not run.") }}
<h2>Training</h2>{{ section(train, "train has not run.") }}
<h2>Test sets</h2>
{%- for t in test_sets %}<h3>{{ t.name }}</h3>
{%- if not t.pairs %}<p class="muted">no results for {{ t.name }}.</p>{% else %}{{ kv(t.pairs) }}
{%- if t.tallies %}<h4>Per category</h4><table><tr>{% for c in t.tally_columns %}<th>{{ c }}</th>{% endfor %}</tr>
{%- for row in t.tallies %}<tr>{% for cell in row %}<td>{{ cell }}</td>{% endfor %}</tr>{% endfor %}</table>{% endif %}
<div class="grid">{% for p in t.plots %}{{ img(p) }}{% endfor %}</div>
{{ interpretation(t.interpretation, "h4") }}
{%- if t.mistakes is not none %}
<h4>Worst mistakes (the {{ t.mistakes | length }} most confident wrong predictions)</h4>
{%- if t.mistakes %}<div class="grid">{% for m in t.mistakes %}<figure>
{%- if m.thumb %}<img alt="{{ m.file }}" src="{{ m.thumb }}">{% else %}<div class="muted">unreadable</div>{% endif %}
<figcaption>{{ m.file }}<br>true <b>{{ m.true }}</b>, predicted <b class="bad">{{ m.predicted }}</b> ({{ m.confidence }})
</figcaption></figure>{% endfor %}</div>
{%- else %}<p class="good">none: every image was right.</p>{% endif %}{% endif %}{% endif %}
{%- else %}<p class="muted">no test sets configured.</p>{% endfor %}
{%- if crossval %}<h2 id="crossval">Cross-validation (leave one group out)</h2>
{%- if crossval.summary %}<p>{{ crossval.summary }}</p>{% endif %}
{%- if crossval.folds %}<h3>Per held-out group</h3>{{ table(crossval.folds) }}{% endif %}
{%- if crossval.letters %}<h3>Per letter, over the folds (lowest first)</h3>{{ table(crossval.letters) }}{% endif %}
{{ img(crossval.plot) }}
{%- if crossval.conflicts %}<h3 id="conflicts">Label conflicts: classes a held-out group spells its own way</h3>
{%- if crossval.conflicts.cells %}<table id="conflicts-table"><tr><th>held out</th><th>class</th><th>read as</th>
<th>share</th><th>photos</th><th>examples</th></tr>
{%- for c in crossval.conflicts.cells %}<tr><td>{{ c.held_out }}</td><td>{{ c.cls }}</td><td class="bad">{{ c.read_as }}</td>
<td>{{ c.share }}</td><td>{{ c.count }} of {{ c.photos }}</td><td>{% for t in c.thumbs %}<img alt="{{ c.cls }}" src="{{ t }}" width="64">{% endfor %}</td></tr>
{%- endfor %}</table><p class="muted">Most photos of the class, from a group no fold's model saw, are read as one
other class: that group forms or photographs the sign as no other group does (a label conflict, not a hard letter).</p>
{%- else %}<p class="good">none: no class of a held-out group is mostly read as one other class.</p>{% endif %}
{%- if crossval.conflicts.spread %}<p class="muted">Mostly wrong, in many directions (spread confusion, not
flagged): {{ crossval.conflicts.spread }}</p>{% endif %}{% endif %}{% endif %}
</body></html>
"""
_PAGE = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined).from_string(TEMPLATE)


def _img(path: Path, alt: str = "") -> dict:
    """A PNG inlined as a data URI (`uri` is None when the file is missing)."""
    uri = f"data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}" if path.exists() else None
    return {"uri": uri, "alt": alt or path.stem, "name": path.name}


def _thumb(path: Path, size: int = 128) -> str | None:
    """A small inline JPEG of an image file (the original may be large) as a data URI, or None if unreadable."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
            im.thumbnail((size, size))
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=85)
    except Exception:  # noqa: BLE001 - an unreadable file is shown as such, never fatal to a report
        return None
    return f"data:image/jpeg;base64,{base64.b64encode(buf.getvalue()).decode()}"


def _json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _pct(x) -> str:
    return f"{100 * float(x):.1f} %"


def _dataset(ws: Workspace) -> dict | None:
    meta = _json(ws.artifact("download", artifacts.DATASET))
    vocab = _json(ws.artifact("datablock", artifacts.VOCAB))
    if not meta:
        return None
    pairs = [("source", meta.get("source", "")), ("image root", meta.get("root", "")),
             ("classes", len(meta.get("classes", []))), ("images", sum(meta.get("counts", {}).values()))]
    if vocab:
        pairs += [("train / valid", f"{vocab['n_train']} / {vocab['n_valid']} (valid_pct {vocab['valid_pct']}, "
                                    f"seed {vocab['seed']})"), ("corrupt excluded", vocab.get("n_corrupt", 0))]
        if "leakage" in vocab:
            pairs.append(("valid photos with a near-copy in train", _leaks(vocab["leakage"])))
    return {"pairs": pairs, "images": [
        ("Sample batch", _img(ws.artifact("datablock", artifacts.BATCH_PNG))),
        ("Images per class", _img(ws.artifact("datablock", artifacts.CLASS_COUNTS_PNG))),
        ("Near-copies across the split (each validation photo and its nearest training photo, closest first)",
         _img(ws.artifact("datablock", artifacts.LEAKAGE_PNG)))]}


def _leaks(s: dict) -> str:
    """A leakage summary (data/leakage.py) as the report says it: the share, and what a high one means."""
    from .data import leakage

    said = (f"{_pct(s['share'])} ({s['near_copies']} of {s['photos']}; Hamming distance ≤ {s['threshold']} of 64 "
            f"bits, median {s['median_distance']})")
    return said + (": its accuracy measures memory, not reading unseen photos" if s["share"] > leakage.HIGH else "")


def _lr_find(ws: Workspace) -> dict | None:
    found, m = _json(ws.artifact("lr_find", artifacts.LR_FIND)), _json(ws.artifact("train", artifacts.METRICS))
    if not found:
        return None
    pairs = [(k, f"{v:.2e}" if v else "n/a") for k, v in found["suggestions"].items()]
    pairs.append(("chosen", f"{found['suggestion']} {found['chosen']:.2e}"))
    if m and "lr_source" in m:
        pairs.append(("used by train", f"{m['lr']:.2e} ({m['lr_source']})"))
    return {"pairs": pairs, "images": [("", _img(ws.artifact("lr_find", artifacts.LR_FIND_PNG)))]}


def _train(ws: Workspace) -> dict | None:
    m, card = _json(ws.artifact("train", artifacts.METRICS)), _json(ws.model_card)
    if not m:
        return None
    pairs = [("valid accuracy", _pct(m["valid_accuracy"])), ("valid loss", f"{m['valid_loss']:.4f}"),
             ("epochs", m["epochs"]), ("lr", f"{m['lr']:.2e}" + (f" ({m['lr_source']})" if "lr_source" in m else "")), ("train time", f"{m['train_seconds']:.0f} s")]
    if m.get("valid_near_copies"):
        pairs.insert(1, ("valid photos with a near-copy in train", _leaks(m["valid_near_copies"])))
    if card:
        seen = kinds.reading(card.get("input", "images")).seen(card.get("image_size"), bool(card.get("grayscale")))
        pairs = [("model", f"{card['arch']} (pretrained={card['pretrained']}), {seen}")] + pairs
        pairs.append(("export", f"{card['learner']} (sha256 {card['sha256'][:12]}…)"))
    if "calibration" in m:
        c = m["calibration"]
        pairs.append(("temperature scaling", f"T = {c['temperature']:.3f}; valid ECE {c['valid_ece_before']:.3f} → "
                                             f"{c['valid_ece_after']:.3f}"))
    rt = m.get("runtime")
    if rt:
        pairs.append(("ran on", f"{rt['device']}, {rt['precision']}, {rt['threads']} thread(s), "
                                f"{'cache' if rt.get('cache') else 'image files'}"))
    if "valid_top5_accuracy" in m:
        pairs.append(("valid top-1 / top-5", f"{_pct(m['valid_top1_accuracy'])} / {_pct(m['valid_top5_accuracy'])}"))
    return {"pairs": pairs, "images": [("", _img(ws.artifact("train", artifacts.CURVES_PNG)))],
            "interpretation": _interpretation(ws.stage_dir("train"), "validation split",
                                              ("valid-report", "valid-confused"))}


def _csv(path: Path):
    """The CSV at `path` as a DataFrame of strings, or None where it is missing or unreadable."""
    import pandas as pd

    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError):
        return None


def _rows(df, columns: list[str], formats: dict | None = None) -> list[list[str]]:
    """`df`'s `columns` as rows of strings, each column through its `formats` function (on the float) where given."""
    formats = formats or {}
    return [[formats[c](float(v)) if c in formats and v != "" else v for c, v in zip(columns, row)]
            for row in df[columns].itertuples(index=False)]


def _interpretation(folder: Path, name: str, ids: tuple[str, str], confused: int = 10) -> dict:
    """The per-class report, the `confused` most confused pairs and the top-losses gallery in `folder` (what
    `models/interpretation.py` wrote for a test set or the validation split); `ids`: the two tables' ids."""
    out = {"report": None, "confused": None,
           "top_losses": _img(folder / artifacts.TOP_LOSSES_PNG, f"{name}: top losses")}
    if (df := _csv(folder / artifacts.CLASS_REPORT)) is not None:
        cols = ["class", "precision", "recall", "f1", "support"]
        out["report"] = {"id": ids[0], "columns": cols,
                         "rows": _rows(df, cols, {c: "{:.3f}".format for c in ("precision", "recall", "f1")})}
    if (df := _csv(folder / artifacts.MOST_CONFUSED)) is not None:
        out["confused"] = {"id": ids[1], "columns": ["true", "predicted", "count"],
                           "rows": _rows(df.head(confused), ["true", "predicted", "count"])}
    return out


def _crossval(ws: Workspace) -> dict | None:
    """`python -m pipeline crossval`'s results for this run (runs/<run>/crossval/), or None where it has not run."""
    folder = ws.root / "crossval"
    folds, letters = _csv(folder / artifacts.CROSSVAL_CSV), _csv(folder / artifacts.CROSSVAL_LETTERS)
    if folds is None:
        return None
    out = {"summary": "", "folds": None, "letters": None, "plot": _img(folder / artifacts.CROSSVAL_PNG, "crossval"),
           "conflicts": _conflicts(folder)}
    cols = [c for c in ("held_out", "images", "accuracy", "no_hand", "seconds", "worst") if c in folds]
    out["folds"] = {"id": "crossval-folds", "columns": [c.replace("_", " ") for c in cols],
                    "rows": _rows(folds, cols, {"accuracy": _pct, "images": "{:.0f}".format,
                                                "no_hand": "{:.0f}".format})}  # counts: floats beside a failed fold
    acc = folds["accuracy"].replace("", "nan").astype(float).dropna()
    if len(acc):
        out["summary"] = (f"Mean over {len(acc)} folds: {_pct(acc.mean())} ± {_pct(acc.std(ddof=0))} (standard "
                          f"deviation over folds); lowest fold {_pct(acc.min())}.")
    if letters is not None and len(letters):
        letters = letters.assign(m=letters["mean"].astype(float)).sort_values(["m", "letter"])
        out["letters"] = {"id": "crossval-letters", "columns": ["letter", "mean", "lowest fold", "folds"],
                          "rows": _rows(letters, ["letter", "mean", "min", "folds"], {"mean": _pct, "min": _pct})}
    return out


def _conflicts(folder: Path) -> dict | None:
    """The flagged cells of crossval's conflicts.csv (pipeline/conflicts.py), each with thumbnails of its photos;
    None where it has not been written."""
    from . import conflicts

    if (df := _csv(folder / artifacts.CONFLICTS)) is None:
        return None
    flagged = conflicts.flagged(df)
    spread = df.drop_duplicates(["held_out", "class"])
    return {"cells": [{"held_out": r["held_out"], "cls": r["class"], "read_as": r["read_as"],
                       "share": _pct(r["share"]), "count": r["count"], "photos": r["photos"],
                       "thumbs": [t for p in (json.loads(r["examples"]) if r["examples"] else [])
                                  if (t := _thumb(Path(p), 96))]}
                      for _, r in flagged.iterrows()],
            "spread": ", ".join(f"{r['held_out']} {r['class']}" for _, r in
                                spread[spread["verdict"] == conflicts.SPREAD].iterrows())}


TALLY_COLUMNS = ["category", "total", "correct", "accuracy", "most_confused_with"]


def _test_set(ws: Workspace, name: str, worst: int) -> dict:
    import pandas as pd

    folder = ws.stage_dir("evaluate") / name
    out = {"name": name, "pairs": None, "tallies": None, "tally_columns": TALLY_COLUMNS, "plots": [], "mistakes": None,
           "interpretation": _interpretation(folder, name, (f"report-{name}", f"confused-{name}"))}
    m = _json(folder / artifacts.METRICS)
    if not m:
        return out
    out["pairs"] = [("accuracy", f"{_pct(m['accuracy'])} ({m['correct']}/{m['scored']})"),
                    ("calibration", f"ECE {m['ece']:.3f}, mean confidence {_pct(m['mean_confidence'])}"
                     if "ece" in m else "n/a"),
                    ("not scored", f"{m['unmatched']} not matching the regex, {m['out_of_vocab']} outside the vocab, "
                                   f"{m['unreadable']} unreadable"), ("source", m.get("source", ""))]
    if "top5_accuracy" in m:
        out["pairs"].insert(1, ("top-5 accuracy", f"{_pct(m['top5_accuracy'])} (mean loss {m['mean_loss']:.3f})"))
    if m.get("missing_classes"):
        out["pairs"].append(("classes absent from this set", ", ".join(m["missing_classes"])))
    if "leakage" in m:
        out["pairs"].append(("near-copies of training photos", _leaks(m["leakage"])))
    if (folder / artifacts.TALLIES).exists():
        df = pd.read_csv(folder / artifacts.TALLIES, keep_default_na=False)
        df["accuracy"] = df["accuracy"].map(_pct)
        out["tallies"] = df[TALLY_COLUMNS].astype(str).values.tolist()
    out["plots"] = [_img(folder / artifacts.CONFUSION_PNG), _img(folder / artifacts.RELIABILITY_PNG)]
    if (folder / artifacts.LEAKAGE_PNG).exists():
        out["plots"].append(_img(folder / artifacts.LEAKAGE_PNG, f"{name}: nearest training photos"))
    if (folder / artifacts.PREDICTIONS).exists():
        df = pd.read_csv(folder / artifacts.PREDICTIONS, keep_default_na=False, dtype={"true": str, "predicted": str})
        wrong = df[~df["correct"].astype(bool)].sort_values("confidence", ascending=False).head(worst)
        root = Path(m.get("root", ""))
        out["mistakes"] = [{"file": r.file, "thumb": _thumb(root / r.file), "true": r.true, "predicted": r.predicted,
                            "confidence": _pct(r.confidence)} for r in wrong.itertuples()]
    return out


def build(cfg, status: list[tuple[str, str]], worst: int = 24) -> Path:
    """Write runs/<run>/report.html from the run's artifacts and `status` (the runner's (stage, state) lines);
    returns its path."""
    ws = Workspace.from_config(cfg)
    # datablock.holdout's groups are scored as a test set of their own (a crossval fold's only one)
    evaluate_sets = ([loaders.HOLDOUT_SET] if cfg.datablock.holdout else []) + [t.name for t in cfg.evaluate.test_sets]
    page = _PAGE.render(run=cfg.run.name, config=cfg.source_file, root=str(ws.root), css=CSS, status=status,
                        dataset=_dataset(ws), lr_find=_lr_find(ws), train=_train(ws),
                        test_sets=[_test_set(ws, name, worst) for name in evaluate_sets],
                        crossval=_crossval(ws))
    return write_text(ws.root / artifacts.REPORT, page)
