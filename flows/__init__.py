"""Prefect orchestration of the DVC pipeline: one flow whose tasks each reproduce one DVC stage.

``pipeline_flow`` defines the flow; ``workspace`` makes the workspace a run happens in (the locked
checkout, or an isolated clone) and records and pushes its result; ``stage`` runs one DVC stage;
``python -m flows`` runs the flow on demand or serves it on a cron. No stage logic lives here.
"""
