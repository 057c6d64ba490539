"""research/keypoint_levers.py's embedding-only model (`--emb-only`): it reads the hand network's embedding and nothing
of the keypoint features beside it."""
import torch

from research import keypoint_levers
from pipeline.data import hands
from pipeline.kinds.hand_net import data as hand_net


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
    monkeypatch.setattr(hand_net, "crop", lambda path, det: crop.copy())
    paths, dets = ["a.jpg", "b.jpg", "c.jpg"], [[1, "Left"], [0, ""], [1, "Right"]]
    out = keypoint_levers._flipped(paths, dets, tmp_path)
    assert len(calls) == 2 and out.shape == (3, hand_net.N_EMB)
    assert np.all(out[[0, 2]] > 0) and np.all(out[1] == 0)  # the crop flipped; none for the photo with no hand
    crop[:] = 0.0
    assert np.array_equal(keypoint_levers._flipped(paths, dets, tmp_path), out) and len(calls) == 2  # the cache
    assert np.all(keypoint_levers._flipped(paths[:1], dets[:1], tmp_path) == 0) and len(calls) == 3  # other photos


def test_a_fold_trains_the_configs_recipe_with_the_pipelines_network(monkeypatch):
    """The bench re-implemented the recipe with its own hyperparameters (issue 34 §5): a fold now builds the model
    `landmark_model.network` builds for `cfg.train`'s features and dropout, and jitters by the config's `landmark_rotate`, `batch_size` rows a
    step, `epochs` times over."""
    import argparse
    import dataclasses

    import numpy as np

    from pipeline.config import TrainCfg
    from pipeline.kinds.landmarks import model as landmark_model

    t = dataclasses.replace(TrainCfg(), arch="landmark_mlp", base_lr=1e-3, epochs=2, batch_size=8,
                            landmark_rotate=7.0, landmark_features="coords+shape", head_dropout=0.0)
    built, jittered = [], []
    network, jitter = landmark_model.network, keypoint_levers._jitter
    monkeypatch.setattr(landmark_model, "network", lambda n, shape, ps: built.append((n, shape, ps)) or network(n, shape, ps))
    monkeypatch.setattr(keypoint_levers, "_jitter", lambda x, turn, deg: jittered.append((len(x), deg)) or jitter(x, turn, deg))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, len(hands.FEATURES))).astype(np.float32)
    x[:, -1] = 1.0
    y = np.arange(40) % 3
    train = np.arange(40) < 32
    a = argparse.Namespace(emb_only=False, hand_net=False, turn=0.0, emb_drop=0.0, tta="")
    probs = keypoint_levers._fold(x, y, train, ~train, 3, a, 0, t)
    assert built == [(3, True, 0.0)]
    assert jittered == [(8, 7.0)] * (2 * 32 // 8)  # epochs x steps of batch_size rows
    assert probs.shape == (8, 3) and np.allclose(probs.sum(1), 1, atol=1e-5)
