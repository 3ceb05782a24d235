"""Prefect orchestration of the DVC pipeline: flows whose tasks each reproduce one DVC stage.

One job per module, read top-down: ``cli`` (``python -m flows``) checks the params, then ``api``
finds or starts the Prefect API; ``pipeline_flow`` is the flow and the order of its stages;
``workspace`` is the run's git and DVC repository (made from git, recorded, pushed, applied);
``stage`` runs one DVC stage; ``sweep_flow`` runs trials on a Dask cluster and cancels them
(``probe`` checks a worker first), ``seeds_flow`` is one configuration over seeds; ``reports`` makes
the Prefect artifacts; ``params_update`` writes a workspace's params. No stage logic lives here.

A temporary Prefect server started for this package's flows (no ``PREFECT_API_URL``) sends no
telemetry: offline it would only log ``Failed to send telemetry`` errors. A server of your own keeps
its own ``PREFECT_SERVER_ANALYTICS_ENABLED`` setting.
"""

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # read when Prefect is imported
