"""The file names of the artifact contract: what each stage leaves under runs/<run>/<stage>/ (`Workspace.artifact`
joins them to a path). Every module reads and writes these names, so a rename happens here once.
"""

# download
DATASET = "dataset.json"            # image root, classes, counts per class, source
# datablock
SPLITS = "splits.csv"               # path,label,is_valid: the one split every later stage uses
VOCAB = "vocab.json"                # classes and split sizes
CORRUPT = "corrupt.csv"             # images that failed to open, and why
BATCH_PNG = "batch.png"             # a sample batch as the model sees it
CLASS_COUNTS_PNG = "class_counts.png"
LANDMARKS = "landmarks.csv"         # datablock.input = "landmarks" or "hand_crop": hand keypoints per image
NO_HAND = "no_hand.csv"             # datablock.input = "hand_crop": photos with no hand found, not trained on
CACHE = "cache.npy"                 # datablock.cache: every image decoded and resized once
CACHE_META = "cache.json"
HOLDOUT = "holdout.csv"             # datablock.holdout's images (path, label, source, group), scored by evaluate
# datablock for the validation split, evaluate per test set: each photo's nearest training photo (data/leakage.py)
LEAKAGE = "leakage.csv"             # photo, nearest_train, distance, near, label, train_label
LEAKAGE_PNG = "leakage.png"         # the closest pairs
# lr_find
LR_FIND = "lr_find.json"            # the suggestions and the chosen one
LR_FIND_PNG = "lr_find.png"
# train (and evaluate: METRICS, per test set and for the whole stage)
HISTORY = "history.csv"             # one row per epoch
CURVES_PNG = "curves.png"
METRICS = "metrics.json"
CHECKPOINT = "checkpoint.json"      # resume state of an interrupted train, beside CHECKPOINT_WEIGHTS
CHECKPOINT_WEIGHTS = "checkpoint.pth"
BEST_WEIGHTS = "best.pth"           # train.patience: the best epoch's weights so far, beside the checkpoint
# evaluate, per test set folder
PREDICTIONS = "predictions.csv"
TALLIES = "tallies.csv"
SKIPPED = "skipped.csv"
TALLIES_PNG = "tallies.png"
CONFUSION_PNG = "confusion.png"
RELIABILITY_PNG = "reliability.png"
# evaluate per test set, and train for its validation split (models/interpretation.py); PREDICTIONS too in train
CLASS_REPORT = "classification_report.csv"  # per class: precision, recall, F1, support; macro and weighted averages
MOST_CONFUSED = "most_confused.csv"         # true, predicted, count: the wrong pairs, most frequent first
TOP_LOSSES_PNG = "top_losses.png"           # the photos with the highest loss (-ln p of the true class)
INTERPRETATION = (CLASS_REPORT, MOST_CONFUSED, TOP_LOSSES_PNG)
# `python -m pipeline crossval`, under runs/<run>/crossval/
CROSSVAL_MD = "crossval.md"         # the table per held-out group, then mean ± spread
CROSSVAL_CSV = "crossval.csv"
CROSSVAL_LETTERS = "letters.csv"    # per-letter mean over folds
CROSSVAL_PNG = "crossval.png"
CONFLICTS = "conflicts.csv"         # per held-out group and class, the share read as each class (pipeline/conflicts.py)
# every stage folder, and the run folder itself
MANIFEST = "manifest.json"          # fingerprint, outputs with hashes, times: written last
CONFIG = "config.json"              # the resolved config of the last run
REPORT = "report.html"
