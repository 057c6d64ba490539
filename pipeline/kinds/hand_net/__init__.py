"""The hand-network kind: `kind.py` (`HandNet`; `HandNetLate`, its late-fusion model), `data.py` (MediaPipe's hand
network read with LiteRT, its crop and embedding store), `model.py` (the classes its exports pickle), `graph.py`
(its ONNX graph), `network.py` (the hand network rebuilt in torch, which the graph runs)."""
