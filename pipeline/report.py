"""`python -m pipeline report`: one self-contained HTML page per run (images inlined, no network, no scripts):
dataset summary, sample batch, class counts, lr_find, training curves and metrics, and per test set the
accuracy, calibration, per-category tallies, confusion matrix and the worst mistakes with their images.
Built only from the artifacts on disk; a stage that has not run is shown as such."""
from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

from .workspace import Workspace, write_text

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222;
padding:0 1rem} h1{margin-bottom:.2rem} h2{border-bottom:2px solid #ddd;padding-bottom:.2rem;margin-top:2.2rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.9rem} td,th{border:1px solid #ccc;padding:.25rem .6rem;
text-align:right} th{background:#f3f3f3} td:first-child,th:first-child{text-align:left}
img.plot{max-width:100%;border:1px solid #eee;margin:.4rem 0} .muted{color:#777} .grid{display:flex;flex-wrap:wrap;
gap:.6rem} figure{margin:0;width:130px;font-size:.75rem;text-align:center;overflow-wrap:anywhere} figure img{width:128px;height:128px;
object-fit:contain;background:#111} .bad{color:#b00020} .good{color:#1b7f3a} .kv td{text-align:left}
"""


def _e(x) -> str:
    return html.escape(str(x))


def _img(path: Path, cls: str = "plot", alt: str = "") -> str:
    if not path.exists():
        return f'<p class="muted">({_e(path.name)} not written yet)</p>'
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img class="{cls}" alt="{_e(alt or path.stem)}" src="data:image/png;base64,{data}">'


def _thumb(path: Path, size: int = 128) -> str:
    """A small inline JPEG of an image file (the original may be large), or a note if it cannot be read."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
            im.thumbnail((size, size))
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=85)
    except Exception:  # noqa: BLE001 - an unreadable file is shown as such, never fatal to a report
        return '<div class="muted">unreadable</div>'
    return f'<img alt="{_e(path.name)}" src="data:image/jpeg;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _table(rows: list[dict], columns: list[str], fmt: dict | None = None) -> str:
    fmt = fmt or {}
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_e(fmt.get(c, str)(r.get(c, '')))}</td>" for c in columns) + "</tr>"
                   for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _pct(x) -> str:
    return f"{100 * float(x):.1f} %"


def _kv(pairs: list[tuple[str, object]]) -> str:
    return '<table class="kv">' + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in pairs) + "</table>"


def _dataset(ws: Workspace) -> str:
    meta, vocab = _json(ws.artifact("download", "dataset.json")), _json(ws.artifact("datablock", "vocab.json"))
    if not meta:
        return '<p class="muted">download has not run.</p>'
    pairs = [("source", meta.get("source", "")), ("image root", meta.get("root", "")),
             ("classes", len(meta.get("classes", []))), ("images", sum(meta.get("counts", {}).values()))]
    if vocab:
        pairs += [("train / valid", f"{vocab['n_train']} / {vocab['n_valid']} (valid_pct {vocab['valid_pct']}, "
                                    f"seed {vocab['seed']})"), ("corrupt excluded", vocab.get("n_corrupt", 0))]
    return (_kv(pairs) + "<h3>Sample batch</h3>" + _img(ws.artifact("datablock", "batch.png"))
            + "<h3>Images per class</h3>" + _img(ws.artifact("datablock", "class_counts.png")))


def _lr_find(ws: Workspace) -> str:
    found, m = _json(ws.artifact("lr_find", "lr_find.json")), _json(ws.artifact("train", "metrics.json"))
    if not found:
        return '<p class="muted">lr_find has not run.</p>'
    pairs = [(k, f"{v:.2e}" if v else "n/a") for k, v in found["suggestions"].items()]
    pairs.append(("chosen", f"{found['suggestion']} {found['chosen']:.2e}"))
    if m and "lr_source" in m:
        pairs.append(("used by train", f"{m['lr']:.2e} ({m['lr_source']})"))
    return _kv(pairs) + _img(ws.artifact("lr_find", "lr_find.png"))


def _train(ws: Workspace) -> str:
    m, card = _json(ws.artifact("train", "metrics.json")), _json(ws.model_card)
    if not m:
        return '<p class="muted">train has not run.</p>'
    pairs = [("valid accuracy", _pct(m["valid_accuracy"])), ("valid loss", f"{m['valid_loss']:.4f}"),
             ("epochs", m["epochs"]), ("lr", f"{m['lr']:.2e}" + (f" ({m['lr_source']})" if "lr_source" in m else "")), ("train time", f"{m['train_seconds']:.0f} s")]
    if card:
        pairs = [("model", f"{card['arch']} (pretrained={card['pretrained']}), {card['image_size']} px")] + pairs
        pairs.append(("export", f"{card['learner']} (sha256 {card['sha256'][:12]}…)"))
    if "calibration" in m:
        c = m["calibration"]
        pairs.append(("temperature scaling", f"T = {c['temperature']:.3f}; valid ECE {c['valid_ece_before']:.3f} → "
                                             f"{c['valid_ece_after']:.3f}"))
    rt = m.get("runtime")
    if rt:
        pairs.append(("ran on", f"{rt['device']}, {rt['precision']}, {rt['threads']} thread(s), "
                                f"{'cache' if rt.get('cache') else 'image files'}"))
    return _kv(pairs) + _img(ws.artifact("train", "curves.png"))


def _test_set(ws: Workspace, name: str, worst: int) -> str:
    import pandas as pd

    folder = ws.stage_dir("evaluate") / name
    m = _json(folder / "metrics.json")
    if not m:
        return f'<p class="muted">no results for {_e(name)}.</p>'
    pairs = [("accuracy", f"{_pct(m['accuracy'])} ({m['correct']}/{m['scored']})"),
             ("calibration", f"ECE {m['ece']:.3f}, mean confidence {_pct(m['mean_confidence'])}" if "ece" in m else "n/a"),
             ("not scored", f"{m['unmatched']} not matching the regex, {m['out_of_vocab']} outside the vocab, "
                            f"{m['unreadable']} unreadable"), ("source", m.get("source", ""))]
    if m.get("missing_classes"):
        pairs.append(("classes absent from this set", ", ".join(m["missing_classes"])))
    out = [_kv(pairs)]
    tallies = folder / "tallies.csv"
    if tallies.exists():
        rows = pd.read_csv(tallies, keep_default_na=False).to_dict("records")
        out.append("<h4>Per category</h4>" + _table(rows, ["category", "total", "correct", "accuracy",
                                                             "most_confused_with"], {"accuracy": _pct}))
    out.append('<div class="grid">' + _img(folder / "confusion.png") + _img(folder / "reliability.png") + "</div>")
    preds = folder / "predictions.csv"
    if preds.exists():
        df = pd.read_csv(preds, keep_default_na=False, dtype={"true": str, "predicted": str})
        wrong = df[~df["correct"].astype(bool)].sort_values("confidence", ascending=False).head(worst)
        root = Path(m.get("root", ""))
        figs = "".join(f"<figure>{_thumb(root / r.file)}<figcaption>{_e(r.file)}<br>true <b>{_e(r.true)}</b>, "
                       f'predicted <b class="bad">{_e(r.predicted)}</b> ({_pct(r.confidence)})</figcaption></figure>'
                       for r in wrong.itertuples())
        out.append(f"<h4>Worst mistakes (the {len(wrong)} most confident wrong predictions)</h4>"
                   + (f'<div class="grid">{figs}</div>' if figs else '<p class="good">none: every image was right.</p>'))
    return "".join(out)


def build(cfg, worst: int = 24) -> Path:
    """Write runs/<run>/report.html from the run's artifacts; returns its path."""
    ws = Workspace.from_config(cfg)
    from . import runner

    status = "".join(f"<tr><td>{_e(n)}</td><td>{_e(s)}</td></tr>" for n, s in runner.status(cfg))
    sets = "".join(f"<h3>{_e(t.name)}</h3>{_test_set(ws, t.name, worst)}" for t in cfg.evaluate.test_sets)
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>{_e(cfg.run.name)}: pipeline report</title><style>{CSS}</style></head><body>
<h1>{_e(cfg.run.name)}</h1><p class="muted">config {_e(cfg.source_file)} · run folder {_e(ws.root)}</p>
<table class="kv"><tr><th>stage</th><th>status</th></tr>{status}</table>
<h2>Dataset</h2>{_dataset(ws)}
<h2>Learning-rate finder</h2>{_lr_find(ws)}
<h2>Training</h2>{_train(ws)}
<h2>Test sets</h2>{sets or '<p class="muted">no test sets configured.</p>'}
</body></html>
"""
    return write_text(ws.root / "report.html", page)
