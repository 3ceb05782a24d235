"""The flows' helpers and command line, without a Prefect server or a pipeline run: params and
overrides, the sweep grid and ranking, the metrics table, telemetry. Prefect and the flows are
imported inside the tests, so the fast tier collects without them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO_ROOT, dvc, unshare_works
from pipeline.core.params import ParamsError, read_raw_params


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            ["--override", "train.epoch=3"],
            "--override: unknown param 'train.epoch'; did you mean 'train.epochs'",
        ),
        (["--override", "train.epochs=0"], "train.epochs (set by --override): Input should be greater than"),
    ],
)
def test_a_bad_override_is_one_line_and_exit_2_before_any_server_starts(
    project: Path, arguments: list[str], message: str
) -> None:
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "flows", "run", *arguments],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and "temporary Prefect server" not in result.stderr
    assert time.monotonic() - started < 10


@pytest.mark.skipif(not unshare_works(), reason="needs unshare --mount (root)")
def test_a_read_only_home_is_one_line_naming_prefect_home(project: Path, tmp_path: Path) -> None:
    """Without ``PREFECT_API_URL`` the temporary server keeps its database under ``PREFECT_HOME``."""
    home = tmp_path / "home"
    home.mkdir()
    script = (
        f"mount --bind {home} {home} && mount -o remount,bind,ro {home} && "
        f"exec env -u PREFECT_API_URL -u PREFECT_HOME HOME={home} {sys.executable} -W ignore -m flows run"
    )
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "bash", "-c", script],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"python -m flows run: error: the temporary Prefect server keeps its database in PREFECT_HOME "
        f"({home}/.prefect), which cannot be written (Read-only file system); set PREFECT_HOME to a "
        "writable folder, or PREFECT_API_URL to a running server"
    )


def test_a_temporary_server_of_this_package_sends_no_telemetry() -> None:
    """Offline, Prefect's telemetry only logs errors; a server configured by the user keeps its own."""
    code = "import flows, prefect.settings as s; print(s.get_current_settings().server.analytics_enabled)"
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_SERVER_ANALYTICS_ENABLED"}
    off = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert off.stdout.strip() == "False"
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "true"
    on = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert on.stdout.strip() == "True"


def test_stage_order_comes_from_dvc_yaml(project: Path) -> None:
    from flows.reproduce import pipeline_stages

    assert pipeline_stages(project) == ["ingest", "preprocess", "train", "evaluate"]


def test_metrics_table_shows_previous_current_and_change() -> None:
    from flows import reports

    previous = {"val": {"accuracy": 0.8, "loss": 0.5}, "test": {"accuracy": 0.75, "loss": 0.6}}
    current = {"val": {"accuracy": 0.85, "loss": 0.45}, "test": {"accuracy": 0.7, "loss": 0.65}}
    table = reports.metrics_markdown(current, previous, start_name="Commit abc1234")
    assert "| Metric | Commit abc1234 | This run | Change |" in table
    assert "| val.accuracy | 0.8000 | 0.8500 | +0.0500 |" in table
    assert "| test.accuracy | 0.7500 | 0.7000 | -0.0500 |" in table
    assert "| test.loss | — | 0.6500 | — |" in reports.metrics_markdown(current, None)


def test_write_params_edits_only_the_changed_values(tmp_path: Path) -> None:
    from flows.params_update import write_params

    repo_params = REPO_ROOT / "params.yaml"
    target = tmp_path / "params.yaml"
    target.write_text(repo_params.read_text())
    assert write_params(target, read_raw_params(target)) == []
    assert target.read_text() == repo_params.read_text()

    changed = write_params(
        target, read_raw_params(target, {"train.epochs": "3", "train.learning_rate": 0.01})
    )
    assert sorted(changed) == ["train.epochs", "train.learning_rate"]
    old, new = repo_params.read_text().splitlines(), target.read_text().splitlines()
    edited = [(before, after) for before, after in zip(old, new, strict=True) if before != after]
    assert [after.split("#")[0].strip() for _, after in edited] == ["epochs: 3", "learning_rate: 0.01"]
    assert "# null = the optimizer's Keras default" in edited[1][1]  # the line keeps its comment


def test_a_params_file_means_overrides_of_the_keys_it_holds(tmp_path: Path) -> None:
    from flows.cli import overrides_from

    other = tmp_path / "other.yaml"
    other.write_text("train:\n  epochs: 7\n  model:\n    dense:\n      hidden_units: [8, 4]\n")
    assert overrides_from(other, []) == {"train.epochs": 7, "train.model.dense.hidden_units": [8, 4]}
    assert overrides_from(other, [("train.epochs", "9")])["train.epochs"] == "9"  # --override wins
    other.write_text("train:\n  epochz: 7\n")
    with pytest.raises(ParamsError, match=r"other\.yaml: unknown param 'train\.epochz'"):
        overrides_from(other, [])


@pytest.mark.parametrize(
    ("text", "pair"),
    [
        ("train.epochs=3", ("train.epochs", "3")),
        ("train.model.dense.hidden_units=[8, 4]", ("train.model.dense.hidden_units", "[8, 4]")),
    ],
)
def test_override_arguments_split_at_the_first_equals_sign(text: str, pair: tuple[str, str]) -> None:
    from flows.params_update import key_value

    assert key_value(text) == pair


@pytest.mark.parametrize(
    ("grid", "expected"),
    [
        (["train.epochs=10,20"], [{"train.epochs": "10"}, {"train.epochs": "20"}]),
        (
            ["train.model.dense.hidden_units=[100],[256,128]", "train.optimizer=choice(adam,sgd)"],
            [
                {"train.model.dense.hidden_units": "[100]", "train.optimizer": "adam"},
                {"train.model.dense.hidden_units": "[100]", "train.optimizer": "sgd"},
                {"train.model.dense.hidden_units": "[256,128]", "train.optimizer": "adam"},
                {"train.model.dense.hidden_units": "[256,128]", "train.optimizer": "sgd"},
            ],
        ),
        (["train.seed=range(1,4)"], [{"train.seed": "1"}, {"train.seed": "2"}, {"train.seed": "3"}]),
        (["train.epochs=5"], [{"train.epochs": "5"}]),
    ],
)
def test_the_grid_uses_dvcs_sweep_grammar(grid: list[str], expected: list[dict[str, str]]) -> None:
    from flows.params_update import trial_overrides

    assert trial_overrides(grid) == expected


def test_a_malformed_grid_is_one_clear_error() -> None:
    from flows.params_update import trial_overrides

    with pytest.raises(ParamsError, match=r"not a sweep DVC understands \(train.epochs=choice\(1,\)"):
        trial_overrides(["train.epochs=choice(1,"])


def test_trials_rank_by_validation_accuracy_and_failures_come_last() -> None:
    from flows.sweep_flow import rank, ranking_table, varied_keys

    def result(trial: int, accuracy: float, loss: float) -> dict:
        metrics = {"val": {"accuracy": accuracy, "loss": loss}, "test": {"accuracy": 0.5, "loss": 1.0}}
        overrides = {"train.epochs": str(trial), "train.seed": "1"}
        return {
            "trial": trial,
            "overrides": overrides,
            "experiment": f"exp-{trial}",
            "metrics": metrics,
            "train_seconds": 1.25,
        }

    failed = {"trial": 4, "overrides": {"train.epochs": "4", "train.seed": "1"}, "error": "boom"}
    ranked = rank([result(1, 0.8, 0.5), failed, result(2, 0.9, 0.4), result(3, 0.9, 0.3)])
    assert [r["trial"] for r in ranked] == [3, 2, 1, 4]
    trials = [r["overrides"] for r in ranked]
    assert varied_keys(trials) == ["train.epochs"]
    with_lists = [{**trial, "train.model.cnn.filters": [32, 64]} for trial in trials]  # a preset's values
    assert varied_keys(with_lists) == ["train.epochs"]
    table = ranking_table(ranked, varied_keys(trials))
    assert table[0] == {
        "rank": 1,
        "experiment": "exp-3",
        "train.epochs": "3",
        "val accuracy": 0.9,
        "test accuracy": 0.5,
        "val loss": 0.3,
        "train s": 1.2,
        "status": "ok",
    }
    assert table[-1]["rank"] == "-" and table[-1]["status"] == "failed: boom"


def test_default_workers_fit_the_machine() -> None:
    from flows.sweep_flow import default_workers

    assert 1 <= default_workers() <= (os.cpu_count() or 1)


def test_tracked_files_rewritten_with_the_same_bytes_are_no_change(tmp_path: Path) -> None:
    """As after a fresh clone's ``dvc repro``: git 2.39's ``git stash create`` exits 1 without a word
    on a stat-dirty index, so a flow run must refresh the index first."""
    from flows.workspace import uncommitted_changes

    tracked = tmp_path / "dvc.lock"
    tracked.write_text("schema: '2.0'\n")
    for command in (["init", "-q"], ["add", "dvc.lock"], ["commit", "-q", "-m", "a run"]):
        subprocess.run(["git", *command], cwd=tmp_path, check=True)
    os.utime(tracked, (time.time() + 5, time.time() + 5))  # rewritten, same content
    assert uncommitted_changes(tmp_path) is None
    tracked.write_text("schema: '2.0'\nstages: {}\n")
    assert uncommitted_changes(tmp_path)  # a real change still makes a commit


# --- pushing without a DVC remote (issue 33) ------------------------------------------------------

EVERY_CACHED_OUTPUT = "data/processed, data/raw, models/best-model.h5, models/model.keras"


def test_the_refusal_of_a_push_without_a_remote_names_what_stays_and_the_fix() -> None:
    from flows.workspace import no_remote_message

    message = no_remote_message("push=True", ["data/raw", "models"], "/cache", "run with push=False")
    assert message == (
        "push=True: no DVC remote is set, so data/raw, models would stay in this machine's DVC cache "
        "(/cache) and only the run's git ref would leave; nothing was run. To push, set a default DVC "
        "remote and commit it: `dvc remote add -d storage <url>` (a directory, s3://bucket/path), then "
        "`git commit .dvc/config`; or run with push=False"
    )


@pytest.mark.parametrize("command", ["run", "seeds"])
def test_push_without_a_dvc_remote_is_one_line_and_exit_2_before_any_server_starts(
    project: Path, command: str
) -> None:
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    started = time.monotonic()
    arguments = [sys.executable, "-m", "flows", command, "--push"]
    result = subprocess.run(arguments, cwd=project, env=env, capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"python -m flows {command}: error: --push: no DVC remote is set, so ")
    assert EVERY_CACHED_OUTPUT in result.stderr and "`dvc remote add -d storage <url>`" in result.stderr
    assert "or run without --push" in result.stderr
    assert "Traceback" not in result.stderr and "temporary Prefect server" not in result.stderr
    assert time.monotonic() - started < 15
    assert not (project / ".dvc" / "tmp" / "fashion-runs").exists()  # no workspace was made


@pytest.mark.integration  # the session's reproduced project: a run to record
def test_a_push_without_a_dvc_remote_sends_the_git_ref_and_warns_what_stayed_behind(
    reproduced: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """What :func:`flows.workspace.push_results` does where no caller checked for a remote first."""
    import logging

    from flows import reports, workspace

    project = reproduced
    experiment = workspace.record_experiment(project, "a run")
    target = tmp_path / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", str(target)], check=True)
    with caplog.at_level(logging.WARNING, logger="test-push"):
        pushed = workspace.push_results(project, experiment, str(target), logging.getLogger("test-push"))
    assert pushed.sent == (f"experiment `{experiment}` to git remote `{target}`",)
    assert pushed.warning is not None
    assert pushed.warning.startswith(f"no DVC remote is set, so dvc push sent nothing: {EVERY_CACHED_OUTPUT}")
    assert f"experiment {experiment} went to {target} without them" in pushed.warning
    assert "`dvc remote add -d storage <url>`" in pushed.warning
    assert f"`dvc exp push {target} {experiment}`" in pushed.warning
    assert [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING] == [
        pushed.warning
    ]
    refs = subprocess.run(["git", "for-each-ref", "refs/exps"], cwd=target, capture_output=True, text=True)
    assert refs.stdout.strip().endswith(f"/{experiment}")

    # The run's metrics artifact: the warning before the table, what went where after it.
    shown = reports.metrics_markdown(
        {"score": 0.5}, None, experiment, pushed=pushed.sent, warnings=[pushed.warning]
    )
    assert shown.index(f"> **Warning:** {pushed.warning}") < shown.index("| Metric |")
    assert f"Pushed: experiment `{experiment}` to git remote `{target}`." in shown


def test_a_seed_groups_summary_is_its_mean_and_spread_never_a_best_seed() -> None:
    from flows.seeds_flow import group_summary, summary_lines

    def result(seed: int, score: float) -> dict:
        return {
            "overrides": {"train.seed": str(seed)},
            "metrics": {"score": {"up": score}, "step": 3},
            "classes": {"Bag": score},
        }

    summary = group_summary([result(42, 0.80), result(43, 0.82), result(44, 0.81)])
    assert summary_lines(summary) == ["score.up over 3 seeds: 0.8100 ± 0.0100 (0.8000–0.8200)"]
    assert summary_lines(group_summary([result(42, 0.80)])) == ["score.up over 1 seed: 0.8000"]


@pytest.mark.integration  # dvc repro of the session's reproduced project
def test_dvc_repro_hints_dvc_push_after_any_stage_ran_even_without_a_remote(reproduced: Path) -> None:
    """DVC's own line, as docs/operations.md describes it: no setting turns it off (only ``-q``)."""
    hint = "Use `dvc push` to send your updates to remote storage."
    assert dvc("remote", "list", cwd=reproduced).stdout.strip() == ""
    nothing_ran = dvc("repro", cwd=reproduced)
    assert "Data and pipelines are up to date." in nothing_ran.stdout and hint not in nothing_ran.stdout
    ran = dvc("repro", "--force", "--single-item", "ingest", cwd=reproduced)
    assert hint in ran.stdout, ran.stdout
    assert hint not in dvc("repro", "-q", "--force", "--single-item", "ingest", cwd=reproduced).stdout
