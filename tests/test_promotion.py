"""The promotion rule (pure): beyond seed noise on test accuracy, no class's F1 significantly worse
by more than the cap; the first version of a stage without a comparison."""

from __future__ import annotations

from pipeline.review.promotion import decide
from pipeline.review.seed_groups import Run


def group(configuration: str, accuracies: list[float], shirt_f1: float = 0.7) -> list[Run]:
    return [
        Run(
            f"{configuration}-{seed}",
            seed,
            configuration,
            {"test.accuracy": accuracy},
            {"Shirt": shirt_f1 + i * 1e-3},
        )
        for i, (seed, accuracy) in enumerate(zip(range(42, 42 + len(accuracies)), accuracies, strict=True))
    ]


PROD = group("a", [0.870, 0.872, 0.871])


def test_the_first_version_of_a_stage_is_assigned_without_a_comparison() -> None:
    decision = decide(None, group("b", [0.5]), "prod", 0.02)
    assert decision.assign and "without a comparison" in decision.reason


def test_within_seed_noise_is_refused_naming_the_interval() -> None:
    decision = decide(PROD, group("b", [0.869, 0.874, 0.872]), "prod", 0.02)
    assert not decision.assign
    assert decision.reason.startswith("test.accuracy +0.0007 (95% interval ")
    assert (
        "Welch's t; 3 seeds against 3 seeds): within seed noise, so prod keeps its version" in decision.reason
    )


def test_beyond_seed_noise_is_assigned() -> None:
    decision = decide(PROD, group("b", [0.880, 0.882, 0.881]), "prod", 0.02)
    assert decision.assign and decision.reason.endswith(": beyond seed noise")


def test_a_significantly_worse_class_beyond_the_cap_is_refused() -> None:
    decision = decide(PROD, group("b", [0.880, 0.882, 0.881], shirt_f1=0.6), "staging", 0.02)
    assert not decision.assign
    assert (
        "but the F1 of Shirt dropped 0.1000" in decision.reason
        and "review.max_class_f1_drop 0.0200" in decision.reason
    )
    assert decide(PROD, group("b", [0.880, 0.882, 0.881], shirt_f1=0.6), "staging", 0.2).assign


def test_worse_and_the_same_configuration_are_refused() -> None:
    worse = decide(PROD, group("b", [0.860, 0.861, 0.862]), "prod", 0.02)
    assert not worse.assign and ": worse, so prod keeps its version" in worse.reason
    same = decide(PROD, group("a", [0.880]), "prod", 0.02)
    assert not same.assign and "same configuration" in same.reason
