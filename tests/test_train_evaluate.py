"""Train and evaluate on tiny synthetic splits: model shapes, checkpoint, DVCLive's logs, metrics,
determinism."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml

from conftest import processed, tiny_params
from pipeline.core.dataset import CLASS_NAMES
from pipeline.core.params import DenseModelParams, load_params
from pipeline.core.paths import Paths
from pipeline.core.splits import Split, load_split, save_split


@pytest.fixture(autouse=True, scope="module")
def _tensorflow() -> None:
    """TensorFlow and the model code load when this module's first test runs, not at collection."""
    global keras, tf, pd, models, model_file, training, train, evaluate  # noqa: PLW0603
    import keras
    import pandas as pd
    import tensorflow as tf

    from pipeline.model import families as models
    from pipeline.model import files as model_file
    from pipeline.model import training
    from pipeline.stages import evaluate, train


@pytest.fixture(scope="module")
def trained_once(tmp_path_factory, synthetic_source) -> Paths:
    """A project trained with the tiny params, once for the tests that start from a good model."""
    root = tmp_path_factory.mktemp("trained")
    paths = processed(root, synthetic_source)
    params_file = root / "params.yaml"
    params_file.write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    train.run(paths, load_params(params_file).train)
    return paths


@pytest.fixture
def trained(trained_once, tmp_path) -> Paths:
    """A copy of :func:`trained_once` of the test's own."""
    shutil.copytree(trained_once.root, tmp_path, dirs_exist_ok=True)
    return Paths(tmp_path)


@pytest.fixture
def paths(tmp_path, synthetic_source) -> Paths:
    paths = Paths(tmp_path)
    processed(paths.root, synthetic_source)
    return paths


@pytest.mark.parametrize(
    ("hidden_units", "dropout", "layers"),
    [
        ([], 0.0, ["flatten", "output"]),
        ([100], 0.3, ["flatten", "hidden_1", "dropout_1", "output"]),
        ([32, 16], 0.0, ["flatten", "hidden_1", "hidden_2", "output"]),
    ],
)
def test_make_model_covers_the_tutorials_architectures(hidden_units, dropout, layers) -> None:
    params = DenseModelParams(hidden_units=hidden_units, activation="sigmoid", dropout=dropout)
    model = models.make_dense((28, 28), 10, params)
    assert [layer.name for layer in model.layers[1:]] == ["scale_pixels", *layers]
    assert model.input.dtype == "uint8"
    assert model.output_shape == (None, 10)
    assert model.layers[-1].activation.__name__ == "softmax"
    if hidden_units:
        assert model.get_layer("hidden_1").activation.__name__ == "sigmoid"


def test_the_model_scales_uint8_pixels_exactly_as_dividing_by_255(tmp_path) -> None:
    """Bit for bit the tutorial's ``x / 255.0`` as Keras feeds it (float32), also after a save and a
    safe load of the ``.h5``."""
    params = DenseModelParams(hidden_units=[], activation="relu", dropout=0.0)
    model = models.make_dense((16, 16), 10, params)
    model.save(tmp_path / "model.h5")
    restored = keras.models.load_model(tmp_path / "model.h5", safe_mode=True)
    pixels = np.arange(256, dtype=np.uint8).reshape(1, 16, 16)
    for candidate in (model, restored):
        scaling = keras.Model(candidate.input, candidate.get_layer("scale_pixels").output)
        scaled = scaling.predict(pixels, verbose=0)
        assert scaled.dtype == np.float32
        np.testing.assert_array_equal(scaled, (pixels / 255.0).astype(np.float32))
    np.testing.assert_array_equal(model.predict(pixels, verbose=0), restored.predict(pixels, verbose=0))


@pytest.mark.parametrize(
    ("key", "values"),
    [
        ("train.model.dense.steps_per_execution", (1, 100)),
        ("train.validation_batch_size", (7, 4096)),
    ],
)
def test_speed_params_change_the_speed_not_the_weights(paths, params_file, key, values) -> None:
    weights = []
    for value in values:
        params = load_params(params_file, {key: value, "train.epochs": 2})
        train.run(paths, params.train)
        weights.append(keras.models.load_model(paths.model).get_weights())
    for other in weights[1:]:
        for expected, actual in zip(weights[0], other, strict=True):
            np.testing.assert_array_equal(expected, actual)


@pytest.mark.parametrize(
    ("name", "learning_rate", "cls", "expected_rate"),
    [("sgd", None, "SGD", 0.01), ("adam", 0.005, "Adam", 0.005), ("rmsprop", None, "RMSprop", 0.001)],
)
def test_make_optimizer(name, learning_rate, cls, expected_rate) -> None:
    optimizer = training.make_optimizer(name, learning_rate)
    assert isinstance(optimizer, getattr(keras.optimizers, cls))
    assert float(optimizer.learning_rate) == pytest.approx(expected_rate)


def test_adamw_and_the_cosine_schedule() -> None:
    optimizer = training.make_optimizer("adamw", None, "cosine", total_steps=100)
    assert isinstance(optimizer, keras.optimizers.AdamW)
    schedule = optimizer.learning_rate if callable(optimizer.learning_rate) else optimizer._learning_rate
    assert float(schedule(0)) == pytest.approx(0.001)  # AdamW's Keras default
    assert float(schedule(50)) == pytest.approx(0.0005)
    assert float(schedule(100)) == pytest.approx(0.0)


def test_the_optimizer_scales_the_loss_for_float16_only() -> None:
    scaled = training.make_optimizer("adam", None, loss_scaling=True)
    assert isinstance(scaled, keras.optimizers.LossScaleOptimizer)
    assert isinstance(scaled.inner_optimizer, keras.optimizers.Adam)
    assert not isinstance(training.make_optimizer("adam", None), keras.optimizers.LossScaleOptimizer)


def test_the_train_log_names_the_device(caplog: pytest.LogCaptureFixture) -> None:
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        assert training.training_device().startswith("GPU:0 (")
        return
    device = training.training_device("mixed_bfloat16")
    assert device.startswith("the CPU (") and device.endswith(
        f", {os.cpu_count()} cores; no GPU visible to TensorFlow), mixed_bfloat16"
    )
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    named = re.search(r"Model name:\s*(.+)", cpu)
    assert named is None or f"({named.group(1).strip()}," in device  # the CPU as lscpu names it
    with caplog.at_level(logging.WARNING):
        training.training_device("mixed_float16")
    assert "mixed_float16 without a GPU" in caplog.text


@pytest.mark.integration  # a few seconds: float16 compute, loss scaling, float32 export
def test_a_mixed_float16_cnn_trains_with_loss_scaling_and_exports_float32(paths, params_file, caplog) -> None:
    overrides = {
        "train.model.architecture": "cnn",
        "train.model.cnn.filters": [4],
        "train.model.cnn.dense_units": 8,
        "train.model.cnn.precision": "mixed_float16",
        "train.epochs": 1,
    }
    params = load_params(params_file, overrides)
    with caplog.at_level(logging.INFO):
        train.run(paths, params.train)
    assert "training on " in caplog.text and "mixed_float16" in caplog.text
    exported = model_file.load(paths.keras_model)
    assert exported.get_layer("block1_conv1").dtype_policy.name == "mixed_float16"
    assert exported.output.dtype == "float32"
    metrics = evaluate.run(paths, params.evaluate)  # the export agrees with the checkpoint
    assert 0 <= metrics["test"]["accuracy"] <= 1


@pytest.mark.integration  # 13 s: a CNN trained twice and evaluated
def test_a_small_cnn_trains_exports_and_repeats_exactly(paths, params_file) -> None:
    """Every CNN option at once, tiny: augmentation, BN, bfloat16, AdamW with the cosine schedule."""
    overrides = {
        "train.model.architecture": "cnn",
        "train.model.cnn.filters": [4, 8],
        "train.model.cnn.dense_units": 16,
        "train.model.cnn.augment.shift": 0.1,
        "train.model.cnn.augment.flip": True,
        "train.model.cnn.precision": "mixed_bfloat16",
        "train.optimizer": "adamw",
        "train.learning_rate_schedule": "cosine",
        "train.epochs": 2,
    }
    params = load_params(params_file, overrides)
    train.run(paths, params.train)
    exported = model_file.load(paths.keras_model)
    names = [layer.name for layer in exported.layers]
    assert names[:5] == ["image", "scale_pixels", "add_channel", "random_shift", "random_flip"]
    assert {"block1_conv2_bn", "block2_pool", "dense_dropout"} <= set(names)
    assert exported.get_layer("block1_conv1").dtype_policy.name == "mixed_bfloat16"
    assert exported.output.dtype == "float32"
    assert model_file.class_names(paths.keras_model) == CLASS_NAMES
    metrics = evaluate.run(paths, params.evaluate)  # also checks the export against the checkpoint
    assert 0 <= metrics["test"]["accuracy"] <= 1
    first = exported.get_weights()
    train.run(paths, params.train)
    for before, after in zip(first, model_file.load(paths.keras_model).get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)


def checkpoint_val_loss(paths: Paths) -> float:
    """The validation loss of ``best-model.h5``, as the tutorial's ``model.evaluate`` gives it."""
    checkpoint = keras.models.load_model(paths.model)
    checkpoint.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return evaluate.loss_and_accuracy(checkpoint, load_split(paths.split("val")), 256)["loss"]


class Terminal(io.StringIO):
    """What a person's terminal receives (``isatty``), kept to read back."""

    def isatty(self) -> bool:
        return True


def test_train_then_evaluate_writes_every_output_and_is_deterministic(
    paths, params_file, monkeypatch
) -> None:
    params = load_params(params_file)
    history = train.run(paths, params.train)
    assert list(history.columns) == training.HISTORY_COLUMNS
    assert list(history["epoch"]) == [1, 2, 3]
    assert history["loss"].iloc[-1] < history["loss"].iloc[0]
    logged = paths.train_live_dir / "plots" / "metrics"
    for split, name in (("train", "loss"), ("val", "loss"), ("train", "accuracy"), ("val", "accuracy")):
        column = "val_" + name if split == "val" else name  # Keras's names
        epochs = pd.read_csv(logged / split / f"{name}.tsv", sep="\t")
        assert list(epochs.columns) == ["step", name]  # no timestamp: same run, same bytes
        assert list(epochs["step"]) == [1, 2, 3]  # epochs from 1, as Keras prints them and the PNGs show
        np.testing.assert_allclose(epochs[name], history[column], rtol=1e-6)
    # One name per number: the kept epoch's val scores; evaluate's metrics add test.* only.
    summary = json.loads((paths.train_live_dir / "metrics.json").read_text())
    best = history.loc[history["val_loss"].idxmin()]
    assert summary == {
        "val": {"accuracy": pytest.approx(best["val_accuracy"]), "loss": pytest.approx(best["val_loss"])}
    }
    for png in (paths.loss_png, paths.accuracy_png):
        assert png.read_bytes()[:4] == b"\x89PNG"

    restored = keras.models.load_model(paths.model)
    best_val_loss = history["val_loss"].min()
    metrics = evaluate.run(paths, params.evaluate)
    assert checkpoint_val_loss(paths) == pytest.approx(best_val_loss, rel=1e-5)  # the kept epoch's
    assert restored.count_params() == models.make_model((28, 28), 10, params.train.model).count_params()
    on_disk = json.loads(paths.metrics_json.read_text())
    assert on_disk == metrics
    assert set(on_disk) == {"test"} and "per_class" not in on_disk["test"]  # headline numbers only
    per_class = json.loads(paths.per_class_json.read_text())
    assert [row["class"] for row in per_class] == list(CLASS_NAMES)  # label order
    assert [row["label"] for row in per_class] == list(range(len(CLASS_NAMES)))
    assert set(per_class[8]) == {"label", "class", "precision", "recall", "f1"}
    assert metrics["test"]["macro_f1"] == pytest.approx(sum(row["f1"] for row in per_class) / len(per_class))
    predictions = pd.DataFrame(json.loads(paths.confusion_json.read_text()))
    assert list(predictions.columns) == ["actual", "predicted"] and len(predictions) == 100
    assert set(predictions["actual"]) == set(CLASS_NAMES)
    accuracy = (predictions["actual"] == predictions["predicted"]).mean()
    assert accuracy == pytest.approx(metrics["test"]["accuracy"], abs=1e-6)
    for png in (paths.confusion_png, paths.f1_png):
        assert png.read_bytes()[:4] == b"\x89PNG"

    first_reports = reports(paths)
    first_model_weights = restored.get_weights()
    first_export = paths.keras_model.read_bytes()
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)  # the second run on a terminal: a progress bar
    train.run(paths, params.train)
    monkeypatch.undo()
    assert "epoch 1/3" in terminal.getvalue() and "batch" in terminal.getvalue()
    evaluate.run(paths, params.evaluate)
    # every DVCLive file and figure, byte for byte: the bar changes nothing that dvc.lock records
    assert reports(paths) == first_reports
    assert paths.keras_model.read_bytes() == first_export  # byte for byte: DVC sees no change
    for before, after in zip(
        first_model_weights, keras.models.load_model(paths.model).get_weights(), strict=True
    ):
        np.testing.assert_array_equal(before, after)


def test_early_stopping_stops_and_checkpoint_keeps_the_best_epoch(paths, params_file) -> None:
    params = load_params(
        params_file,
        {
            "train.epochs": 30,
            "train.early_stopping.enabled": True,
            "train.early_stopping.patience": 0,
            "train.learning_rate": 0.5,
            "train.optimizer": "sgd",
        },
    )
    history = train.run(paths, params.train)
    assert len(history) < 30
    assert checkpoint_val_loss(paths) == pytest.approx(history["val_loss"].min(), rel=1e-5)
    assert json.loads(paths.train_metrics_json.read_text())["val"]["loss"] == history["val_loss"].min()


def test_a_failed_training_leaves_the_previous_model(trained, params_file) -> None:
    paths = trained
    params = load_params(params_file)
    before = paths.model.read_bytes(), paths.keras_model.read_bytes()
    val = load_split(paths.split("val"))
    save_split(paths.split("val"), Split(val.x, np.full_like(val.y, 99)))  # fails at validation time
    with pytest.raises(tf.errors.InvalidArgumentError):
        train.run(paths, params.train)
    assert (paths.model.read_bytes(), paths.keras_model.read_bytes()) == before
    assert sorted(p.name for p in paths.model.parent.iterdir()) == ["best-model.h5", "model.keras"]


@pytest.mark.integration  # 10 s: TensorFlow's allocator waits before it gives up
def test_a_model_too_big_for_memory_is_one_clear_error() -> None:
    """Past the schema's bounds (built unchecked here), TensorFlow cannot allocate the kernel."""
    huge = DenseModelParams.model_construct(hidden_units=[2_000_000_000], activation="relu", dropout=0.0)
    with (
        pytest.raises(
            training.OutOfMemory, match=r"out of memory building .*shape\[784,2000000000\].*hidden_units"
        ),
        training.memory_errors_explained("building the model", "reduce train.model.dense.hidden_units"),
    ):
        models.make_dense((28, 28), 10, huge)


def test_a_diverged_run_keeps_the_previous_model(trained, params_file) -> None:
    paths = trained
    before = paths.model.read_bytes(), paths.keras_model.read_bytes()
    diverging = load_params(
        params_file,
        {
            "train.optimizer": "sgd",
            "train.learning_rate": 10.0,
            "train.model.dense.hidden_units": [256] * 6,
            "train.model.dense.dropout": 0.0,
        },
    )
    with pytest.raises(training.TrainingDiverged, match="no epoch reached a finite val_loss.*learning_rate"):
        train.run(paths, diverging.train)
    assert (paths.model.read_bytes(), paths.keras_model.read_bytes()) == before
    assert sorted(p.name for p in paths.model.parent.iterdir()) == ["best-model.h5", "model.keras"]


def reports(paths: Paths) -> dict[str, bytes]:
    return {
        path.relative_to(paths.root).as_posix(): path.read_bytes()
        for path in sorted(paths.reports_dir.rglob("*"))
        if path.is_file()
    }
