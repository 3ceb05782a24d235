"""The model code: families (dense, cnn), model files (``.h5``, ``.keras``), training, inference.

Everything that needs TensorFlow lives here, so a stage or command that never imports this package
never loads it. Importing it loads TensorFlow quietly: its C++ log keeps to fatal errors
(``TF_CPP_MIN_LOG_LEVEL=0`` shows the rest) and the notices its libraries print while loading go.
"""

import os

from pipeline.core import logs

# TensorFlow turns its oneDNN kernels on by itself only on CPUs with VNNI, bfloat16 or AMX instructions;
# on an AVX2 CPU (an AMD EPYC, Zen 3) they make a CNN training step 1.18x as fast, as deterministic
# (bench/models.py --only kernels). Read at TensorFlow's import; TF_ENABLE_ONEDNN_OPTS=0 keeps its own.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault(logs.TF_LOG_LEVEL_ENV, "3")
with logs.native_start_up_lines_dropped():
    import keras  # noqa: F401
