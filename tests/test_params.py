"""The params schema: the repository's params.yaml is valid, bad values fail naming the key."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO_ROOT
from pipeline.core.params import (
    ParamsError,
    leaf_values,
    load_dataset_spec,
    load_params,
    read_raw_params,
    validate_params,
)
from pipeline.core.paths import Paths


def write(tmp_path: Path, params: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.fixture
def raw_params() -> dict:
    return yaml.safe_load((REPO_ROOT / "params.yaml").read_text())


def test_repository_params_reproduce_the_tutorials_best_run() -> None:
    params = load_params(REPO_ROOT / "params.yaml")
    assert params.train.model.dense.hidden_units == [100]
    assert params.train.model.dense.activation == "relu"
    assert params.train.model.dense.dropout == 0.3
    assert params.train.optimizer == "adam"
    assert (params.train.epochs, params.train.batch_size) == (20, 32)
    assert (params.preprocess.test_size, params.preprocess.random_state) == (0.2, 42)
    assert load_dataset_spec(Paths(REPO_ROOT).dataset_spec).sources[0] == "/usr/share/datasets/fashion-mnist"


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [
        ("train", "optimizer", "lion", r"train\.optimizer: .*'sgd', 'adam', 'rmsprop' or 'adamw'.*'lion'"),
        ("train", "epochs", 0, r"train\.epochs: .*greater than or equal to 1"),
        ("train", "epochs", "ten", r"train\.epochs: .*valid integer.*'ten'"),
        ("train", "batch_size", 2.5, r"train\.batch_size"),
        ("train", "validation_batch_size", 0, r"train\.validation_batch_size: .*greater than or equal to 1"),
        ("preprocess", "test_size", 1.0, r"preprocess\.test_size: .*less than 1"),
        ("preprocess", "stratify", "yes", r"preprocess\.stratify"),
        ("evaluate", "batch_size", -1, r"evaluate\.batch_size"),
        ("train", "learning_rate", 0, r"train\.learning_rate"),
    ],
)
def test_invalid_value_names_the_key(tmp_path, raw_params, section, key, value, expected) -> None:
    raw_params.setdefault(section, {})[key] = value
    with pytest.raises(ParamsError, match=expected):
        load_params(write(tmp_path, raw_params))


@pytest.mark.parametrize("dropout", [1.0, -0.1, 1.5])
def test_dropout_outside_unit_interval_fails(tmp_path, raw_params, dropout) -> None:
    raw_params["train"]["model"]["dense"]["dropout"] = dropout
    with pytest.raises(ParamsError, match=r"train\.model\.dense\.dropout"):
        load_params(write(tmp_path, raw_params))


def test_activation_lists_the_allowed_values(tmp_path, raw_params) -> None:
    raw_params["train"]["model"]["dense"]["activation"] = "gelu"
    with pytest.raises(ParamsError, match=r"train\.model\.dense\.activation: .*'relu', 'sigmoid' or 'tanh'"):
        load_params(write(tmp_path, raw_params))


def test_softmax_only_net_needs_zero_dropout(tmp_path, raw_params) -> None:
    raw_params["train"]["model"]["dense"]["hidden_units"] = []
    with pytest.raises(ParamsError, match=r"train\.model\.dense: .*dropout .* must be 0"):
        load_params(write(tmp_path, raw_params))
    raw_params["train"]["model"]["dense"]["dropout"] = 0.0
    assert load_params(write(tmp_path, raw_params)).train.model.dense.hidden_units == []


def test_missing_and_unknown_keys(tmp_path, raw_params) -> None:
    del raw_params["train"]["epochs"]
    raw_params["train"]["epoch"] = 3
    with pytest.raises(ParamsError) as error:
        load_params(write(tmp_path, raw_params))
    assert "train.epochs: missing" in str(error.value)
    assert "train.epoch: unknown key" in str(error.value)


def test_dataset_spec_checksums_must_cover_exactly_the_four_files(tmp_path) -> None:
    spec = yaml.safe_load(Paths(REPO_ROOT).dataset_spec.read_text())
    spec["sha256"].pop("t10k-labels-idx1-ubyte")
    with pytest.raises(ParamsError, match=r"params.yaml: invalid dataset spec: .*t10k-labels-idx1-ubyte"):
        load_dataset_spec(write(tmp_path, spec))
    spec["sha256"]["t10k-labels-idx1-ubyte"] = "not-a-hash"
    with pytest.raises(ParamsError, match=r"sha256\.t10k-labels-idx1-ubyte"):
        load_dataset_spec(write(tmp_path, spec))
    spec["sha256"]["t10k-labels-idx1-ubyte"] = "0" * 64
    spec["sources"] = ["ftp://example.com/fashion"]
    with pytest.raises(ParamsError, match=r"sources: .*'ftp://example.com/fashion': sources are directories"):
        load_dataset_spec(write(tmp_path, spec))
    spec["sources"] = [""]
    with pytest.raises(ParamsError, match=r"sources: .*an empty source"):
        load_dataset_spec(write(tmp_path, spec))
    with pytest.raises(ParamsError, match="dataset spec not found"):
        load_dataset_spec(tmp_path / "missing.yaml")


def test_dataset_values_are_not_params(raw_params) -> None:
    """Sources and checksums live in the dataset spec, so `dvc exp show` shows what users vary."""
    raw_params["ingest"] = {"sources": ["/srv/fashion"]}
    with pytest.raises(ParamsError, match="ingest.sources: unknown key"):
        validate_params(raw_params)


def test_malformed_or_missing_file(tmp_path) -> None:
    bad = tmp_path / "params.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "absent.yaml")


def test_overrides_are_validated_like_the_file() -> None:
    params = load_params(REPO_ROOT / "params.yaml", {"train.epochs": 3, "train.model.dense.dropout": "0.1"})
    assert params.train.epochs == 3
    assert params.train.model.dense.dropout == 0.1
    with pytest.raises(ParamsError, match=r"unknown param 'train\.epoch'.*train\.epochs"):
        load_params(REPO_ROOT / "params.yaml", {"train.epoch": 3})
    with pytest.raises(ParamsError, match=r"train\.optimizer"):
        load_params(REPO_ROOT / "params.yaml", {"train.optimizer": "lion"})


def test_values_are_read_as_dvc_reads_them(tmp_path, raw_params) -> None:
    """YAML 1.2, as DVC's ruamel.yaml: ``1e-3`` is a number (PyYAML's YAML 1.1 would say a string)."""
    path = write(tmp_path, raw_params)
    path.write_text(path.read_text().replace("learning_rate: null", "learning_rate: 1e-3"))
    assert load_params(path).train.learning_rate == 0.001
    assert load_params(path, {"train.learning_rate": "5e-4"}).train.learning_rate == 0.0005


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("!!python/object/apply:os.system ['true']", r"override train\.epochs: not a YAML value"),
        ("3\nnot: one line", r"override train\.epochs: the value must be one line"),
        ("[1, 2", r"override train\.epochs: not a YAML value"),
    ],
)
def test_an_odd_override_is_one_clear_error_and_never_executed(value: str, message: str) -> None:
    with pytest.raises(ParamsError, match=message):
        load_params(REPO_ROOT / "params.yaml", {"train.epochs": value})


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [
        ("train", "learning_rate", float("nan"), r"train\.learning_rate: Input should be a finite number"),
        ("train", "epochs", 10_000_000, r"train\.epochs: Input should be less than or equal to 1000"),
        ("train", "seed", -1, r"train\.seed: Input should be greater than or equal to 0"),
        (
            "preprocess",
            "random_state",
            2**32,
            r"preprocess\.random_state: .*less than or equal to 4294967295",
        ),
        ("ingest", "max_mib", 0, r"ingest\.max_mib: Input should be greater than or equal to 1"),
    ],
)
def test_values_that_can_only_be_mistakes_are_rejected(
    tmp_path, raw_params, section, key, value, expected
) -> None:
    raw_params.setdefault(section, {})[key] = value
    with pytest.raises(ParamsError, match=expected):
        load_params(write(tmp_path, raw_params))


def test_a_malformed_file_is_one_line(tmp_path) -> None:
    bad = tmp_path / "params.yaml"
    bad.write_text("train:\n  epochs: 3\n  epochs: 4\n")  # a duplicate key, as DVC refuses it
    with pytest.raises(ParamsError, match="not valid YAML") as error:
        load_params(bad)
    assert "\n" not in str(error.value)


def test_one_override_switches_the_model_family() -> None:
    params = load_params(REPO_ROOT / "params.yaml", {"train.model.architecture": "cnn"})
    assert params.train.model.family == params.train.model.cnn
    with pytest.raises(ParamsError, match=r"train\.model\.architecture: .*'dense' or 'cnn'.*'rnn'"):
        load_params(REPO_ROOT / "params.yaml", {"train.model.architecture": "rnn"})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"train.model.cnn.filters": [8] * 5}, r"train\.model\.cnn: .*5 blocks; each halves the 28x28 maps"),
        ({"train.model.cnn.filters": []}, r"train\.model\.cnn\.filters: .*at least 1 item"),
        ({"train.model.cnn.dense_units": 0}, r"train\.model\.cnn: .*dense_dropout .* must be 0"),
        (
            {"train.model.cnn.precision": "float16"},
            r"train\.model\.cnn\.precision: .*'float32', 'mixed_bfloat16' or 'mixed_float16'",
        ),
        (
            {"train.model.cnn.augment.shift": 0.9},
            r"train\.model\.cnn\.augment\.shift: .*less than or equal to 0\.5",
        ),
        (
            {"train.learning_rate_schedule": "step"},
            r"train\.learning_rate_schedule: .*'constant' or 'cosine'",
        ),
    ],
)
def test_a_bad_cnn_combination_fails_before_any_work(overrides, message) -> None:
    """Checked whichever family is selected: a preset cannot carry a broken section."""
    with pytest.raises(ParamsError, match=message):
        load_params(REPO_ROOT / "params.yaml", overrides)


@pytest.mark.parametrize("preset", sorted((REPO_ROOT / "presets").glob("*.yaml")), ids=lambda path: path.name)
def test_each_preset_is_valid_and_its_dvc_command_sets_the_same_values(preset: Path) -> None:
    """A preset file and the ``dvc exp run -S ...`` line in its header give the same params."""
    from_file = load_params(REPO_ROOT / "params.yaml", leaf_values(read_raw_params(preset), str(preset)))
    assert from_file.train.model.architecture == "cnn"
    command = next(line for line in preset.read_text().splitlines() if "dvc exp run" in line)
    words = shlex.split(command.lstrip("# "))  # as the shell reads the line
    pairs = dict(words[i + 1].split("=", 1) for i, word in enumerate(words) if word == "-S")
    pairs = {key.removeprefix("++"): value for key, value in pairs.items()}  # `++`: add the key
    assert load_params(REPO_ROOT / "params.yaml", pairs) == from_file


def test_the_params_reference_is_generated_from_the_schema() -> None:
    """``docs/params.md`` is what ``python -m pipeline params-doc`` writes: every key, documented."""
    from pipeline.commands.params_doc import markdown

    expected = markdown(read_raw_params(REPO_ROOT / "params.yaml"))
    assert (REPO_ROOT / "docs/params.md").read_text() == expected, "run `python -m pipeline params-doc`"
    in_file = set(leaf_values(read_raw_params(REPO_ROOT / "params.yaml")))
    documented = {line.split("`")[1] for line in expected.splitlines() if line.startswith("| `")}
    assert (
        in_file < documented and {"train.model.cnn.filters", "review.seeds", "ingest.max_mib"} <= documented
    )
    assert "|  |" not in expected  # no key without a description


def alias_bomb(levels: int = 9) -> str:
    """4 KB of YAML whose aliases expand to 10**levels strings."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for level in range(1, levels):
        lines.append(f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


def validate_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m pipeline validate`` in ``tmp_path``, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "validate", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,  # the alias bomb took 65 s before the cap
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (alias_bomb(), "more than 10,000 values once YAML aliases (*name) are expanded"),
        ("train: {epochs: 3}\n" + "#" * 300_000, "params file is 300,019 bytes; at most 262,144 are read"),
        ("train:\n  epochs: " + "9" * 100_000 + "\n", "not valid YAML: Exceeds the limit (4300 digits)"),
        ("train:\n  epochs: '" + "x" * 1_000_000 + "'\n", "the params file is 1,000,020 bytes"),
    ],
    ids=["alias-bomb", "too-big", "huge-integer", "one-mib-value"],
)
def test_params_files_beyond_limits_are_one_short_line(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "params.yaml").write_text(content)
    result = validate_cli(tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert message in line
    assert len(line) < 500


def test_long_values_are_cut_in_messages(tmp_path: Path, raw_params: dict) -> None:
    raw_params["train"]["optimizer"] = "adam" * 50_000  # 200 KB, under the size cap
    result = validate_cli(tmp_path, "--params", str(write(tmp_path, raw_params)))
    (line,) = result.stderr.splitlines()
    assert "train.optimizer" in line and "(199,922 more characters)" in line
    assert len(line) < 500


def test_a_params_path_that_is_a_folder_is_one_line(tmp_path: Path) -> None:
    result = validate_cli(tmp_path, "--params", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.strip().endswith(f"validate failed: {tmp_path}: the params file is a folder")


def test_a_look_alike_key_says_it_has_non_ascii_letters(tmp_path: Path) -> None:
    text = (REPO_ROOT / "params.yaml").read_text().replace("  epochs:", "  \u0435pochs:", 1)
    (tmp_path / "params.yaml").write_text(text)
    expected = r"train\.еpochs: unknown key \(it has non-ASCII letters: 'е' U\+0435\)"
    with pytest.raises(ParamsError, match=expected):
        load_params(tmp_path / "params.yaml")
