# The worker image: Prefect (process, Docker or Kubernetes work pools) and Dask workers that run the
# pipeline's flows away from any checkout. The project is installed non-editable, so nothing points
# into a folder the worker does not have; git is for the workspaces each run clones.
#   docker build -t fashion-pipeline-worker .
#   docker run --rm -e PREFECT_API_URL=http://prefect:4200/api fashion-pipeline-worker \
#       prefect worker start --pool fashion-pipeline
#   docker run --rm -e PREFECT_API_URL=... fashion-pipeline-worker dask worker tcp://scheduler:8786
# docs/operations.md lists what a worker needs besides the image (git access, DVC remote credentials).
FROM python:3.11-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/*

# A user of its own: workspaces and the DVC cache they share go to its home (~/.cache/fashion-pipeline).
RUN useradd --create-home --uid 1000 worker
WORKDIR /opt/fashion-pipeline
COPY requirements/runtime.lock ./requirements/
# The versions CI tested, as `bash scripts/install.sh` installs them.
RUN pip install --no-cache-dir --disable-pip-version-check -r requirements/runtime.lock
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY flows ./flows
RUN pip install --no-cache-dir --disable-pip-version-check --no-deps . && rm -rf build *.egg-info

USER worker
WORKDIR /home/worker
ENV PYTHONUNBUFFERED=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    DVC_NO_ANALYTICS=1
CMD ["prefect", "worker", "start", "--pool", "fashion-pipeline"]
