"""The DVC stages, in pipeline order: ingest -> preprocess -> train -> evaluate.

Each module is one stage: a pure ``main(params, paths)`` and, under ``__main__``, the shared command
line (:mod:`pipeline.core.stage_cli`); ``dvc.yaml`` runs ``python -m pipeline.stages.<stage>``.

Python imports this package before the stage's module, whose imports (TensorFlow) take seconds: a
Ctrl-C or SIGTERM meanwhile ends the stage in one line with the restore hint, not a traceback
(:mod:`pipeline.core.stage_signals`, shared code that every stage depends on in ``dvc.yaml``).
"""

from pipeline.core import stage_signals

stage_signals.stop_quietly_while_starting()
