"""Prefect orchestration of the DVC pipeline: flows whose tasks each reproduce one DVC stage.

``pipeline_flow`` defines the pipeline flow and ``sweep_flow`` the sweep of trials on Dask;
``workspace`` makes the workspace every run happens in (a clone made from git) and records and
pushes its result; ``stage`` runs one DVC stage; ``probe`` checks a Dask worker before trials go
there; ``python -m flows`` runs a flow on demand or serves it on a cron. No stage logic lives here.

A temporary Prefect server started for this package's flows (no ``PREFECT_API_URL``) sends no
telemetry: offline it would only log ``Failed to send telemetry`` errors. A server of your own keeps
its own ``PREFECT_SERVER_ANALYTICS_ENABLED`` setting.
"""

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # read when Prefect is imported
