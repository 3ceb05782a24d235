"""Fashion-MNIST pipeline: four stages (ingest, preprocess, train, evaluate) run by DVC or Prefect."""

import os

# TensorFlow turns its oneDNN kernels on by itself only on CPUs with AVX-512 VNNI or newer; on an
# AVX2 CPU (AMD EPYC Zen 3 here) they train the CNN presets 1.7x faster, deterministic as before
# (bench/speed.py). Read at TensorFlow's import; TF_ENABLE_ONEDNN_OPTS=0 keeps TensorFlow's own kernels.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
