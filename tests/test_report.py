"""The review report: pure Markdown builders (fast) and the real thing against DVC (integration)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import networkx
import pytest

from conftest import REPO_ROOT, dvc, ran_stages, run, set_params
from pipeline.commands.report import MARKER, ParamChange, build_report, image_link, param_changes
from pipeline.core.params import ReviewParams
from pipeline.review.gate import GateCheck, gate_checks
from pipeline.review.metrics import MetricRow, flatten, metric_rows, per_class_rows, per_class_scores
from pipeline.review.seed_groups import Groups, Run

OLD = {
    "val": {"loss": 0.5, "accuracy": 0.8},
    "test": {
        "loss": 0.55,
        "accuracy": 0.79,
        "macro_f1": 0.78,
        "per_class": {"Trouser": {"precision": 0.9, "recall": 0.9, "f1": 0.9}, "Bag": {"f1": 0.5}},
    },
}
NEW = {
    "test": {
        "per_class": {"Bag": {"f1": 0.625}, "Trouser": {"precision": 1.0, "recall": 0.8, "f1": 0.9}},
        "macro_f1": 0.7625,
        "accuracy": 0.75,
        "loss": 0.6,
    },
    "val": {"accuracy": 0.81, "loss": 0.45},
}


def table(markdown: str, header: str) -> dict[str, list[str]]:
    """Rows of the Markdown table whose header row starts with ``| header |``, by first cell."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {header} |"))
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split(" | ")]
        rows[cells[0].strip("`")] = cells[1:]
    return rows


def report(**overrides) -> str:
    arguments = {
        "base": "main",
        "base_commit": "0123456789abcdef",
        "old": OLD,
        "new": NEW,
        "params": [ParamChange("train.epochs", 20, 3)],
        "checks": gate_checks(OLD, NEW, ReviewParams()),
        "images": [("Loss per epoch", "reports/train/loss.png")],
        "per_class": per_class_rows(OLD["test"]["per_class"], NEW["test"]["per_class"]),
    }
    return build_report(**(arguments | overrides))


# --- pure functions -------------------------------------------------------------------------------


def test_flatten_names_numeric_leaves_like_dvc_metrics_diff() -> None:
    flat = flatten({"a": {"b": 1, "c": {"d": 0.5}}, "flag": True, "name": "x"})
    assert flat == {"a.b": 1.0, "a.c.d": 0.5}


def test_metric_rows_are_sorted_scalars_without_per_class() -> None:
    rows = metric_rows(OLD, NEW)
    assert [row.name for row in rows] == [
        "test.accuracy",
        "test.loss",
        "test.macro_f1",
        "val.accuracy",
        "val.loss",
    ]
    accuracy = rows[0]
    assert (accuracy.old, accuracy.new) == (0.79, 0.75)
    assert accuracy.delta == pytest.approx(-0.04)


def test_rows_missing_on_one_side_have_no_delta() -> None:
    rows = metric_rows({"test": {"accuracy": 0.5}}, {"test": {"accuracy": 0.6, "top5": 0.9}})
    assert rows[1] == MetricRow("test.top5", None, 0.9)
    assert rows[1].delta is None
    text = report(old={"test": {"accuracy": 0.5}}, new={"test": {"accuracy": 0.6, "top5": 0.9}})
    assert table(text, "Metric")["test.top5"] == ["—", "0.9000", "—"]


def test_per_class_rows_are_sorted_by_class_name() -> None:
    rows = per_class_rows(OLD["test"]["per_class"], NEW["test"]["per_class"])
    assert rows == [MetricRow("Bag", 0.5, 0.625), MetricRow("Trouser", 0.9, 0.9)]


def test_per_class_scores_come_from_the_table_or_an_older_revisions_metrics() -> None:
    table = [{"label": 1, "class": "Trouser", "f1": 0.9}, {"label": 8, "class": "Bag", "f1": 0.6}]
    assert per_class_scores(table, NEW) == {"Trouser": table[0], "Bag": table[1]}
    assert per_class_scores(None, OLD) == OLD["test"]["per_class"]  # before per_class.json existed
    assert per_class_scores(None, {"test": {"accuracy": 0.5}}) == {}


def test_report_has_old_new_and_delta_with_fixed_decimals() -> None:
    text = report()
    assert text.startswith(MARKER + "\n# Model review\n")
    assert "against base `main` (`0123456`)" in text
    metrics = table(text, "Metric")
    assert metrics["test.accuracy"] == ["0.7900", "0.7500", "-0.0400"]
    assert metrics["val.loss"] == ["0.5000", "0.4500", "-0.0500"]
    assert metrics["val.accuracy"] == ["0.8000", "0.8100", "+0.0100"]
    per_class = table(text, "Class")
    assert per_class == {"Bag": ["0.5000", "0.6250", "+0.1250"], "Trouser": ["0.9000", "0.9000", "0.0000"]}
    assert "<details>\n<summary>Per-class F1 (test set)</summary>" in text
    assert table(text, "Param") == {"train.epochs": ["20", "3"]}
    assert "![Loss per epoch](reports/train/loss.png)" in text
    assert "`python -m pipeline plots diff main`" in text
    assert "Regression gate" in text and "Off:" in text


def test_report_is_deterministic_whatever_the_key_order() -> None:
    shuffled_old = json.loads(json.dumps(OLD, sort_keys=True))
    shuffled_new = {key: NEW[key] for key in reversed(list(NEW))}
    assert report() == report(old=shuffled_old, new=shuffled_new)
    assert "-0.0000" not in report(old={"val": {"loss": 0.3}}, new={"val": {"loss": 0.3 - 1e-12}})


def test_params_table_shows_values_as_yaml_does_and_escapes_pipes() -> None:
    changes = param_changes(
        {
            "params.yaml": {
                "train.model.dense.hidden_units": {"old": [100], "new": [256, 128]},
                "train.learning_rate": {"old": None, "new": 0.001},
                "train.optimizer": {"old": "adam", "new": "sgd"},
            },
            "other.yaml": {"a|b": {"old": True, "new": False}},
        }
    )
    assert [change.name for change in changes] == [
        "other.yaml:a|b",
        "train.learning_rate",
        "train.model.dense.hidden_units",
        "train.optimizer",
    ]
    rows = table(report(params=changes), "Param")
    assert rows["train.model.dense.hidden_units"] == ["[100]", "[256, 128]"]
    assert rows["train.learning_rate"] == ["null", "0.001"]
    assert rows["train.optimizer"] == ["adam", "sgd"]
    assert "| `other.yaml:a\\|b` | true | false |" in report(params=changes)
    assert "No params changed." in report(params=[])


@pytest.mark.parametrize(
    ("review", "passed"),
    [
        (ReviewParams(), [True, True]),
        (ReviewParams(min_test_accuracy=0.75), [True, True]),
        (ReviewParams(min_test_accuracy=0.76), [False, True]),
        (ReviewParams(max_test_accuracy_drop=0.04), [True, True]),  # 0.79 -> 0.75 is exactly the cap
        (ReviewParams(max_test_accuracy_drop=0.039), [True, False]),
        (ReviewParams(min_test_accuracy=0.8, max_test_accuracy_drop=0.01), [False, False]),
    ],
)
def test_gate_checks(review: ReviewParams, passed: list[bool]) -> None:
    checks = gate_checks(OLD, NEW, review)
    assert [check.passed for check in checks] == passed
    assert [check.param for check in checks] == ["review.min_test_accuracy", "review.max_test_accuracy_drop"]


def test_failed_gate_is_named_at_the_top_and_in_its_table() -> None:
    checks = gate_checks(OLD, NEW, ReviewParams(min_test_accuracy=0.8, max_test_accuracy_drop=0.01))
    text = report(checks=checks)
    headline = next(line for line in text.splitlines() if line.startswith("**Regression gate failed:**"))
    assert "test.accuracy 0.7500 is below review.min_test_accuracy 0.8000" in headline
    assert "dropped 0.0400 (0.7900 -> 0.7500), more than review.max_test_accuracy_drop 0.0100" in headline

    gate = table(text, "Check")
    assert gate["review.min_test_accuracy"] == ["0.8000", "0.7500", "**FAIL**"]
    assert gate["review.max_test_accuracy_drop"] == ["0.0100", "0.0400", "**FAIL**"]


def test_a_rise_in_accuracy_reads_as_a_rise() -> None:
    (_, drop) = gate_checks(NEW, OLD, ReviewParams(max_test_accuracy_drop=0.01))
    assert drop.passed
    assert drop.message == (
        "test.accuracy rose 0.0400 (0.7500 -> 0.7900), within review.max_test_accuracy_drop 0.0100"
    )


def test_gate_with_missing_accuracy_fails_only_when_on() -> None:
    assert all(check.passed for check in gate_checks({}, {}, ReviewParams()))
    checks = gate_checks({}, {}, ReviewParams(min_test_accuracy=0.5))
    assert checks[0] == GateCheck(
        "review.min_test_accuracy", 0.5, None, False, "test.accuracy is missing from the new metrics"
    )


def group_of_runs(values: list[float], configuration: str = "one") -> list[Run]:
    """Runs of one configuration, seeds 42, 43...: a score, its complement and a class's F1."""
    return [
        Run(f"r{seed}", seed, configuration, {"score.up": value, "score.down": 1 - value}, {"Bag": value})
        for seed, value in enumerate(values, start=42)
    ]


def verdicts(markdown: str, header: str) -> set[str]:
    return {row[-1].strip("*") for row in table(markdown, header).values()}


@pytest.mark.parametrize(
    ("base", "new", "headline"),
    [
        # the same runs on both sides (`--base HEAD` of a committed group): every row "no change"
        ([0.80, 0.81, 0.82], [0.80, 0.81, 0.82], "**No change: the same configuration.**"),
        # other runs of the same configuration (another CPU's kernels): whatever the intervals say
        ([0.80, 0.81, 0.82], [0.85, 0.86, 0.87], "**Within seed noise: the same configuration.**"),
        # one run a side, equal numbers, and unequal ones
        ([0.80], [0.80], "**No change: the same configuration.**"),
        ([0.80], [0.79], "**Within seed noise: the same configuration.**"),
    ],
)
def test_the_same_configurations_headline_says_what_its_rows_say(
    base: list[float], new: list[float], headline: str
) -> None:
    groups = Groups(group_of_runs(base), group_of_runs(new))
    assert groups.same_configuration
    old, now = ({"score": {"up": side[0], "down": 1 - side[0]}} for side in (base, new))  # own runs
    text = build_report(base="HEAD", base_commit=None, old=old, new=now, params=[], checks=[], groups=groups)
    assert text.count("the same configuration.**") == 1 and headline in text
    said = {row.difference.verdict for row in (*groups.metrics, *groups.classes)}
    assert said == ({"no change"} if "No change" in headline else {"within seed noise"})
    if groups.seeded:  # the tables print the same verdicts
        assert verdicts(text, "Metric") == verdicts(text, "Class") == said
    else:
        changes = {row[-1] for row in table(text, "Metric").values()}
        assert (changes == {"0.0000"}) == ("No change" in headline)


def test_stale_workspace_is_warned_about() -> None:
    text = report(stale_stages=["train", "evaluate"])
    assert "not up to date (`dvc status`: evaluate, train)" in text


def test_image_links(tmp_path: Path) -> None:
    png = Path("reports/train/loss.png")
    assert image_link(png, Path("."), Path("."), None) == "reports/train/loss.png"
    assert image_link(png, Path("."), Path("reports"), None) == "train/loss.png"
    assert image_link(png, Path("."), Path("out"), None) == "../reports/train/loss.png"
    url = image_link(png, Path("."), Path("out"), "https://example.invalid/o/r/raw/abc/")
    assert url == "https://example.invalid/o/r/raw/abc/reports/train/loss.png"


@pytest.mark.parametrize(("command", "options"), [("report", ["--base", "--output"]), ("verify", ["STAGE"])])
def test_review_commands_never_import_tensorflow(command: str, options: list[str]) -> None:
    """Neither the commands nor any module of the review library (``pipeline.review``) they use."""
    code = (
        "import importlib, pkgutil, sys\n"
        "from pipeline.__main__ import main\n"
        "try:\n"
        f"    main([{command!r}, '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "import pipeline.review\n"
        "for module in pkgutil.iter_modules(pipeline.review.__path__):\n"
        "    importlib.import_module(f'pipeline.review.{module.name}')\n"
        "heavy = sorted(m for m in ('tensorflow', 'keras') if m in sys.modules)\n"
        "sys.exit(f'imported {heavy}' if heavy else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert all(option in result.stdout for option in options)


# --- the layering: no import circle, and no module imports a command as a library ----------------


def project_modules() -> dict[str, Path]:
    """Every module of ``pipeline`` and ``flows`` by dotted name (a package by its own name)."""
    modules = {}
    for package in ("pipeline", "flows"):
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            parts = path.relative_to(REPO_ROOT).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def import_graph() -> networkx.DiGraph:
    """Module -> the project modules it imports, at the top or inside a function (``from a import b``:
    ``a``, and ``a.b`` where that is a module)."""
    modules = project_modules()
    graph = networkx.DiGraph()
    graph.add_nodes_from(modules)
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{name}: a relative import"
                base = node.module or ""
                targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            else:
                continue
            graph.add_edges_from((name, target) for target in targets if target in modules and target != name)
    return graph


@pytest.fixture(scope="module")
def imports() -> networkx.DiGraph:
    return import_graph()


def test_no_import_circle(imports: networkx.DiGraph) -> None:
    assert list(networkx.simple_cycles(imports)) == []


def test_no_module_imports_a_command_as_a_library(imports: networkx.DiGraph) -> None:
    """Commands import commands (``project``, ``verify``, the ``run_command`` guard) and
    ``pipeline.__main__`` runs them by name; the review library sits on ``pipeline.core`` alone."""
    commands = [(a, b) for a, b in imports.edges if b.startswith("pipeline.commands")]
    assert commands, "the graph found no import of a command: the test reads nothing"
    assert [(a, b) for a, b in commands if not a.startswith("pipeline.commands")] == []
    review = {b for a, b in imports.edges if a.startswith("pipeline.review")}
    assert {b for b in review if not b.startswith(("pipeline.core", "pipeline.review"))} == set()


# --- integration: a real project, real DVC --------------------------------------------------------


def run_report(project: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], str | None]:
    """``python -m pipeline report --output review.md ARGS``, checking it never loads TensorFlow."""
    code = (
        "import sys\n"
        "from pipeline.__main__ import main\n"
        "status = main(sys.argv[1:])\n"
        "assert 'tensorflow' not in sys.modules, 'the report imported TensorFlow'\n"
        "sys.exit(status)\n"
    )
    output = project / "review.md"
    output.unlink(missing_ok=True)
    result = subprocess.run(
        [sys.executable, "-c", code, "report", "--output", "review.md", *args],
        cwd=project,
        capture_output=True,
        text=True,
    )
    assert "the report imported TensorFlow" not in result.stderr
    return result, output.read_text() if output.exists() else None


def metrics_at(project: Path, rev: str | None) -> dict:
    """The run's numbers at ``rev`` (None: the workspace): evaluate's test.*, train's kept epoch's val.*."""
    files = [f"reports/{stage}/metrics.json" for stage in ("evaluate", "train")]
    if rev is None:
        evaluated, trained = (json.loads((project / file).read_text()) for file in files)
    else:
        evaluated, trained = (
            json.loads(run("git", "show", f"{rev}:{file}", cwd=project).stdout) for file in files
        )
    return evaluated | trained


def per_class_at(project: Path, rev: str) -> list[dict]:
    return json.loads(
        run("git", "show", f"{rev}:reports/evaluate/plots/custom/per_class.json", cwd=project).stdout
    )


@pytest.mark.integration
def test_report_against_a_committed_run(project: Path) -> None:
    first_commit = run("git", "rev-parse", "HEAD", cwd=project).stdout.strip()
    dvc("repro", cwd=project)
    run("git", "add", "-A", cwd=project)
    run("git", "commit", "-q", "-m", "baseline run", cwd=project)
    run("git", "checkout", "-q", "-b", "change", cwd=project)
    set_params(project, {"train.epochs": 1})
    dvc("repro", cwd=project)

    result, text = run_report(project, "--base", "main")
    assert result.returncode == 0, result.stderr
    assert text is not None

    old = metrics_at(project, "main")
    new = metrics_at(project, None)
    metrics, per_class = table(text, "Metric"), table(text, "Class")
    for name in ("test.accuracy", "test.loss", "test.macro_f1", "val.accuracy", "val.loss"):
        split, key = name.split(".")
        expected_delta = f"{new[split][key] - old[split][key]:+.4f}"
        expected_delta = "0.0000" if float(expected_delta) == 0 else expected_delta
        assert metrics[name] == [f"{old[split][key]:.4f}", f"{new[split][key]:.4f}", expected_delta], name
    per_class_table = json.loads((project / "reports/evaluate/plots/custom/per_class.json").read_text())
    assert per_class == {
        row["class"]: [f"{old_row['f1']:.4f}", f"{row['f1']:.4f}", per_class[row["class"]][2]]
        for old_row, row in zip(per_class_at(project, "main"), per_class_table, strict=True)
    }

    # `dvc metrics diff` sees the same numbers.
    diff = json.loads(dvc("metrics", "diff", "main", "--all", "--json", cwd=project).stdout)
    diff = diff["reports/evaluate/metrics.json"] | diff["reports/train/metrics.json"]
    assert len(diff) == 5, "dvc metrics diff found other numbers to compare"
    for name, values in diff.items():
        row = metrics[name]
        assert row[:2] == [f"{values['old']:.4f}", f"{values['new']:.4f}"], name
        if "diff" in values:
            assert float(row[2]) == pytest.approx(values["diff"], abs=1e-4), name

    # ... and `dvc params diff` the same changed params.
    params = table(text, "Param")
    assert params == {"train.epochs": ["3", "1"]}
    dvc_params = json.loads(dvc("params", "diff", "main", "--json", cwd=project).stdout)
    assert dvc_params == {"params.yaml": {"train.epochs": {"old": 3, "new": 1, "diff": -2}}}
    assert "![Loss per epoch](reports/train/plots/images/loss.png)" in text
    # From a subfolder: the project's metrics, --output from there, image links from the report's folder.
    inside = run(sys.executable, "-m", "pipeline", "report", "--output", "review.md", cwd=project / "reports")
    assert "review of the workspace against main -> reports/review.md" in inside.stderr
    assert "![Loss per epoch](train/plots/images/loss.png)" in (project / "reports/review.md").read_text()
    (project / "reports/review.md").unlink()

    # The gate: review.* reruns only the check of the whole params file, and a floor above the new
    # accuracy fails the command.
    new_accuracy, old_accuracy = new["test"]["accuracy"], old["test"]["accuracy"]
    assert new_accuracy < 1.0
    floor = round(new_accuracy + (1.0 - new_accuracy) / 2, 4)
    set_params(project, {"review.min_test_accuracy": floor})
    assert ran_stages(dvc("repro", cwd=project).stdout) == {"ingest"}
    assert json.loads(dvc("status", "--json", cwd=project).stdout) == {}
    result, text = run_report(project, "--base", "main")
    assert result.returncode == 1
    assert "report failed" not in result.stderr  # it was written; the change failed the gate
    assert "the report is written (in review.md); regression gate failed" in result.stderr
    assert f"regression gate failed: test.accuracy {new_accuracy:.4f} is below " in result.stderr
    assert f"review.min_test_accuracy {floor:.4f}" in result.stderr
    assert text is not None and "**FAIL**" in text, "the report is written even when the gate fails"

    drop = old_accuracy - new_accuracy
    cap = round(drop / 2, 4) if drop > 0 else 0.0
    set_params(project, {"review.min_test_accuracy": None, "review.max_test_accuracy_drop": cap})
    result, _ = run_report(project, "--base", "main")
    assert result.returncode == (1 if drop > 0 else 0), result.stderr
    if drop > 0:
        assert "review.max_test_accuracy_drop" in result.stderr
    set_params(project, {"review.max_test_accuracy_drop": round(max(drop, 0.0) + 0.01, 4)})
    result, text = run_report(project, "--base", "main")
    assert result.returncode == 0, result.stderr
    assert text is not None and table(text, "Check")["review.max_test_accuracy_drop"][2] == "pass"
    assert "review.max_test_accuracy_drop" in table(text, "Param"), "a changed gate is reviewed too"

    # A stale workspace is flagged; a base without metrics is an error with a clear message.
    set_params(project, {"train.epochs": 2})
    result, text = run_report(project, "--base", "main")
    assert result.returncode == 0, result.stderr
    assert text is not None and "the pipeline is not up to date (`dvc status`: ingest, train)" in text
    result, text = run_report(project, "--base", first_commit)
    assert result.returncode == 1
    message = f"base '{first_commit}' has no metrics: reports/evaluate/metrics.json is not there"
    assert message in result.stderr
    assert text is None
    result, _ = run_report(project, "--base", "no-such-branch")
    assert result.returncode == 1
    assert "unknown Git revision 'no-such-branch'" in result.stderr


@pytest.mark.integration
def test_experiments_run_show_and_diff(project: Path) -> None:
    """The pipeline as DVC experiments (``dvc exp run -S``), compared as reviewers compare them."""
    ran = dvc("exp", "run", "-n", "two-epochs", "-S", "train.epochs=2", cwd=project)
    assert "Ran experiment(s): two-epochs" in ran.stdout
    dvc("exp", "run", "-n", "one-epoch", "-S", "train.epochs=1", cwd=project)

    shown = json.loads(dvc("exp", "show", "--json", cwd=project).stdout)
    experiments = {
        rev["name"]: rev["data"]
        for baseline in shown
        for experiment in baseline.get("experiments") or []
        for rev in experiment["revs"]
    }
    assert {"two-epochs", "one-epoch"} <= set(experiments)
    for name, epochs in (("two-epochs", 2), ("one-epoch", 1)):
        data = experiments[name]
        assert data["params"]["params.yaml"]["data"]["train"]["epochs"] == epochs
        metrics = data["metrics"]["reports/evaluate/metrics.json"]["data"]
        assert 0.0 <= metrics["test"]["accuracy"] <= 1.0

    diff = json.loads(dvc("exp", "diff", "one-epoch", "two-epochs", "--all", "--json", cwd=project).stdout)
    assert diff["params"]["params.yaml"]["train.epochs"] == {"old": 1, "new": 2, "diff": 1}
    accuracy = diff["metrics"]["reports/evaluate/metrics.json"]["test.accuracy"]
    old_metrics, new_metrics = (
        experiments[name]["metrics"]["reports/evaluate/metrics.json"]["data"]
        for name in ("one-epoch", "two-epochs")
    )
    assert (accuracy["old"], accuracy["new"]) == (
        old_metrics["test"]["accuracy"],
        new_metrics["test"]["accuracy"],
    )


@pytest.mark.integration
def test_report_refuses_an_output_that_dvc_tracks(project: Path) -> None:
    metrics = project / "reports/evaluate/metrics.json"
    metrics.parent.mkdir(parents=True)
    metrics.write_text('{"test": {"accuracy": 0.9}}')
    (project / "notes.txt").write_text("kept by DVC\n")
    dvc("add", "-q", "notes.txt", cwd=project)
    for output, tracked in (
        ("reports/evaluate/metrics.json", "reports/evaluate/metrics.json (evaluate)"),
        ("data/raw/review.md", "data/raw (ingest)"),
        ("notes.txt", "notes.txt (notes.txt.dvc)"),
    ):
        result, _ = run_report(project, "--output", output)  # the last --output counts
        assert result.returncode == 1
        (line,) = [line for line in result.stderr.splitlines() if " ERROR " in line]
        assert f"report failed: --output {output}: DVC tracks {tracked}; write the report elsewhere" in line
    inside, _ = run_report(project / "reports", "--output", "evaluate/metrics.json")  # from a subfolder
    assert "--output reports/evaluate/metrics.json: DVC tracks" in inside.stderr
    assert metrics.read_text() == '{"test": {"accuracy": 0.9}}'
    assert (project / "notes.txt").read_text() == "kept by DVC\n"
    assert not (project / "data/raw/review.md").exists()
