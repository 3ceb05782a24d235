"""Prefect orchestration of the DVC pipeline: one flow whose four tasks each reproduce one DVC stage.

``flows.pipeline_flow`` holds the flow; ``python -m flows`` runs it on demand or serves it on a cron.
No stage logic lives here: the tasks run ``dvc repro`` on the stages of ``dvc.yaml``.
"""
