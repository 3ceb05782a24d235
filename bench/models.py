"""Accuracy against training time of the model presets on this machine (the frontier a user picks
from): the dense defaults, ``presets/cnn-fast.yaml`` and ``presets/cnn.yaml``, each over ``--seeds``
seeds (3; the configuration's ``train.seed`` and the ones after it, as ``python -m flows seeds``),
plus the CNN's speed in float32 against ``mixed_bfloat16``, and with TensorFlow's oneDNN kernels
against its own (``TF_ENABLE_ONEDNN_OPTS``).

Real data, whole ``python -m pipeline train`` and ``evaluate`` processes in a scratch copy of this
project, one after another (no run shares the cores), each preset applied as the flow applies
``--params``: only the keys the file holds. Prints a Markdown table: test accuracy's mean ± sd and
range over the seeds, the train stage's mean minutes (the whole stage process), seconds per epoch
(the median of the train stage's own epoch log lines); ``--plot FILE`` draws it. The precision
comparison runs both models in one process, alternating short bursts of training steps, so that
the machine's slow and fast spells (epochs of the same run vary 2x here) fall on both alike. The
kernels are chosen when TensorFlow is imported, so that comparison alternates whole processes.

    python bench/models.py                 # about 35 minutes on 2 CPU cores
    python bench/models.py --only frontier --plot docs/frontier.png   # the presets only
    python bench/models.py --only cnn-fast --seeds 1
    python bench/models.py --only precision
    python bench/models.py --only kernels
    python bench/models.py --smoke         # every table on tiny synthetic data: does it run?

``--smoke`` (tests/test_bench.py) takes the same steps on 300 synthetic images, each preset shrunk
(1 epoch, a 16-unit dense layer, an eighth of the CNN's filters, a 16-unit head), one seed, one
round of each speed comparison; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from scratch import REPO_ROOT, bench_project

sys.path.insert(0, str(REPO_ROOT))
from pipeline.core.params import leaf_values, load_params, read_raw_params, validate_params  # noqa: E402

EPOCH_LINE = re.compile(r"epoch (\d+)/\d+: .* \| ([0-9.]+) s$", re.MULTILINE)
PRESETS = {
    "dense (params.yaml defaults)": None,
    "cnn-fast": REPO_ROOT / "presets/cnn-fast.yaml",
    "cnn": REPO_ROOT / "presets/cnn.yaml",
}
PRECISION_ROUNDS, PRECISION_STEPS = 12, 40
KERNEL_ROUNDS, KERNEL_BURSTS = 3, 4
KERNELS = {"TensorFlow's own": "0", "oneDNN (our default)": "1"}  # TF_ENABLE_ONEDNN_OPTS


@dataclass(frozen=True)
class Result:
    test_accuracy: float
    train_s: float
    epoch_s: float
    epochs: int


def train_and_evaluate(project: Path, overrides: dict) -> Result:
    """Apply ``overrides`` to the scratch project's params; preprocess, train and evaluate; the numbers."""
    raw = read_raw_params(REPO_ROOT / "params.yaml", overrides)
    validate_params(raw)  # a bad preset fails here, before any work
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    preprocess = [sys.executable, "-m", "pipeline", "preprocess"]
    subprocess.run(preprocess, cwd=project, capture_output=True, check=True)
    start = time.perf_counter()
    trained = subprocess.run(
        [sys.executable, "-m", "pipeline", "train"], cwd=project, capture_output=True, text=True, check=True
    )
    train_s = time.perf_counter() - start
    evaluate = [sys.executable, "-m", "pipeline", "evaluate"]
    subprocess.run(evaluate, cwd=project, capture_output=True, check=True)
    metrics = json.loads((project / "reports/evaluate/metrics.json").read_text())
    epochs = [float(seconds) for _, seconds in EPOCH_LINE.findall(trained.stderr)]
    return Result(metrics["test"]["accuracy"], train_s, statistics.median(epochs[1:] or epochs), len(epochs))


def smoke_overrides(overrides: dict) -> dict:
    """``overrides`` (a preset's) shrunk for ``--smoke``: 1 epoch, a 16-unit dense layer, an eighth
    of the CNN's filters (as many blocks), a 16-unit head."""
    cnn = load_params(REPO_ROOT / "params.yaml", overrides).train.model.cnn
    return overrides | {
        "train.epochs": 1,
        "train.model.dense.hidden_units": [16],
        "train.model.cnn.filters": [max(2, filters // 8) for filters in cnn.filters],
        "train.model.cnn.dense_units": 16,
    }


def seconds_per_step(
    project: Path,
    overrides: dict,
    precisions: tuple[str, ...] = ("float32", "mixed_bfloat16"),
    rounds: int = PRECISION_ROUNDS,
) -> dict[str, float]:
    """Median seconds per training step of the preset's CNN in each precision, interleaved."""
    from pipeline.core.splits import load_split
    from pipeline.model import families as models
    from pipeline.model import training  # only this comparison imports TensorFlow here

    params = load_params(REPO_ROOT / "params.yaml", overrides).train
    training.seed_everything(params.seed)
    data = load_split(project / "data/processed/train.npz")
    count = params.batch_size * PRECISION_STEPS
    x, y = data.x[:count], data.y[:count]
    steps = math.ceil(len(x) / params.batch_size)  # PRECISION_STEPS, or fewer on tiny data
    compiled = {}
    for precision in precisions:
        family = params.model.cnn.model_copy(update={"precision": precision})
        model = models.make_cnn(x.shape[1:], 10, family)
        model.compile(  # as the train stage compiles it
            optimizer=training.make_optimizer(params.optimizer, params.learning_rate),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
            steps_per_execution=family.steps_per_execution,
        )
        model.fit(x, y, batch_size=params.batch_size, verbose=0)  # compile and warm up
        compiled[precision] = model
    times: dict[str, list[float]] = {precision: [] for precision in compiled}
    for _ in range(rounds):
        for precision, model in compiled.items():
            start = time.perf_counter()
            model.fit(x, y, batch_size=params.batch_size, verbose=0, shuffle=False)
            times[precision].append((time.perf_counter() - start) / steps)
    return {precision: statistics.median(values) for precision, values in times.items()}


def seconds_per_step_by_kernels(
    project: Path, overrides: dict, rounds: int = KERNEL_ROUNDS, bursts: int = KERNEL_BURSTS
) -> dict[str, float]:
    """Median seconds per float32 training step with each of TensorFlow's CPU kernel sets, whole
    processes alternating."""
    measure = (
        "import json, sys; from pathlib import Path; from models import seconds_per_step; "
        "project, overrides = Path(sys.argv[1]), json.loads(sys.argv[2]); "
        f"print(json.dumps(seconds_per_step(project, overrides, ('float32',), {bursts})))"
    )
    times: dict[str, list[float]] = {name: [] for name in KERNELS}
    for _ in range(rounds):
        for name, setting in KERNELS.items():
            done = subprocess.run(
                [sys.executable, "-c", measure, str(project), json.dumps(overrides)],
                cwd=Path(__file__).parent,
                env={**os.environ, "TF_ENABLE_ONEDNN_OPTS": setting, "TF_CPP_MIN_LOG_LEVEL": "3"},
                capture_output=True,
                text=True,
                check=True,
            )
            times[name].append(json.loads(done.stdout.splitlines()[-1])["float32"])
    return {name: statistics.median(values) for name, values in times.items()}


def print_speeds(title: str, seconds: dict[str, float]) -> None:
    """A Markdown table of seconds per step, each against the first row."""
    base, first = next(iter(seconds.items()))
    print(f"\n| {title} | per training step | speed |")
    print("|---|---:|---:|")
    for name, value in seconds.items():
        print(f"| {name} | {1000 * value:.1f} ms | {first / value:.2f}x {base} |")


def preset_overrides(path: Path | None) -> dict:
    return {} if path is None else leaf_values(read_raw_params(path), source=str(path))


@dataclass(frozen=True)
class Point:
    """One preset over its seeds: the frontier's point."""

    name: str
    command: str
    results: list[Result]

    def accuracies(self) -> list[float]:
        return [result.test_accuracy for result in self.results]

    @property
    def minutes(self) -> float:
        return statistics.mean(result.train_s for result in self.results) / 60


def frontier(project: Path, only: str | None, seeds: int, smoke: bool = False) -> list[Point]:
    """Each preset (or the one ``only`` names) trained and evaluated over ``seeds`` seeds."""
    points = []
    for name, path in PRESETS.items():
        if only not in (None, "frontier", name.split()[0]):
            continue
        overrides = preset_overrides(path)
        if smoke:
            overrides = smoke_overrides(overrides)
        first = load_params(REPO_ROOT / "params.yaml", overrides).train.seed
        results = [
            train_and_evaluate(project, overrides | {"train.seed": seed})
            for seed in range(first, first + seeds)
        ]
        source = "" if path is None else f" --params {path.relative_to(REPO_ROOT)}"
        points.append(Point(name, f"python -m flows seeds{source}", results))
    return points


def print_frontier(points: list[Point], seeds: int) -> None:
    print()
    print(
        f"| model | test accuracy, {seeds} seeds: mean ± sd (min-max) | train stage | per epoch | epochs "
        "| group |"
    )
    print("|---|---:|---:|---:|---:|---|")
    for point in points:
        values = point.accuracies()
        spread = (
            f" ± {statistics.stdev(values):.4f} ({min(values):.4f}-{max(values):.4f})"
            if len(values) > 1
            else ""
        )
        epoch_s = statistics.median(result.epoch_s for result in point.results)
        print(
            f"| {point.name} | {statistics.mean(values):.4f}{spread} | {point.minutes:.1f} min "
            f"| {epoch_s:.1f} s | {point.results[0].epochs} | `{point.command}` |"
        )
    print(
        f"\npython bench/models.py --seeds {seeds}; train stage: the mean over the seeds; per epoch: the "
        "median of the stage's epoch log lines after the first"
    )


def plot_frontier(points: list[Point], path: Path) -> None:
    """Test accuracy (mean, min-max bars) against the train stage's minutes, one point per preset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.5, 4))
    for point in points:
        values = point.accuracies()
        mean = statistics.mean(values)
        axes.errorbar(
            point.minutes, mean, yerr=[[mean - min(values)], [max(values) - mean]], fmt="o", capsize=4
        )
        axes.annotate(
            point.name.split()[0], (point.minutes, mean), textcoords="offset points", xytext=(6, -12)
        )
    axes.set_xscale("log")
    axes.set_xlim(min(point.minutes for point in points) / 1.5, max(point.minutes for point in points) * 1.8)
    ticks = [
        tick for tick in (0.25, 0.5, 1, 2, 5, 10, 20, 50) if axes.get_xlim()[0] <= tick <= axes.get_xlim()[1]
    ]
    axes.set_xticks(ticks, [f"{tick:g}" for tick in ticks])
    axes.minorticks_off()
    axes.set_xlabel("train stage, minutes (log scale)")
    axes.set_ylabel(f"test accuracy (mean, min-max of {len(points[0].results)} seeds)")
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--only",
        choices=[*(name.split()[0] for name in PRESETS), "frontier", "precision", "kernels"],
        help="one preset, the presets only (frontier), or one speed table",
    )
    parser.add_argument("--seeds", type=int, default=3, help="seeds per preset (default: 3)")
    parser.add_argument("--plot", type=Path, help="draw the frontier into this PNG")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="every table on tiny synthetic data, one seed, one round (seconds)",
    )
    args = parser.parse_args()
    seeds = 1 if args.smoke else args.seeds
    cnn = preset_overrides(PRESETS["cnn"])
    precision_rounds, kernel_rounds, kernel_bursts = PRECISION_ROUNDS, KERNEL_ROUNDS, KERNEL_BURSTS
    if args.smoke:
        cnn = smoke_overrides(cnn)
        precision_rounds = kernel_rounds = kernel_bursts = 1
    with tempfile.TemporaryDirectory(prefix="fashion-bench-models-") as directory:
        project = bench_project(Path(directory) / "project", smoke=args.smoke)
        for command in (["ingest"], ["preprocess"]):  # preprocess again per preset: it may set its keys
            subprocess.run([sys.executable, "-m", "pipeline", *command], cwd=project, check=True)
        points = (
            [] if args.only in ("precision", "kernels") else frontier(project, args.only, seeds, args.smoke)
        )
        step = kernels = None
        if args.only in (None, "precision"):
            step = seconds_per_step(project, cnn, rounds=precision_rounds)
        if args.only in (None, "kernels"):
            kernels = seconds_per_step_by_kernels(project, cnn, kernel_rounds, kernel_bursts)
    if points:
        print_frontier(points, seeds)
        if args.plot:
            plot_frontier(points, args.plot)
    if step:
        print_speeds(f"precision (cnn preset, {precision_rounds} alternating bursts)", step)
    if kernels:
        print_speeds(f"CPU kernels (cnn preset, float32, {kernel_rounds} alternating processes)", kernels)
    if args.smoke:
        print("\n--smoke: tiny synthetic data and shrunk presets; the numbers mean nothing")
    return 0


if __name__ == "__main__":
    sys.exit(main())
