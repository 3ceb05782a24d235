"""The promotion rule (pure): beyond seed noise on test accuracy, no class's F1 significantly worse
by more than the cap; the first version of a stage without a comparison."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pipeline import registry
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


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout


def test_two_promotions_at_once_one_wins_and_the_other_is_left_without_tags(tmp_path) -> None:
    """Both made the same tag names; the second push is refused whole and its tags are deleted."""
    git("init", "-q", "--bare", "-b", "main", str(tmp_path / "origin.git"), cwd=tmp_path)
    clones = []
    for name in ("a", "b"):
        clone = tmp_path / name
        git("clone", "-q", str(tmp_path / "origin.git"), str(clone), cwd=tmp_path)
        git(
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.invalid",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            name,
            cwd=clone,
        )
        for tag in ("m@v0.0.1", "m#prod#1"):
            git(
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@example.invalid",
                "tag",
                "-a",
                "-m",
                name,
                tag,
                cwd=clone,
            )
        clones.append(clone)
    assert registry.push(clones[0], ["m@v0.0.1", "m#prod#1"])
    with pytest.raises(registry.RegistryError, match="the tag moved: origin refused m@v0.0.1, m#prod#1"):
        registry.push(clones[1], ["m@v0.0.1", "m#prod#1"])
    assert git("tag", "--list", cwd=clones[1]) == ""  # nothing half-written here
    assert set(git("ls-remote", "--tags", "origin", cwd=clones[0]).split()) >= {"refs/tags/m@v0.0.1"}
    assert not registry.push(tmp_path / "a", [], remote="nowhere")  # no such remote: nothing to push
