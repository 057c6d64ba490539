"""Data in: sources and fetchers, archives, datasets and their labels, splits, the per-image content stores
(pixel cache, hand keypoints, hand crops) and the split to fastai DataLoaders (`loaders`).
It imports `pipeline.core` only."""
