"""The models' machinery every kind builds on: backbones, the fit loop and checkpoints, calibration, interpretation, the
model card, ONNX export and the two engines (`exported.open_engine`). It imports `pipeline.core` and `pipeline.data`;
the model kinds (`pipeline.kinds`) sit above it."""
