"""``dvc.yaml`` tells the truth: each stage declares every module it runs, every params section it
reads, and every path it writes, so a change anywhere reruns the stages it affects and no result
goes stale. Checked against the code itself, so the two cannot drift apart.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO_ROOT

DVC_YAML = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())
STAGES = list(DVC_YAML["stages"])
# Every stage command starts here: `python -m pipeline <stage>` runs the package, its __main__ and
# the CLI, which imports the stage's module by name (its other commands' modules are theirs).
ENTRY = ("pipeline", "pipeline.__main__", "pipeline.cli")


def module_file(module: str) -> Path:
    path = REPO_ROOT / f"{module.replace('.', '/')}.py"
    return path if path.exists() else REPO_ROOT / module.replace(".", "/") / "__init__.py"


def pipeline_imports(module: str) -> set[str]:
    """The ``pipeline`` modules ``module`` imports: anywhere in its code, but for the CLI, whose
    functions import other commands' modules, at its top level only."""
    tree = ast.parse(module_file(module).read_text())
    nodes = tree.body if module == "pipeline.cli" else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module == "pipeline":
            found |= {f"pipeline.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pipeline."):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("pipeline.")}
    return found


def import_closure(stage: str) -> set[str]:
    """Every file of ``pipeline/`` that ``python -m pipeline <stage>`` can run."""
    seen: set[str] = set()
    todo = [*ENTRY, f"pipeline.{stage}"]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += pipeline_imports(module)
    return {module_file(module).relative_to(REPO_ROOT).as_posix() for module in seen}


def declared(stage: str, key: str) -> list:
    return [
        next(iter(entry)) if isinstance(entry, dict) else entry for entry in DVC_YAML["stages"][stage][key]
    ]


def sections_read(stage: str) -> set[str]:
    """The ``params.<section>`` attributes the stage's ``main`` reads."""
    tree = ast.parse(module_file(f"pipeline.{stage}").read_text())
    (main,) = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "main"]
    return {
        node.attr
        for node in ast.walk(main)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "params"
    }


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_depends_on_every_module_it_runs(stage: str) -> None:
    code = {dep for dep in declared(stage, "deps") if dep.startswith("pipeline/")}
    assert code == import_closure(stage), f"dvc.yaml's {stage} deps vs the modules it imports"


@pytest.mark.parametrize("stage", [stage for stage in STAGES if stage != "validate"])
def test_a_stage_depends_on_the_params_it_reads_and_on_validated_params(stage: str) -> None:
    assert set(declared(stage, "params")) == sections_read(stage)
    assert "reports/validate/params-valid.txt" in declared(stage, "deps")


def test_validate_depends_on_the_whole_params_file() -> None:
    assert declared("validate", "params") == ["params.yaml"]
    assert DVC_YAML["stages"]["validate"]["params"] == [{"params.yaml": None}]


@pytest.mark.integration
def test_each_stage_writes_exactly_its_declared_outputs(project: Path) -> None:
    """Run each command in order, as DVC would, and compare what changed on disk with its outs."""
    for stage in STAGES:
        outs = [
            Path(out)
            for key in ("outs", "metrics")
            if key in DVC_YAML["stages"][stage]
            for out in declared(stage, key)
        ]
        before = files(project)
        result = subprocess.run(
            [sys.executable, "-m", "pipeline", stage], cwd=project, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
        after = files(project)
        written = {path for path, stamp in after.items() if before.get(path) != stamp}
        undeclared = {path for path in written if not any(path == out or out in path.parents for out in outs)}
        assert undeclared == set(), f"{stage} writes outside its dvc.yaml outs"
        for out in outs:
            assert (project / out).exists(), f"{stage} did not write {out}"


def files(project: Path) -> dict[Path, tuple[int, int]]:
    """Every file outside git's and DVC's folders and Python's caches, with its change stamp."""
    skipped = {".git", ".dvc", "__pycache__"}
    return {
        path.relative_to(project): (path.stat().st_mtime_ns, path.stat().st_size)
        for path in project.rglob("*")
        if path.is_file() and not skipped & set(path.relative_to(project).parts)
    }
