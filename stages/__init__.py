"""One module per pipeline stage; each exposes `run(cfg, ws, log) -> list of output paths`."""
