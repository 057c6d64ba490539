"""From letters to text (pipeline/serve/spelling.py) on synthetic frame sequences: steady letters, flicker, double letters,
no-hand gaps, space and del, the threshold, and the frame-count floor of a slow stream."""
import pytest

from pipeline.core.errors import PipelineError
from pipeline.serve import spelling
from pipeline.serve.spelling import Rules, Speller, spell

FPS = 30
RULES = Rules(threshold=0.6, hold_s=0.5, min_frames=3, gap_frames=2)


def frames(*parts, fps=FPS, p=0.9):
    """(t, label, p) triples at `fps` from parts: (label or None, seconds) or (label, seconds, probability)."""
    out, t = [], 0.0
    for part in parts:
        label, seconds, prob = (*part, p) if len(part) == 2 else part
        for _ in range(round(seconds * fps)):
            out.append((t, label, prob))
            t += 1 / fps
    return out


def test_steady_letters_are_written_once_each_after_the_hold():
    text, written = spell(frames(("H", 1), ("E", 1), ("Y", 1)), RULES)
    assert text == "HEY"
    first = written.index("H")
    assert first == round(RULES.hold_s * FPS)  # the frame at which H had been held hold_s
    assert [w for w in written if w] == ["H", "E", "Y"]


def test_a_letter_held_less_than_the_hold_is_not_written():
    assert spell(frames(("A", 0.3), (None, 0.2), ("B", 1)), RULES)[0] == "B"


def test_flicker_neither_writes_the_flickering_letter_nor_repeats_the_held_one():
    """A steady L with one-frame E flickers every 5 frames stays one L; the flickers are never held long enough."""
    seq = [(t, "E" if i % 5 == 4 and label == "L" else label, p)
           for i, (t, label, p) in enumerate(frames(("L", 2), ("O", 1)))]
    assert spell(seq, RULES)[0] == "LO"


def test_a_one_frame_flicker_is_skipped_but_a_longer_change_restarts_the_hold():
    """Fewer than gap_frames frames of something else do not restart the count; gap_frames frames do."""
    written = spell(frames(("A", 0.3), ("B", 1 / FPS), ("A", 0.6)), RULES)[1]
    assert written.index("A") == round(0.5 * FPS)
    written = spell(frames(("A", 0.3), ("B", 2 / FPS), ("A", 0.6)), RULES)[1]
    assert written.index("A") == round(0.3 * FPS) + 2 + round(0.5 * FPS)
    # two lone B frames far apart are two flickers, not a change to B
    seq = frames(("A", 0.2), ("B", 1 / FPS), ("A", 0.2), ("B", 1 / FPS), ("A", 0.2), ("B", 0.4))
    assert spell(seq, RULES)[0] == "A"


@pytest.mark.parametrize("gap", [(None, 0.2), ("nothing", 0.2), ("E", 2 / FPS)], ids=["no hand", "nothing", "change"])
def test_a_double_letter_needs_a_break(gap):
    """HELLO: the two L's are written only with a break between them (no hand, `nothing`, or a brief change of
    `gap_frames` frames); held without one, it is a single L."""
    assert spell(frames(("H", 1), ("E", 1), ("L", 1), gap, ("L", 1), ("O", 1)), RULES)[0] == "HELLO"
    assert spell(frames(("H", 1), ("E", 1), ("L", 2), ("O", 1)), RULES)[0] == "HELO"


def test_a_one_frame_change_is_not_a_break():
    assert spell(frames(("L", 1), ("E", 1 / FPS), ("L", 1)), RULES)[0] == "L"


def test_no_hand_is_a_pause_and_never_a_letter():
    """Frames without a hand, or with the model's `nothing`, write nothing, and a gap in a held letter restarts
    its count."""
    assert spell(frames((None, 2), ("nothing", 2, 0.99)), RULES)[0] == ""
    seq = frames(("A", 0.3), (None, 0.1), ("A", 0.3))
    assert spell(seq, RULES)[0] == ""  # 0.3 s + 0.3 s, never 0.5 s in a row


def test_space_and_del_act_as_space_and_backspace():
    seq = frames(("H", 1), ("I", 1), ("space", 1), ("Y", 1), ("O", 1), ("del", 1), ("U", 1))
    text, written = spell(seq, RULES)
    assert text == "HI YU" and "del" in written and "space" in written
    # two backspaces need a break between them, like a double letter
    assert spell(frames(("A", 1), ("B", 1), ("del", 1), (None, 0.2), ("del", 1)), RULES)[0] == ""
    assert spell(frames(("del", 1)), RULES)[0] == ""  # nothing to delete


def test_the_threshold_decides_which_frames_count():
    seq = frames(("A", 1, 0.55), ("B", 1, 0.65))
    assert spell(seq, RULES)[0] == "B"
    assert spell(seq, Rules(threshold=0.5))[0] == "AB"
    assert spell(seq, Rules(threshold=0.7))[0] == ""
    # a low-confidence frame of the letter just written is not a break
    dip = frames(("L", 1), ("L", 0.2, 0.3), ("L", 1))
    assert spell(dip, RULES)[0] == "L"


def test_a_slow_stream_still_needs_min_frames():
    """At 2 frames/s a single frame spans the hold; min_frames asks for 3 in a row."""
    text, written = spell(frames(("A", 3), fps=2), RULES)
    assert text == "A" and written.index("A") == 2


def test_pending_says_what_is_held_and_how_far_and_clear_forgets():
    s = Speller(RULES)
    for t, label, p in frames(("K", 0.25)):
        s.step(t, label, p)
    label, done = s.pending(0.25)
    assert label == "K" and 0.4 < done < 0.6
    for t, label, p in frames(("K", 0.5)):
        s.step(t + 0.25, label, p)
    assert s.text == "K" and s.pending(0.75) is None
    s.clear()
    assert s.text == "" and s.pending(1.0) is None


@pytest.mark.parametrize("kwargs", [{"threshold": 1.5}, {"hold_s": -1}, {"min_frames": 0}, {"gap_frames": 0},
                                    {"threshold": float("nan")}, {"hold_s": float("nan")}, {"hold_s": float("inf")}])
def test_bad_rules_are_one_line_errors(kwargs):
    with pytest.raises(PipelineError) as e:
        Rules(**kwargs)
    assert "\n" not in str(e.value)


def test_spelling_imports_no_model_code():
    import ast
    from pathlib import Path

    tree = ast.parse(Path(spelling.__file__).read_text())
    imported = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in imported if m.split(".")[0] in ("torch", "mediapipe", "cv2", "fastai", "numpy")}
