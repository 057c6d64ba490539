"""signpipe: a fastai transfer-learning pipeline for sign-language images."""

__version__ = "0.1.0"
