"""The command line DVC runs: one-line errors, exit codes, and no TensorFlow where none is needed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from conftest import REPO_ROOT, run
from pipeline.core.paths import Paths


def pipeline_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run(sys.executable, "-m", "pipeline", *args, cwd=cwd, check=False)


def test_bad_params_fail_before_any_work_with_one_line(tmp_path, params_file) -> None:
    params = yaml.safe_load(params_file.read_text())
    params["train"]["optimizer"] = "lion"
    params_file.write_text(yaml.safe_dump(params))
    result = pipeline_cli("ingest", "--params", str(params_file), cwd=tmp_path)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1, result.stderr
    assert "ingest failed" in errors[0] and "train.optimizer" in errors[0] and "'lion'" in errors[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists()


def test_unreachable_sources_fail_with_every_source_and_the_fix(tmp_path, params_file) -> None:
    spec = Paths(tmp_path).dataset_spec
    sha256 = yaml.safe_load(spec.read_text())["sha256"]
    sources = [str(tmp_path / "nowhere"), "http://127.0.0.1:9/fashion"]
    spec.write_text(yaml.safe_dump({"sources": sources, "sha256": sha256}))
    result = pipeline_cli("ingest", "--params", str(params_file), cwd=tmp_path)
    assert result.returncode == 1
    assert f"{tmp_path / 'nowhere'}: neither" in result.stderr
    assert "http://127.0.0.1:9/fashion: " in result.stderr
    assert "apt-get install dataset-fashion-mnist" in result.stderr


def test_missing_input_is_a_clear_error(tmp_path, params_file) -> None:
    result = pipeline_cli("preprocess", "--params", str(params_file), cwd=tmp_path)
    assert result.returncode == 1
    assert "preprocess failed" in result.stderr and "data/raw" in result.stderr


def test_ingest_and_preprocess_never_import_tensorflow(tmp_path, params_file) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        from pipeline.__main__ import main
        assert main(["ingest", "--params", {str(params_file)!r}]) == 0
        assert main(["preprocess", "--params", {str(params_file)!r}]) == 0
        loaded = sorted(m for m in ("tensorflow", "keras") if m in sys.modules)
        print("heavy modules:", loaded)
        """
    )
    result = run(sys.executable, "-c", script, cwd=tmp_path)
    assert "heavy modules: []" in result.stdout
    assert (tmp_path / "data/processed/train.npz").is_file()


def test_tensorflow_gets_its_onednn_kernels_unless_the_environment_says_otherwise(tmp_path) -> None:
    """TensorFlow reads ``TF_ENABLE_ONEDNN_OPTS`` at import; ``pipeline.model``, the only way the
    stages import it, sets it to 1 first where it is unset (TensorFlow's own default is on only on CPUs
    with VNNI, bfloat16 or AMX)."""
    show = (  # a stand-in for Keras: what matters is the variable before it loads, not TensorFlow itself
        "import os, sys, types; sys.modules['keras'] = types.ModuleType('keras'); import pipeline.model; "
        "print(os.environ['TF_ENABLE_ONEDNN_OPTS'])"
    )
    unset = {key: value for key, value in os.environ.items() if key != "TF_ENABLE_ONEDNN_OPTS"}
    for env, expected in ((unset, "1"), ({**unset, "TF_ENABLE_ONEDNN_OPTS": "0"}, "0")):
        shown = subprocess.run(
            [sys.executable, "-c", show], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert shown.stdout.strip() == expected, shown.stderr


def test_predict_checks_its_arguments_and_model_path_before_tensorflow_loads(tmp_path) -> None:
    code = (
        "import sys\n"
        "from pipeline.__main__ import main\n"
        "assert main(['predict', 'a.png', '--top-k', '11']) == 1\n"
        "assert main(['predict', 'a.png', '--model', 'none.keras']) == 1\n"
        "assert 'tensorflow' not in sys.modules, 'predict loaded TensorFlow first'\n"
    )
    (tmp_path / "a.png").write_bytes((REPO_ROOT / "reports/preprocess/samples.png").read_bytes())
    result = run(sys.executable, "-c", code, cwd=tmp_path)
    assert "--top-k must be 1 to 10; got 11" in result.stderr
    assert "none.keras: no such model file" in result.stderr


@pytest.mark.integration
def test_plots_without_data_or_of_an_unknown_revision_is_one_error_line(tmp_path) -> None:
    run("git", "init", "-q", cwd=tmp_path)
    run(sys.executable, "-m", "dvc", "init", "-q", cwd=tmp_path)

    def plots(*args: str) -> subprocess.CompletedProcess[str]:
        return run(sys.executable, "-m", "pipeline", "plots", *args, cwd=tmp_path, check=False)

    nothing = plots("show")  # no plots in dvc.yaml (none there at all): DVC writes no page
    assert nothing.returncode == 1 and "no plots to draw: run `dvc repro` first" in nothing.stderr
    (tmp_path / "dvc.yaml").write_text("plots:\n  - history.csv:\n      x: epoch\n      y: loss\n")
    (tmp_path / "history.csv").write_text("epoch,loss\n1,0.5\n2,0.4\n")
    run("git", "add", "-A", cwd=tmp_path)
    run("git", "commit", "-q", "-m", "plots", cwd=tmp_path)
    unknown = plots("diff", "no-such-rev")
    assert unknown.returncode == 1
    assert "unknown Git revision 'no-such-rev'" in unknown.stderr
    assert "Traceback" not in nothing.stderr + unknown.stderr
    shown = plots("show")
    assert shown.returncode == 0 and (tmp_path / "dvc_plots/index.html").is_file()


@pytest.mark.integration
def test_plots_missing_a_declared_plot_is_an_error_naming_it(reproduced: Path) -> None:
    kept = reproduced.parent / "train-reports"
    shutil.move(reproduced / "reports" / "train", kept)
    some = pipeline_cli("plots", "show", cwd=reproduced)
    assert some.returncode == 1
    (line,) = [line for line in some.stderr.splitlines() if " ERROR " in line]
    assert "lacks plots that dvc.yaml declares" in line
    assert "Loss per epoch, Accuracy per epoch, reports/train/plots/images; run `dvc repro`" in line

    shutil.rmtree(reproduced / "reports")
    none = pipeline_cli("plots", "show", cwd=reproduced)  # DVC writes a page of nothing and exits 0
    assert none.returncode == 1
    for plot in ("Confusion matrix (test set)", "Per-class F1 (test set)", "reports/preprocess/samples.png"):
        assert plot in none.stderr
    assert "Traceback" not in some.stderr + none.stderr


@pytest.mark.integration
def test_plots_from_a_subfolder_draw_the_projects_plots(reproduced: Path) -> None:
    page = reproduced / "dvc_plots" / "index.html"
    assert pipeline_cli("plots", "show", cwd=reproduced).returncode == 0
    from_root = page.read_bytes()
    page.unlink()
    from_reports = pipeline_cli("plots", "show", cwd=reproduced / "reports")
    assert from_reports.returncode == 0, from_reports.stderr
    assert page.read_bytes() == from_root  # the same plots, their files named from the project's root
    elsewhere = pipeline_cli("plots", "show", "--out", "here", cwd=reproduced / "reports")
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert (reproduced / "reports" / "here" / "index.html").read_bytes() == from_root


@pytest.mark.integration
def test_validate_and_predict_from_a_subfolder_use_the_projects_files(reproduced: Path) -> None:
    """As the other commands: the project's params.yaml, dataset spec and model from any folder below
    its root; the paths a user gives (inputs, --model, --params) still name files from that folder."""
    from PIL import Image

    data, deeper = reproduced / "data", reproduced / "reports" / "evaluate"
    valid = pipeline_cli("validate", cwd=deeper)
    assert valid.returncode == 0, valid.stderr
    assert "../../params.yaml and ../../datasets/fashion-mnist.yaml are valid" in valid.stderr
    params = yaml.safe_load((reproduced / "params.yaml").read_text())
    params["train"]["epochs"] = 0
    (data / "mine.yaml").write_text(yaml.safe_dump(params))
    mine = pipeline_cli("validate", "--params", "mine.yaml", cwd=data)  # data/mine.yaml, not the root's
    assert mine.returncode == 1 and "mine.yaml" in mine.stderr and "train.epochs" in mine.stderr, mine.stderr

    Image.new("L", (28, 28)).save(data / "a.png")
    predicted = pipeline_cli("predict", "a.png", cwd=data)
    assert predicted.returncode == 0, predicted.stderr
    assert predicted.stdout.startswith("a.png\t") and predicted.stdout.count("\n") == 1
    explicit = pipeline_cli("predict", "a.png", "--model", "../models/model.keras", cwd=data)
    assert explicit.returncode == 0, explicit.stderr
    assert explicit.stdout == predicted.stdout
