"""The model card beside an export (`exports/RUN.json`, written by the train stage): where it lies, and reading it
checked, in one place. Every loader reads it here, so a damaged or tampered card is one line naming the card and
the field, never a traceback from whatever used the field first.

    path_for(model_file)                    exports/RUN.json for exports/RUN.pkl or exports/RUN.onnx
    read(model_file, engine)                the card as a dict, with what `engine` ("fastai" | "onnx") uses checked
    onnx_path(model_file, card)             the `.onnx` the card names, beside `model_file`
    check_graph(model_file, card, ...)      the card's family, input and vocab against the graph onnxruntime loaded

What each engine uses: fastai, the `.pkl`'s `sha256` (its vocab and input come from the learner itself); onnx, the
`vocab`, `image_size` and `grayscale` (an image graph), and the `onnx` entry: `file` (a file name beside the card,
not a path), `sha256`, `family`, `input.name`.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from ..core.errors import PipelineError

ENGINES = ("fastai", "onnx")  # what runs an export (`--engine`, `evaluate.engine`): the learner, or onnxruntime
BATCH = 64  # photos (or keypoint rows) a prediction runs at once unless told (evaluate.batch_size, --batch-size)
MAX_IMAGE_SIZE = 1024  # pixels a side a model reads (train.image_size, a card's): larger batches do not fit in memory
VOCAB_KEY = "signpipe.vocab_sha256"  # the graph's metadata_props entry: the sha256 of the vocab it was exported with


def path_for(model_file) -> Path:
    """The model card of `model_file` (`exports/RUN.pkl` or `exports/RUN.onnx`): `exports/RUN.json`."""
    return Path(model_file).with_suffix(".json")


def is_sha256(value) -> bool:
    """Whether `value` is a sha256 as the card writes it: 64 lowercase hex digits."""
    return isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value) is not None


def _damaged(where: Path, field: str, problem: str) -> PipelineError:
    return PipelineError(f"the model card {where} is damaged: {field} {problem}; rerun train (`python -m pipeline "
                         f"run --stages train --force`) or restore the card")


def read(model_file, engine: str = "fastai", reading=None) -> dict:
    """The model card beside `model_file`, with the fields `engine` uses checked (one line for the first problem):
    missing or not JSON, a sha256 that is not one, a vocab that is not a list of distinct names, an `onnx.file` that
    is a path; with `reading` (`kinds.reading`: a card's `onnx.family` → the kind that reads its graph, or None),
    a `family` this package does not know and what that kind says is wrong (an `image_size` that is not a whole
    number of pixels, ...)."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    where = path_for(model_file)
    try:
        card = json.loads(where.read_text(encoding="utf-8"))
    except FileNotFoundError:
        card = None
    except (OSError, ValueError) as e:  # there, but not a card: say so, not "no model card"
        raise _damaged(where, "its text", f"is not JSON ({type(e).__name__})") from None
    if card is not None and not isinstance(card, dict):
        raise _damaged(where, "its text", "is not a JSON object")
    if engine == "fastai":
        if card is None:
            raise PipelineError(f"no model card at {where}: refusing to unpickle {model_file} "
                                f"(pass --sha256 HEX, or --trust-learner only for a file you trust)")
        if not is_sha256(card.get("sha256")):
            raise _damaged(where, "sha256", "is not a sha256 (64 hex digits)")
        return card
    if card is None:
        raise PipelineError(f"no model card at {where}: the onnx engine needs it for the vocab and the input "
                            f"(run `python -m pipeline run --stages train`)")
    vocab = card.get("vocab")
    if not (isinstance(vocab, list) and vocab and all(isinstance(v, str) for v in vocab)
            and len(set(vocab)) == len(vocab)):
        raise _damaged(where, "vocab", "is not a list of distinct class names")
    entry = card.get("onnx") or {}  # no entry: a card written before train exported ONNX
    if not isinstance(entry, dict):
        raise _damaged(where, "onnx", "is not an object")
    if not entry.get("file"):
        raise PipelineError(f"the model card {where} lists no ONNX export ({entry.get('why', 'trained before ONNX export')}): "
                            f"rerun train, or use --engine fastai")
    file = entry["file"]
    if not isinstance(file, str) or Path(file).name != file or file in (".", "..") or not file.endswith(".onnx"):
        raise _damaged(where, "onnx.file", f"{file!r} is not the name of an .onnx file beside the card")
    if not is_sha256(entry.get("sha256")):
        raise _damaged(where, "onnx.sha256", "is not a sha256 (64 hex digits)")
    kind = reading(entry.get("family")) if reading is not None and isinstance(entry.get("family"), str) else None
    if reading is not None and kind is None:
        raise _damaged(where, "onnx.family", f"{entry.get('family')!r} is not an input this package reads")
    if not isinstance(entry.get("input"), dict) or not isinstance(entry["input"].get("name"), str):
        raise _damaged(where, "onnx.input.name", "is missing")
    if "features" in entry and not (isinstance(entry["features"], dict)
                                    and isinstance(entry["features"].get("name"), str)):
        raise _damaged(where, "onnx.features.name", "is missing")
    problem = kind.card_problem(card) if kind is not None else None
    if problem:
        raise _damaged(where, *problem)
    return card


def onnx_path(model_file, card: dict) -> Path:
    """The `.onnx` that `card` (read with engine "onnx") names, beside `model_file`."""
    return Path(model_file).with_name(card["onnx"]["file"])


def vocab_sha256(vocab) -> str:
    """The sha256 of `vocab` (a list of class names, in order) that the graph's metadata keeps under VOCAB_KEY."""
    return hashlib.sha256(json.dumps(list(vocab), ensure_ascii=False).encode()).hexdigest()


def check_graph(model_file, card: dict, inputs: dict, width, types: dict | None = None,
                metadata: dict | None = None, reads: tuple | None = None) -> None:
    """That the graph onnxruntime loaded is the one `card` describes: its input `card["onnx"]["input"]["name"]`
    (and `card["onnx"]["features"]["name"]`, a fused graph's second input) among `inputs` (name → shape), of the
    type (`types`: name → onnxruntime's type) and rank the card's family reads (`reads`: its kind's
    `graph_input`), an image graph's fixed height and
    width equal to `image_size`, `width` (its output's columns, when known) equal to the vocab's length, and the
    vocab the one the graph was exported with (`metadata`, its metadata_props: a graph exported before it kept
    VOCAB_KEY is taken on the card's word)."""
    where, entry = path_for(model_file), card["onnx"]
    name = entry["input"]["name"]
    if name not in inputs:
        raise _damaged(where, "onnx.input.name", f"{name!r} is not the graph's input ({', '.join(inputs)})")
    second = (entry.get("features") or {}).get("name")
    if second is not None and second not in inputs:
        raise _damaged(where, "onnx.features.name", f"{second!r} is not the graph's input ({', '.join(inputs)})")
    shape = inputs[name]
    kind, rank, what = reads or (None, None, None)
    if reads is not None and types is not None and (types.get(name) != kind or len(shape) != rank):
        got = (types.get(name) or "?").removeprefix("tensor(").removesuffix(")")
        raise _damaged(where, "onnx.family", f"{entry['family']!r} reads {what}, but the graph's input {name!r} is "
                                             f"{got} ({', '.join(map(str, shape))})")
    if card.get("image_size") is not None and len(shape) == 4:
        fixed = [d for d in shape[1:3] if isinstance(d, int)]
        if fixed and any(d != card["image_size"] for d in fixed):
            raise _damaged(where, "image_size", f"{card['image_size']} does not match the graph's input "
                                                f"{shape[1]}x{shape[2]}")
    if isinstance(width, int) and width != len(card["vocab"]):
        raise _damaged(where, "vocab", f"has {len(card['vocab'])} class(es) but the graph gives {width} "
                                       f"probabilities")
    recorded = (metadata or {}).get(VOCAB_KEY)
    if recorded is not None and recorded != vocab_sha256(card["vocab"]):
        raise _damaged(where, "vocab", f"{card['vocab']} is not the one the graph was exported with (its sha256 is "
                                       f"in the graph's metadata, {VOCAB_KEY})")


# The named inputs a kind may offer an engine (`Engine.run`): each as a value, or as a function of no arguments that
# makes it (only an engine that reads it calls it). A model reads some of them (`Engine.reads`):
#   files     image files: a fastai vision learner reads them through its own transforms; an ONNX graph's uint8
#             image input ("image", "crop") is decoded from them at the card's `image_size` when not given itself
#   rows      float32 rows of a tabular learner's continuous columns (the keypoint features, and more beside them)
#   features  float32 (n, 64) keypoint rows: a graph's keypoint input
#   crop      uint8 (n, S, S, 3) crops: a graph's crop input (a sequence that decodes the slice asked for will do)
#   crops, photos, folder   PNG crops, the photos they were cut from and the data folder whose stores to reuse: a
#             learner that answers them itself (its `reads` and `answer`: the fused crop learner)
INPUTS = ("files", "rows", "features", "crop", "crops", "photos", "folder")


def given(inputs: dict, name: str, model: str):
    """The input `name` of `inputs`, made now if a function makes it; a one-line error where the kind offers none."""
    if name not in inputs:
        raise PipelineError(f"{model} reads {name!r} and was given only {', '.join(sorted(inputs)) or 'nothing'}")
    value = inputs[name]
    return value() if callable(value) else value
