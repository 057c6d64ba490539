"""Answering people: the Gradio app (`app`), its live section (`live`) and the letters-to-text rules
(`spelling`). It imports the layers below it, never the commands at the top."""
