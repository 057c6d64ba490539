"""One module per pipeline stage; each exposes `run(cfg, ws, log) -> list of output paths` and, near its top,
`STAGE = StageSpec(...)` (`pipeline/core/stagespec.py`): what it reads, the config entries it uses, what it writes."""
