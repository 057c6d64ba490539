"""The one exception type the CLI turns into a single clear line."""


class PipelineError(Exception):
    """A user-facing error: the message says what went wrong and what to do next.

    The CLI prints `error: <message>` and exits non-zero; `--debug` shows the traceback.
    """
