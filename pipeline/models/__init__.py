"""The model registry and its families: input kinds (`inputs`), families (`families`), how each builds
and answers (`registry`), each family's module, the fit loop, calibration, the card, ONNX export and
the engines, and `exported.load`, the one loader. It imports `pipeline.core` and `pipeline.data.loaders`."""
