"""The commands around the pipeline, each with its own command line, none a DVC stage:
``predict``, ``serve``, ``report``, ``plots``, ``restore``, ``validate``, ``params-doc``
(``python -m pipeline <command> --help``). Editing one reruns no stage."""

from pipeline.core.stage_cli import guarded as run_command  # the stages' guard: one-line errors

__all__ = ["run_command"]
