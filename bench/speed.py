"""How fast the pipeline is, against the tutorial's own code and against the targets of issue 14.

Real data (the Debian ``dataset-fashion-mnist`` package or a reachable mirror), whole processes, in
a scratch copy of this project whose default pipeline has run once. Run it on an idle machine: the
numbers are wall times. Prints one Markdown table: each measurement, our time, the reference time,
the ratio, and the command that reproduces it.

- **train**: ``dvc repro -f -s train`` against ``bench/tutorial_way.py`` (the tutorial's code, not
  tuned: float64 arrays straight into ``model.fit``, default compile options, same seed and
  deterministic ops), median of alternating pairs; the model file's SHA-256 after each of our runs
  shows determinism; the cost of deterministic ops is one train run without them.
- **quality**: the best epoch's val accuracy of both over 3 seeds (the same seed does not give the
  same initial weights: the tutorial creates its layers in another order); the project's own seed
  is the last train runs' (deterministic: a rerun would give the same number).
- **preprocess** and **evaluate**: each stage's command, with its peak memory.
- **no-op reruns**: ``dvc repro`` with nothing to do, against the 0.7 s target; ``python -m flows
  run`` with nothing to do against a trivial one-task flow on the same running Prefect server
  (target: within 1.5 s), and with a temporary server of its own.

    python bench/speed.py              # about 9 minutes on 2 CPU cores
    python bench/speed.py --pairs 1    # one pair of train runs: a quick look
    python bench/speed.py --smoke      # every measurement once, on tiny synthetic data: does it run?

``--smoke`` (tests/test_bench.py) takes the same steps on 300 synthetic images, 2 epochs on both
sides, one pair, one seed, each no-op rerun once without a warm-up; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from scratch import REPO_ROOT, bench_project, commit, prefect_server

SEEDS = (42, 1, 2)
SMOKE_EPOCHS = 2  # --smoke: of our train stage and of the tutorial's code alike
TRIVIAL_FLOW = """
from prefect import flow, task

@task
def one() -> int:
    return 1

@flow
def trivial() -> int:
    return one()

trivial()
"""
WITHOUT_OP_DETERMINISM = (
    "import tensorflow as tf; tf.config.experimental.enable_op_determinism = lambda: None; "
    "from pipeline.__main__ import main; raise SystemExit(main(['train']))"
)


@dataclass(frozen=True)
class Timed:
    seconds: float
    peak_mib: float
    stdout: str


@dataclass(frozen=True)
class Quality:
    """Best-epoch val accuracy of one seed: our train stage's and the tutorial code's."""

    ours: float
    tutorial: float


@dataclass(frozen=True)
class Row:
    measurement: str
    ours: str
    reference: str
    ratio: str
    command: str


def timed(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> Timed:
    """Wall time and peak resident memory of ``command``, which must succeed."""
    with tempfile.TemporaryFile() as stderr:
        start = time.perf_counter()
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True
        )
        stdout = process.stdout.read() if process.stdout else ""
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode:
            stderr.seek(0)
            tail = stderr.read().decode(errors="replace")[-3000:]
            raise RuntimeError(f"{' '.join(command)} failed with exit code {process.returncode}:\n{tail}")
    return Timed(seconds, usage.ru_maxrss / 1024, stdout)


def median_of(command: list[str], cwd: Path, times: int, env: dict[str, str] | None = None) -> float:
    return statistics.median(timed(command, cwd, env).seconds for _ in range(times))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def prepared_project(directory: Path, smoke: bool) -> Path:
    """A scratch project whose default pipeline has run once and is committed."""
    project = bench_project(
        directory, smoke=smoke, overrides={"train.epochs": SMOKE_EPOCHS} if smoke else None
    )
    subprocess.run([sys.executable, "-m", "dvc", "repro", "--quiet"], cwd=project, check=True)
    commit(project, "a run of the default pipeline")
    return project


def tutorial_way(smoke: bool) -> list[str]:
    """The command of the reference, the tutorial's code (2 epochs in a smoke run)."""
    command = [sys.executable, str(REPO_ROOT / "bench/tutorial_way.py"), "data/raw"]
    return command + (["--epochs", str(SMOKE_EPOCHS)] if smoke else [])


def best_val_accuracy(project: Path) -> float:
    """The kept (best) epoch's val accuracy of the train stage's last run in ``project``."""
    return json.loads((project / "reports/train/metrics.json").read_text())["val"]["accuracy"]


def tutorial_val_accuracy(run: Timed) -> float:
    return json.loads(run.stdout.strip().splitlines()[-1])["val_accuracy"]


def train_rows(project: Path, pairs: int, smoke: bool) -> tuple[list[Row], Quality]:
    """The speed rows, and both sides' val accuracy at the project's seed (the runs made them)."""
    dvc_train = [sys.executable, "-m", "dvc", "repro", "-f", "-s", "train"]
    seed = yaml.safe_load((project / "params.yaml").read_text())["train"]["seed"]
    tutorial = [*tutorial_way(smoke), "--model", str(project.parent / "tutorial-best-model.h5")]
    tutorial += ["--seed", str(seed)]  # the project's: its quality is the quality row's at that seed
    ours, theirs, models = [], [], set()
    for _ in range(pairs):
        ours.append(timed(dvc_train, project).seconds)
        models.add(sha256(project / "models/best-model.h5"))
        reference = timed(tutorial, project)
        theirs.append(reference.seconds)
    nondeterministic = timed([sys.executable, "-c", WITHOUT_OP_DETERMINISM], project).seconds
    deterministic = timed([sys.executable, "-m", "pipeline", "train"], project).seconds
    models.add(sha256(project / "models/best-model.h5"))
    quality = Quality(best_val_accuracy(project), tutorial_val_accuracy(reference))
    ours_s, theirs_s = statistics.median(ours), statistics.median(theirs)
    return [
        Row(
            f"train stage, default params (median of {pairs} alternating pairs)",
            f"{ours_s:.1f} s",
            f"{theirs_s:.1f} s (tutorial's code)",
            f"{theirs_s / ours_s:.2f}x faster",
            "dvc repro -f -s train vs python bench/tutorial_way.py data/raw",
        ),
        Row(
            f"determinism: best-model.h5 of {pairs + 1} runs",
            f"{len(models)} distinct file(s)",
            "1",
            "identical" if len(models) == 1 else "DIFFERENT",
            "sha256sum models/best-model.h5",
        ),
        Row(
            "cost of deterministic ops (train command, one run each)",
            f"{deterministic:.1f} s",
            f"{nondeterministic:.1f} s without",
            f"{deterministic / nondeterministic:.2f}x the time",
            "python -m pipeline train",
        ),
    ], quality


def quality_row(project: Path, seeds: tuple[int, ...], smoke: bool, known: Quality) -> Row:
    """Best-epoch val accuracy of ours and the tutorial's code, per seed (``known``: both at the
    project's own seed, which the train rows ran); leaves the last seed's model."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    own_seed = params["train"]["seed"]
    ours, theirs = [], []
    for seed in seeds:
        if seed == own_seed:
            ours.append(known.ours)
            theirs.append(known.tutorial)
            continue
        params["train"]["seed"] = seed
        seeded = project.parent / f"params-seed-{seed}.yaml"
        seeded.write_text(yaml.safe_dump(params, sort_keys=False))
        timed([sys.executable, "-m", "pipeline", "train", "--params", str(seeded)], project)
        ours.append(best_val_accuracy(project))
        theirs.append(tutorial_val_accuracy(timed([*tutorial_way(smoke), "--seed", str(seed)], project)))
    difference = 100 * (statistics.mean(ours) - statistics.mean(theirs))
    return Row(
        f"model quality: best-epoch val accuracy, mean of seeds {', '.join(map(str, seeds))}",
        f"{statistics.mean(ours):.4f} ({' '.join(f'{a:.4f}' for a in ours)})",
        f"{statistics.mean(theirs):.4f} ({' '.join(f'{a:.4f}' for a in theirs)})",
        f"{difference:+.2f} pp ({'ok' if abs(difference) <= 0.2 else 'OVER'}: target 0.2 pp)",
        "python -m pipeline train --params <seed N> vs python bench/tutorial_way.py data/raw --seed N",
    )


def stage_rows(project: Path) -> list[Row]:
    preprocess = timed([sys.executable, "-m", "pipeline", "preprocess"], project)
    evaluate = timed([sys.executable, "-m", "pipeline", "evaluate"], project)
    processed = sum(path.stat().st_size for path in (project / "data/processed").iterdir())
    return [
        Row(
            "preprocess stage",
            f"{preprocess.seconds:.1f} s, peak {preprocess.peak_mib:.0f} MiB",
            "peak under 1024 MiB",
            "ok" if preprocess.peak_mib < 1024 else "OVER",
            "python -m pipeline preprocess",
        ),
        Row(
            "data/processed on disk and in the cache (uint8)",
            f"{processed / 2**20:.0f} MiB",
            f"{(processed * 4) / 2**20:.0f} MiB as float32",
            "4x smaller",
            "du -sh data/processed",
        ),
        Row(
            "evaluate stage",
            f"{evaluate.seconds:.1f} s, peak {evaluate.peak_mib:.0f} MiB",
            "-",
            "-",
            "python -m pipeline evaluate",
        ),
    ]


def noop_rows(project: Path, scratch: Path, smoke: bool) -> list[Row]:
    """No-op reruns; ``smoke``: each once, without the warm-up runs (the medians are of 5 and of 3)."""
    dvc_times, flow_times = (1, 1) if smoke else (5, 3)
    subprocess.run([sys.executable, "-m", "dvc", "repro", "--quiet"], cwd=project, check=True)
    dvc_noop = median_of([sys.executable, "-m", "dvc", "repro"], project, dvc_times)
    rows = [
        Row(
            f"no-op dvc repro (median of {dvc_times})",
            f"{dvc_noop:.2f} s",
            "0.70 s target",
            "ok" if dvc_noop <= 0.7 else "OVER",
            "dvc repro",
        )
    ]
    flows_run = [sys.executable, "-m", "flows", "run"]
    (scratch / "trivial_flow.py").write_text(TRIVIAL_FLOW)
    trivial = [sys.executable, str(scratch / "trivial_flow.py")]
    with prefect_server(scratch / "prefect-home") as env:
        for warm_up in () if smoke else (trivial, flows_run):  # a flow's first run registers it
            timed(warm_up, project, env)
        ours, theirs = [], []
        for _ in range(flow_times):
            ours.append(timed(flows_run, project, env).seconds)
            theirs.append(timed(trivial, project, env).seconds)
    ours_s, theirs_s = statistics.median(ours), statistics.median(theirs)
    rows.append(
        Row(
            f"no-op python -m flows run, running Prefect server (median of {flow_times})",
            f"{ours_s:.1f} s",
            f"{theirs_s:.1f} s (one-task flow)",
            f"+{ours_s - theirs_s:.1f} s ({'ok' if ours_s - theirs_s <= 1.5 else 'OVER'}: target +1.5 s)",
            "python -m flows run",
        )
    )
    alone = {key: value for key, value in env.items() if key != "PREFECT_API_URL"}
    temporary = median_of(flows_run, project, flow_times, alone)
    dvc_noop_in_flow = temporary - dvc_noop
    rows.append(
        Row(
            f"no-op python -m flows run, temporary server (median of {flow_times})",
            f"{temporary:.1f} s",
            f"{dvc_noop:.2f} s (no-op dvc repro)",
            f"+{dvc_noop_in_flow:.1f} s",
            "python -m flows run  # no PREFECT_API_URL",
        )
    )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=3, help="alternating pairs of train runs")
    parser.add_argument(
        "--smoke", action="store_true", help="every measurement once on tiny synthetic data (seconds)"
    )
    args = parser.parse_args()
    pairs, seeds = (1, SEEDS[:1]) if args.smoke else (args.pairs, SEEDS)
    with tempfile.TemporaryDirectory(prefix="fashion-bench-speed-") as directory:
        scratch = Path(directory)
        project = prepared_project(scratch / "project", args.smoke)
        train, known = train_rows(project, pairs, args.smoke)
        stages, noop = stage_rows(project), noop_rows(project, scratch, args.smoke)
        quality = quality_row(project, seeds, args.smoke, known)  # last: it leaves another seed's model
        rows = [*train[:1], quality, *train[1:], *stages, *noop]
    print()
    print("| measurement | ours | reference | ratio | command |")
    print("|---|---:|---:|---:|---|")
    for row in rows:
        command = "` vs `".join(row.command.split(" vs "))
        print(f"| {row.measurement} | {row.ours} | {row.reference} | {row.ratio} | `{command}` |")
    invocation = (
        "--smoke (tiny synthetic data: the numbers mean nothing)" if args.smoke else f"--pairs {pairs}"
    )
    print(f"\n{os.cpu_count()} CPU cores; python bench/speed.py {invocation}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
