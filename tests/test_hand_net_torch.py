"""MediaPipe's hand-landmark network as a PyTorch module (pipeline/kinds/hand_net/network.py): parity with LiteRT."""
import warnings

import numpy as np
import pytest
import torch

from pipeline.core.errors import PipelineError
from pipeline.kinds.hand_net import network as hand_net_torch

HEADS = ("Identity", "Identity_1", "Identity_2", "Identity_3")  # 21 landmarks, hand flag, handedness, world landmarks


@pytest.fixture(scope="module")
def tflite():
    """(the model's path, a LiteRT interpreter that keeps every tensor, the embedding's tensor index)."""
    return _interpreter("hand_landmark_full.tflite")


def _interpreter(name: str):
    pytest.importorskip("mediapipe", reason="the [hands] extra is not installed")
    litert = pytest.importorskip("ai_edge_litert.interpreter", reason="ai-edge-litert is not installed")
    path = hand_net_torch.default_path().with_name(name)
    if not path.is_file():
        pytest.skip(f"this MediaPipe wheel has no {path.name}")
    with warnings.catch_warnings():  # "preserve_all_tensors is for debugging": the point here, reading the Mean
        warnings.simplefilter("ignore", UserWarning)
        interp = litert.Interpreter(model_path=str(path), experimental_preserve_all_tensors=True, num_threads=1)
    interp.allocate_tensors()
    index = next(d["index"] for d in interp.get_tensor_details() if d["name"] == hand_net_torch.EMBEDDING)
    return path, interp, index


def _litert(tflite, photo_nhwc: np.ndarray, names=None):
    """LiteRT's embedding (or, with `names`, those output tensors) for one (224, 224, 3) float photo."""
    _, interp, index = tflite
    interp.set_tensor(interp.get_input_details()[0]["index"], photo_nhwc[None].astype(np.float32))
    interp.invoke()
    if names is None:
        return interp.get_tensor(index)[0]
    outs = {d["name"]: d["index"] for d in interp.get_output_details()}
    return [interp.get_tensor(outs[n])[0] for n in names]


def _torch(net, photos_nhwc: np.ndarray):
    with torch.no_grad():
        return net(torch.from_numpy(np.ascontiguousarray(photos_nhwc.transpose(0, 3, 1, 2))))


def test_the_embedding_matches_litert_on_real_photos(tflite, shared_data):
    from PIL import Image

    files = sorted((shared_data / "asl_alphabet_test").glob("*.jpg"))[:6]
    if not files:
        pytest.skip("no photos in asl_alphabet_test")
    photos = np.stack([np.asarray(Image.open(f).convert("RGB").resize((224, 224)), np.float32) / 255 for f in files])
    net = hand_net_torch.load(tflite[0])
    ours = _torch(net, photos).numpy()
    assert ours.shape == (len(files), 1152)
    theirs = np.stack([_litert(tflite, p) for p in photos])
    assert np.abs(ours - theirs).max() <= 1e-3
    assert np.abs(theirs).max() > 1.0  # a real, non-degenerate feature, so the bound above means something


def test_a_batch_of_random_inputs_matches_litert_photo_by_photo(tflite):
    photos = np.random.default_rng(0).random((3, 224, 224, 3), dtype=np.float32)
    net = hand_net_torch.load(tflite[0])
    ours = _torch(net, photos).numpy()
    for photo, row in zip(photos, ours):
        assert np.abs(row - _litert(tflite, photo)).max() <= 1e-3
    net.to(memory_format=torch.channels_last)  # the faster CPU layout gives the same embedding
    with torch.no_grad():
        nhwc_memory = torch.from_numpy(photos).permute(0, 3, 1, 2)  # (N, 3, H, W) over channels-last storage
        assert nhwc_memory.is_contiguous(memory_format=torch.channels_last)
        assert np.abs(net(nhwc_memory).numpy() - ours).max() <= 1e-4


def test_the_lite_model_with_its_max_pool_matches_litert_too():
    lite = _interpreter("hand_landmark_lite.tflite")
    photos = np.random.default_rng(2).random((2, 224, 224, 3), dtype=np.float32)
    ours = _torch(hand_net_torch.load(lite[0]), photos).numpy()
    assert ours.shape == (2, 672)
    for photo, row in zip(photos, ours):
        assert np.abs(row - _litert(lite, photo)).max() <= 1e-3


def test_the_heads_match_litert_when_asked_for(tflite):
    photo = np.random.default_rng(1).random((224, 224, 3), dtype=np.float32)
    net = hand_net_torch.load(tflite[0], outputs=HEADS)
    assert net.output_names == list(HEADS)
    ours = [t[0].numpy() for t in _torch(net, photo[None])]
    for name, a, b in zip(HEADS, ours, _litert(tflite, photo, HEADS)):
        assert a.shape == b.shape, name
        assert np.abs(a - b).max() <= 1e-3 * max(1.0, np.abs(b).max()), name  # landmarks are in pixels (0..224)


def test_only_the_ops_up_to_the_embedding_are_kept_and_they_train(tflite):
    net = hand_net_torch.load(tflite[0])
    kinds = [type(m).__name__ for m in net.ops]
    assert "_Linear" not in kinds and len(net.ops) == 57  # 31 conv + 16 depthwise + 9 add + the mean; no heads
    assert all(p.dtype == torch.float32 and p.requires_grad for p in net.parameters())
    net(torch.rand(2, 3, 224, 224)).sum().backward()
    assert net.ops[0].conv.weight.grad is not None and net.ops[0].conv.weight.grad.abs().sum() > 0


def test_same_padding_puts_the_odd_pixel_at_the_bottom_and_right():
    x = torch.ones(1, 1, 224, 224)
    padded = hand_net_torch._same_pad(x, (3, 3), (2, 2), (1, 1))  # TF: 112 outputs need 225 rows: 0 above, 1 below
    assert padded.shape == (1, 1, 225, 225)
    assert padded[0, 0, 0, 0] == 1 and padded[0, 0, -1, -1] == 0
    assert hand_net_torch._same_pad(x, (5, 5), (1, 1), (1, 1)).shape == (1, 1, 228, 228)


def test_a_same_max_pool_never_takes_its_padding():
    pool = hand_net_torch._MaxPool((2, 2), (2, 2), same=True, act=0)  # 5 rows need one more at the bottom
    out = pool(-torch.ones(1, 1, 5, 5))
    assert out.shape == (1, 1, 3, 3) and torch.all(out == -1)


def test_a_file_that_is_not_a_tflite_model_is_one_clear_error(tmp_path):
    pytest.importorskip("ai_edge_litert", reason="ai-edge-litert is not installed")
    bad = tmp_path / "model.tflite"
    bad.write_bytes(b"not a flatbuffer at all, just some bytes")
    with pytest.raises(PipelineError, match="not a TFLite flatbuffer"):
        hand_net_torch.load(bad)
    with pytest.raises(PipelineError, match="cannot read the tflite model"):
        hand_net_torch.load(tmp_path / "missing.tflite")


def test_an_unknown_output_name_is_one_clear_error(tflite):
    with pytest.raises(PipelineError, match="no tensor named 'nope'"):
        hand_net_torch.load(tflite[0], outputs=("nope",))


def test_a_channels_last_input_is_refused(tflite):
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        hand_net_torch.load(tflite[0])(torch.rand(1, 224, 224, 3))
