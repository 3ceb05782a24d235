"""Seed noise: the statistics on groups with known answers, seed groups from dvc.lock texts, the gate's
decisions and the report's Markdown with groups (pure functions, fast)."""

from __future__ import annotations

import json
import math

import pytest
import yaml

from pipeline.commands.report import build_report
from pipeline.core.params import ReviewParams
from pipeline.review.gate import gate_checks
from pipeline.review.metrics import headline_metrics, run_metrics
from pipeline.review.seed_groups import Groups, Run, configuration_of, group_of, run_from
from pipeline.review.statistics import difference, higher_is_better, summarize

BASE = [0.80, 0.81, 0.82]
SHIFTED = [0.85, 0.86, 0.87]


def test_summary_of_a_group() -> None:
    summary = summarize(BASE)
    assert (summary.n, summary.low, summary.high) == (3, 0.80, 0.82)
    assert summary.mean == pytest.approx(0.81)
    assert summary.sd == pytest.approx(0.01)
    assert summarize([0.5]).sd is None
    with pytest.raises(ValueError, match="at least one run"):
        summarize([])


def test_identical_groups_are_no_change() -> None:
    diff = difference(BASE, list(reversed(BASE)))
    assert (diff.delta, diff.low, diff.high, diff.verdict) == (0.0, 0.0, 0.0, "no change")


def test_a_shifted_group_is_better_with_welchs_interval() -> None:
    diff = difference(BASE, SHIFTED)
    # equal sds of 0.01, n = 3 a side: se = 0.01 * sqrt(2/3), Welch's df = 4, t(0.975, 4) = 2.7764
    half = 2.7764451 * 0.01 * math.sqrt(2 / 3)
    assert diff.method == "Welch's t" and diff.verdict == "better" and diff.significant
    assert diff.delta == pytest.approx(0.05)
    assert (diff.low, diff.high) == (
        pytest.approx(0.05 - half, abs=1e-6),
        pytest.approx(0.05 + half, abs=1e-6),
    )
    assert difference(SHIFTED, BASE).verdict == "worse"


def test_overlapping_groups_are_within_seed_noise() -> None:
    diff = difference(BASE, [0.805, 0.815, 0.83])
    assert diff.verdict == "within seed noise" and not diff.significant
    assert diff.low is not None and diff.high is not None and diff.low < 0 < diff.high


def test_a_loss_is_better_lower() -> None:
    assert not higher_is_better("test.loss") and higher_is_better("test.accuracy")
    assert difference(SHIFTED, BASE, higher_better=False).verdict == "better"


def test_one_run_a_side_cannot_tell() -> None:
    diff = difference([0.80], [0.90])
    assert diff.verdict == "cannot tell" and diff.low is None and diff.high is None
    assert diff.delta == pytest.approx(0.10)


def test_one_run_against_a_group_is_its_prediction_interval() -> None:
    # sd 0.01, n = 3: t(0.975, 2) = 4.3027 times 0.01 * sqrt(1 + 1/3)
    half = 4.3026527 * 0.01 * math.sqrt(4 / 3)
    diff = difference(BASE, [0.815])
    assert diff.method == "prediction interval" and diff.verdict == "within seed noise"
    assert diff.low == pytest.approx(0.005 - half, abs=1e-6)
    assert difference(BASE, [0.90]).verdict == "better"
    assert difference([0.70], BASE).verdict == "better", "the group may be on either side"


# --- seed groups from dvc.lock ---------------------------------------------------------------------


def lock(seed: int = 42, epochs: int = 20, code: str = "aaa", review: float | None = None) -> str:
    train_params = {"train": {"epochs": epochs, "seed": seed}}
    everything = {**train_params, "review": {"max_test_accuracy_drop": review}}
    return yaml.safe_dump(
        {
            "schema": "2.0",
            "stages": {
                "ingest": {
                    "cmd": "python -m pipeline.stages.ingest",
                    "deps": [{"path": "pipeline/core", "md5": f"{code}.dir"}],
                    "params": {"params.yaml": everything},
                    "outs": [{"path": "data/raw", "md5": "raw.dir"}],
                },
                "train": {
                    "cmd": "python -m pipeline.stages.train",
                    "deps": [{"path": "data/raw", "md5": f"raw-{seed}.dir"}],
                    "params": {"params.yaml": train_params},
                    "outs": [{"path": "models/model.keras", "md5": f"model-{seed}"}],
                },
                "evaluate": {
                    "cmd": "python -m pipeline.stages.evaluate",
                    "deps": [{"path": "models", "md5": f"models-{seed}.dir"}],
                    "outs": [{"path": "reports/evaluate/metrics.json", "md5": f"metrics-{seed}"}],
                },
            },
        }
    )


def metrics(accuracy: float) -> str:
    return json.dumps({"test": {"accuracy": accuracy, "loss": 1 - accuracy}, "val": {"accuracy": accuracy}})


def classes(f1: float) -> str:
    return json.dumps([{"label": 0, "class": "Bag", "f1": f1}, {"label": 1, "class": "Coat", "f1": 1.0}])


def test_configuration_leaves_out_the_seed_the_review_section_and_other_stages_outputs() -> None:
    assert configuration_of(yaml.safe_load(lock(42))) == configuration_of(
        yaml.safe_load(lock(7, review=0.01))
    )
    assert configuration_of(yaml.safe_load(lock(epochs=5))) != configuration_of(yaml.safe_load(lock()))
    assert configuration_of(yaml.safe_load(lock(code="bbb"))) != configuration_of(yaml.safe_load(lock()))


def test_a_stale_stage_that_dvc_lock_keeps_is_not_part_of_the_configuration() -> None:
    def with_stale(epochs: int) -> dict:
        stale = {
            "cmd": "python -m pipeline.validate",
            "params": {"params.yaml": {"train": {"epochs": epochs}}},
        }
        document = yaml.safe_load(lock(epochs=5))
        return {**document, "stages": {**document["stages"], "validate": stale}}

    pipeline = ["ingest", "train", "evaluate"]  # dvc.yaml's stages: validate was removed from it
    assert configuration_of(with_stale(20), pipeline) == configuration_of(
        yaml.safe_load(lock(epochs=5)), pipeline
    )
    assert configuration_of(with_stale(20), pipeline) != configuration_of(yaml.safe_load(lock()), pipeline)
    dvc_yaml = yaml.safe_dump({"stages": dict.fromkeys(pipeline, {"cmd": "x"})})
    stale_run = run_from("exp", yaml.safe_dump(with_stale(20)), metrics(0.8), None, dvc_yaml_text=dvc_yaml)
    assert (
        stale_run.configuration
        == run_from("own", lock(epochs=5), metrics(0.8), None, dvc_yaml_text=dvc_yaml).configuration
    )


def test_a_group_is_the_own_run_and_the_newest_run_of_each_other_seed() -> None:
    own = run_from("workspace", lock(42), metrics(0.80), classes(0.5))
    older = run_from("exp-old", lock(43), metrics(0.70), None, time=1)
    newer = run_from("exp-new", lock(43), metrics(0.81), None, time=2)
    same_seed = run_from("exp-42", lock(42), metrics(0.99), None, time=3)
    other_config = run_from("exp-5", lock(44, epochs=5), metrics(0.60), None, time=4)
    group = group_of(own, [older, newer, same_seed, other_config])
    assert [run.label for run in group] == ["workspace", "exp-new"]
    assert own.classes == {"Bag": 0.5, "Coat": 1.0} and own.seed == 42
    assert own.metrics == {"test.accuracy": 0.80, "test.loss": pytest.approx(0.2), "val.accuracy": 0.80}


# --- the gate and the report with groups -----------------------------------------------------------


def runs(values: list[float], epochs: int = 20) -> list[Run]:
    return [
        run_from(f"r{seed}", lock(seed, epochs), metrics(value), classes(value))
        for seed, value in enumerate(values, start=42)
    ]


def old_new(groups: Groups) -> tuple[dict, dict]:
    return json.loads(metrics(groups.base[0].metrics["test.accuracy"])), json.loads(
        metrics(groups.new[0].metrics["test.accuracy"])
    )


@pytest.mark.parametrize(
    ("new", "cap", "passed", "says"),
    [
        ([0.70, 0.71, 0.72], 0.05, False, "a significant drop, more than review.max_test_accuracy_drop"),
        ([0.70, 0.71, 0.72], 0.2, True, "a significant drop, within review.max_test_accuracy_drop"),
        ([0.79, 0.82, 0.80], 0.001, True, "within seed noise, so within review.max_test_accuracy_drop"),
        ([0.85, 0.86, 0.87], 0.0, True, "better, so within"),
    ],
)
def test_the_gate_fails_only_a_significant_drop_larger_than_the_cap(
    new: list[float], cap: float, passed: bool, says: str
) -> None:
    groups = Groups(runs(BASE), runs(new, epochs=5))
    old, now = old_new(groups)
    _, drop = gate_checks(old, now, ReviewParams(max_test_accuracy_drop=cap), groups)
    assert drop.passed is passed
    assert says in drop.message
    assert "95% interval of the change" in drop.message and "3 seeds" in drop.message


def test_the_floor_applies_to_the_groups_mean() -> None:
    groups = Groups(runs(BASE), runs([0.70, 0.80, 0.90], epochs=5))
    old, now = old_new(groups)  # the new side's own run: 0.70, its mean 0.80
    floor, _ = gate_checks(old, now, ReviewParams(min_test_accuracy=0.75), groups)
    assert floor.passed and floor.value == pytest.approx(0.80)
    assert "(mean of 3 seeds) meets review.min_test_accuracy 0.7500" in floor.message


def test_one_run_a_side_keeps_the_single_run_gate_and_says_it_cannot_tell() -> None:
    groups = Groups(runs([0.80]), runs([0.75], epochs=5))
    old, now = old_new(groups)
    _, drop = gate_checks(old, now, ReviewParams(max_test_accuracy_drop=0.01), groups)
    assert not drop.passed and "dropped 0.0500 (0.8000 -> 0.7500)" in drop.message
    text = build_report(base="main", base_commit=None, old=old, new=now, params=[], checks=[], groups=groups)
    assert "**Seed noise: cannot tell.**" in text
    assert "`python -m flows seeds --rev main`" in text


def test_the_same_configuration_is_within_seed_noise_not_a_drop() -> None:
    committed, here = runs([0.8789]), runs([0.8775])  # one commit, reproduced on another CPU
    groups = Groups(committed, here)
    assert groups.same_configuration
    old, now = old_new(groups)
    text = build_report(base="HEAD", base_commit=None, old=old, new=now, params=[], checks=[], groups=groups)
    assert "**Within seed noise: the same configuration.**" in text
    # with other seeds known, both sides share them, and no interval makes it a change
    others = runs([0.8789, 0.8801, 0.8770])[1:]
    shared = Groups(committed + others, here + others)
    assert all(row.difference.verdict == "within seed noise" for row in shared.metrics)
    _, drop = gate_checks(old, now, ReviewParams(max_test_accuracy_drop=0.0), shared)
    assert drop.passed


def test_the_report_shows_both_groups_the_interval_and_the_verdict() -> None:
    groups = Groups(runs(BASE), runs(SHIFTED, epochs=5))
    old, now = old_new(groups)
    checks = gate_checks(old, now, ReviewParams(), groups)
    text = build_report(
        base="main", base_commit="0123456789", old=old, new=now, params=[], checks=checks, groups=groups
    )
    assert "Seed groups: base 3 seeds: 42 (r42), 43 (r43), 44 (r44); new 3 seeds: 42 (r42), 43 (r43)" in text
    row = next(line for line in text.splitlines() if line.startswith("| test.accuracy |"))
    assert row == (
        "| test.accuracy | 0.8100 ± 0.0100 (0.8000–0.8200) | 0.8600 ± 0.0100 (0.8500–0.8700) "
        "| +0.0500 (+0.0273 to +0.0727) | **better** |"
    )
    loss = next(line for line in text.splitlines() if line.startswith("| test.loss |"))
    assert loss.endswith("| **better** |"), "a lower loss is better"
    assert "| Bag | 0.8100 ± 0.0100" in text, "per-class F1 of both groups"
    assert text == build_report(
        base="main", base_commit="0123456789", old=old, new=now, params=[], checks=checks, groups=groups
    )


def test_a_runs_metrics_have_one_name_each_at_old_and_new_revisions() -> None:
    """Evaluate's test.* with train's kept epoch (val.*); before train's summary named the kept epoch,
    evaluate's val.* stay and train's last-epoch numbers (eval.*, train.*, best.*) are left out."""
    test = {"accuracy": 0.87, "loss": 0.36, "macro_f1": 0.86}
    new = run_metrics({"test": test}, {"val": {"accuracy": 0.88, "loss": 0.33}})
    assert headline_metrics(new) == {
        **{f"test.{name}": value for name, value in test.items()},
        "val.accuracy": 0.88,
        "val.loss": 0.33,
    }
    old_train = {"train": {"accuracy": 0.9}, "eval": {"accuracy": 0.885}, "step": 19, "best": {"epoch": 17}}
    old = run_metrics({"test": test, "val": {"accuracy": 0.8826, "loss": 0.326}}, old_train)
    assert set(headline_metrics(old)) == set(headline_metrics(new))
    assert old["val"]["accuracy"] == 0.8826
    # a running experiment's summary names its epoch as DVCLive's step: no score
    running = run_metrics({"test": test}, {"step": 3, "val": {"accuracy": 0.8, "loss": 0.5}})
    assert "step" not in headline_metrics(running)
