"""The run's machinery, below every other layer: errors, artifact names, paths and atomic writes, what a stage
declares, fingerprints, the staged commit, the run lock, progress lines, machine and torchrun facts.
It imports no other subpackage of `pipeline`."""
