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
