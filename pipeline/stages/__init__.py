"""The DVC stages, in pipeline order: ingest -> preprocess -> train -> evaluate.

Each module is one stage: a pure ``main(params, paths)`` and, under ``__main__``, the shared command
line (:mod:`pipeline.core.stage_cli`); ``dvc.yaml`` runs ``python -m pipeline.stages.<stage>``.
"""
