"""The hand-crop kind: `kind.py` (the class), `data.py` (the crop rule, its store and datablock's crops), `model.py`
(`CropReader`, which its export pickles). Its graph is `shared.graph`'s image graph."""
