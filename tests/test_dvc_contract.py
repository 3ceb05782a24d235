"""``dvc.yaml`` tells the truth: each stage declares its module and every shared folder of code it
runs, every params section it reads, and every path it writes, so a change anywhere reruns the stages
it affects and no result goes stale. Checked against the code itself, so the two cannot drift apart.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO_ROOT, dvc

DVC_YAML = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())
STAGES = list(DVC_YAML["stages"])
SHARED = {"core": "pipeline/core", "model": "pipeline/model"}  # the folders stages may depend on


def module_file(module: str) -> Path:
    path = REPO_ROOT / f"{module.replace('.', '/')}.py"
    return path if path.exists() else REPO_ROOT / module.replace(".", "/") / "__init__.py"


def pipeline_imports(module: str) -> set[str]:
    """The ``pipeline`` modules ``module`` imports, anywhere in its code."""
    found = set()
    for node in ast.walk(ast.parse(module_file(module).read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pipeline"):
            found.add(node.module)
            found |= {
                f"{node.module}.{alias.name}"
                for alias in node.names
                if module_file(f"{node.module}.{alias.name}").exists()
            }
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("pipeline")}
    return found


def import_closure(module: str) -> set[str]:
    """Every ``pipeline`` module that running ``module`` can import, its packages included."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            parts = current.split(".")
            todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # a module's packages run first
            todo += pipeline_imports(current)
    return seen


def declared(stage: str, key: str) -> list:
    return [
        next(iter(entry)) if isinstance(entry, dict) else entry
        for entry in DVC_YAML["stages"][stage].get(key, [])
    ]


def sections_read(stage: str) -> set[str]:
    """The ``params.<section>`` attributes the stage's ``main`` reads."""
    tree = ast.parse(module_file(f"pipeline.stages.{stage}").read_text())
    (main,) = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "main"]
    return {
        node.attr
        for node in ast.walk(main)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "params"
    }


def test_the_stages_are_the_pipeline_in_order() -> None:
    assert STAGES == ["ingest", "preprocess", "train", "evaluate"]
    for stage in STAGES:
        assert DVC_YAML["stages"][stage]["cmd"] == f"python -m pipeline.stages.{stage}"


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_depends_on_its_module_and_the_shared_folders_it_runs(stage: str) -> None:
    """Its own module, plus ``pipeline/core`` and ``pipeline/model`` where it imports them; never a
    command's module or another stage's, whose edits must not rerun it."""
    closure = import_closure(f"pipeline.stages.{stage}") - {"pipeline", "pipeline.stages"}
    strays = {m for m in closure if m.split(".")[1] not in SHARED and m != f"pipeline.stages.{stage}"}
    assert strays == set(), f"{stage} imports code outside its module and {sorted(SHARED.values())}"
    expected = {f"pipeline/stages/{stage}.py"} | {
        SHARED[m.split(".")[1]] for m in closure if m.split(".")[1] in SHARED
    }
    code = {dep for dep in declared(stage, "deps") if dep.startswith("pipeline")}
    assert code == expected, f"dvc.yaml's {stage} deps vs the code it imports"


def test_the_shared_folders_stay_shared() -> None:
    """``core`` imports only ``core``; ``model`` only ``core`` and ``model``: a folder dependency then
    covers all the code it can run."""
    for folder, allowed in (("core", {"core"}), ("model", {"core", "model"})):
        for path in (REPO_ROOT / "pipeline" / folder).glob("*.py"):
            module = f"pipeline.{folder}.{path.stem}".removesuffix(".__init__")
            used = {m.split(".")[1] for m in import_closure(module) if m.count(".")}
            assert used <= allowed, f"{module} imports from pipeline.{used - allowed}"


def test_the_packages_above_the_stages_run_only_shared_code() -> None:
    """``pipeline/__init__.py`` and ``pipeline/stages/__init__.py`` run before every stage, yet are no
    stage's dependency: the first holds a docstring only; the second may also call code of
    ``pipeline.core`` (which every stage depends on): the stages' signal handlers, set before the
    stage's module imports TensorFlow (pipeline.core.stage_signals)."""
    body = ast.parse((REPO_ROOT / "pipeline/__init__.py").read_text()).body
    assert len(body) == 1 and isinstance(body[0], ast.Expr), "pipeline/__init__.py holds code"
    docstring, *rest = ast.parse((REPO_ROOT / "pipeline/stages/__init__.py").read_text()).body
    assert isinstance(docstring, ast.Expr) and isinstance(docstring.value, ast.Constant)
    imported = set()
    for node in rest:
        if isinstance(node, ast.ImportFrom):
            assert node.module == "pipeline.core", ast.unparse(node)
            imported |= {alias.asname or alias.name for alias in node.names}
        else:  # `module.function()` of a module imported above, nothing else
            call = node.value if isinstance(node, ast.Expr) else None
            function = call.func if isinstance(call, ast.Call) else None
            assert isinstance(function, ast.Attribute) and isinstance(function.value, ast.Name), ast.unparse(
                node
            )
            assert function.value.id in imported and not call.args and not call.keywords, ast.unparse(node)


@pytest.mark.parametrize("stage", STAGES)
def test_tensorflow_comes_only_through_the_model_folder(stage: str) -> None:
    """A stage imports TensorFlow only through ``pipeline.model`` (which sets its environment first),
    and ingest and preprocess not at all."""
    tree = ast.parse(module_file(f"pipeline.stages.{stage}").read_text())
    direct = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])
    }
    assert not direct & {"tensorflow", "keras"}
    if stage in ("ingest", "preprocess"):
        assert "pipeline/model" not in declared(stage, "deps")


# Sections a stage reads that change its speed, never its outputs: not dependencies, so that they
# need not be in params.yaml, and `dvc exp show` stays the params experiments vary.
SPEED_ONLY = {"evaluate": {"evaluate"}}  # evaluate.batch_size: the inference batch


@pytest.mark.parametrize("stage", STAGES[1:])
def test_a_stage_depends_on_the_params_it_reads(stage: str) -> None:
    assert set(declared(stage, "params")) == sections_read(stage) - SPEED_ONLY.get(stage, set())


def test_ingest_depends_on_the_whole_params_file_and_keeps_its_output() -> None:
    """The gate: a bad value anywhere fails ingest, whose output DVC does not delete first."""
    assert DVC_YAML["stages"]["ingest"]["params"] == [{"params.yaml": None}]
    assert DVC_YAML["stages"]["ingest"]["outs"] == [{"data/raw": {"persist": True}}]


def test_the_metrics_are_declared_headline_numbers_first() -> None:
    """Top-level ``metrics``: ``dvc exp show`` and ``dvc metrics show`` list evaluate's first."""
    assert DVC_YAML["metrics"] == ["reports/evaluate/metrics.json", "reports/train/metrics.json"]
    outs = {out for stage in STAGES for out in declared(stage, "outs")}
    assert set(DVC_YAML["metrics"]) <= outs


def test_dvc_yaml_reads_as_the_diagram() -> None:
    """Under 100 lines, and no more than 10 dependency columns in ``dvc exp show``."""
    assert len((REPO_ROOT / "dvc.yaml").read_text().splitlines()) < 100
    columns = {dep for stage in STAGES for dep in declared(stage, "deps")}
    assert len(columns) <= 10, sorted(columns)


@pytest.mark.integration
def test_each_stage_writes_exactly_its_declared_outputs(project: Path) -> None:
    """Run each command in order, as DVC would, and compare what changed on disk with its outs."""
    for stage in STAGES:
        outs = [
            Path(out) for key in ("outs",) if key in DVC_YAML["stages"][stage] for out in declared(stage, key)
        ]
        before = files(project)
        result = subprocess.run(
            [sys.executable, "-m", "pipeline.stages." + stage], cwd=project, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
        after = files(project)
        written = {path for path, stamp in after.items() if before.get(path) != stamp}
        undeclared = {path for path in written if not any(path == out or out in path.parents for out in outs)}
        assert undeclared == set(), f"{stage} writes outside its dvc.yaml outs"
        for out in outs:
            assert (project / out).exists(), f"{stage} did not write {out}"


@pytest.mark.integration
def test_editing_a_command_reruns_no_stage_and_editing_core_reruns_all(reproduced: Path) -> None:
    project = reproduced
    with (project / "pipeline/commands/predict.py").open("a") as file:
        file.write("# a comment\n")
    with (project / "pipeline/commands/report.py").open("a") as file:
        file.write("# another\n")
    assert "Data and pipelines are up to date" in dvc("status", cwd=project).stdout
    (project / "pipeline/core/__pycache__").mkdir(exist_ok=True)
    (project / "pipeline/core/__pycache__/x.cpython-311.pyc").write_bytes(b"byte code")  # .dvcignore'd
    assert "Data and pipelines are up to date" in dvc("status", cwd=project).stdout
    with (project / "pipeline/core/paths.py").open("a") as file:
        file.write("# a comment\n")
    status = dvc("status", "--json", cwd=project).stdout
    assert set(yaml.safe_load(status)) == set(STAGES)


def files(project: Path) -> dict[Path, tuple[int, int]]:
    """Every file outside git's and DVC's folders and Python's caches, with its change stamp."""
    skipped = {".git", ".dvc", "__pycache__"}
    return {
        path.relative_to(project): (path.stat().st_mtime_ns, path.stat().st_size)
        for path in project.rglob("*")
        if path.is_file() and not skipped & set(path.relative_to(project).parts)
    }
