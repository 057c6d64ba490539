"""The fused hand-crop kind: `kind.py` (the class), `model.py` (the classes its export pickles), `embeddings.py`
(the frozen backbone's embeddings and their store), `graph.py` (its ONNX graph). Its data is `hand_crop.data`."""
