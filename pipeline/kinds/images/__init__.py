"""The image kinds: `kind.py` (`Images`, a pretrained backbone; `Baseline`, a from-scratch network), `data.py`
(datablock's batch.png and pixel cache), `model.py` (the baselines' networks). Their graph is `shared.graph`'s."""
