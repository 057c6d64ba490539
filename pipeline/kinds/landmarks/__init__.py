"""The hand-keypoint kind: `kind.py` (the class), `data.py` (datablock's landmarks.csv), `model.py` (the learner
its export pickles), `graph.py` (its ONNX graph)."""
