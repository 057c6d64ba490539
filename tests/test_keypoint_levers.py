"""bench/keypoint_levers.py's embedding-only model (`--emb-only`): it reads the hand network's embedding and nothing
of the keypoint features beside it."""
import torch

from bench import keypoint_levers
from pipeline.data import hand_net, hands


def test_the_embedding_only_model_reads_the_embedding_and_not_the_keypoints():
    torch.manual_seed(0)
    model = keypoint_levers._embedding_net(5, [16], 0.0).eval()
    x = torch.randn(4, len(hands.FEATURES) + hand_net.N_EMB)
    no_cats = torch.zeros(4, 0, dtype=torch.long)
    out = model(no_cats, x)
    assert out.shape == (4, 5)
    other_keypoints = x.clone()
    other_keypoints[:, :len(hands.FEATURES)] = torch.randn(4, len(hands.FEATURES))
    assert torch.equal(model(no_cats, other_keypoints), out)
    other_embedding = x.clone()
    other_embedding[:, len(hands.FEATURES):] = torch.randn(4, hand_net.N_EMB)
    assert not torch.allclose(model(no_cats, other_embedding), out)


def test_the_mirrored_view_is_the_flipped_crop_embedded_once_then_read_from_its_cache(tmp_path, monkeypatch):
    import numpy as np

    crop = np.zeros((hand_net.SIZE, hand_net.SIZE, 3), np.float32)
    crop[:, -10:] = 1.0  # bright on the right: its mirror image is bright on the left
    calls = []

    def fake_network(x):  # an "embedding": the mean brightness of the crop's left half, repeated
        calls.append(1)
        return np.full(hand_net.N_EMB, x[:, :hand_net.SIZE // 2].mean(), np.float32)

    monkeypatch.setattr(hand_net, "network", lambda: fake_network)
    monkeypatch.setattr(hand_net, "crop", lambda path, raw: crop.copy())
    paths, raws = ["a.jpg", "b.jpg", "c.jpg"], [[1, "Left"], [0, ""], [1, "Right"]]
    out = keypoint_levers._flipped(paths, raws, tmp_path)
    assert len(calls) == 2 and out.shape == (3, hand_net.N_EMB)
    assert np.all(out[[0, 2]] > 0) and np.all(out[1] == 0)  # the crop flipped; none for the photo with no hand
    crop[:] = 0.0
    assert np.array_equal(keypoint_levers._flipped(paths, raws, tmp_path), out) and len(calls) == 2  # the cache
    assert np.all(keypoint_levers._flipped(paths[:1], raws[:1], tmp_path) == 0) and len(calls) == 3  # other photos
