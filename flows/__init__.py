"""Prefect orchestration of the DVC pipeline: flows whose tasks each reproduce one DVC stage.

``pipeline_flow`` defines the pipeline flow and ``sweep_flow`` the sweep of isolated trials on Dask;
``workspace`` makes the workspace a run happens in (the locked checkout, or an isolated clone) and
records and pushes its result; ``stage`` runs one DVC stage; ``python -m flows`` runs a flow on
demand or serves it on a cron. No stage logic lives here.
"""
