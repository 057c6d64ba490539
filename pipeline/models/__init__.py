"""The models: one class per kind of model (`kinds`: what it reads, how datablock prepares it, how it builds and
answers), the modules of the classes each kind's export pickles, the fit loop, calibration, the card, ONNX export
and the engines, and `exported.load`, the one loader. It imports `pipeline.core` and `pipeline.data`."""
