"""The failures a user can fix: the CLI prints their message on one line instead of a traceback."""


class PipelineError(Exception):
    """Bad input, params or sources; the message names the file or key and the fix."""
