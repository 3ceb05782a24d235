"""Fashion-MNIST pipeline: four stages (ingest, preprocess, train, evaluate) run by DVC or Prefect."""

import os

# TensorFlow turns its oneDNN kernels on by itself only on CPUs with VNNI, bfloat16 or AMX instructions;
# on an AVX2 CPU (an AMD EPYC, Zen 3) they make a CNN training step 1.18x as fast, as deterministic
# (bench/models.py --only kernels). Read at TensorFlow's import; TF_ENABLE_ONEDNN_OPTS=0 keeps its own.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
