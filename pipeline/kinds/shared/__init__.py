"""What several model kinds share: `data.py` (the crop geometry and PNG helpers), `model.py` (the keypoint MLP's pieces and
`SettleBatchNorm`), `graph.py` (the image graph and the keypoint-rows input). A kind's own code is its own package."""
