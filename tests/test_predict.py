"""``python -m pipeline predict`` and ``pipeline.model.inference.classify`` on a tiny model trained on
synthetic images (a bright band whose row depends on the class)."""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import processed, run
from pipeline import inputs as input_files
from pipeline.commands.predict import PROGRESS_FROM_FILES
from pipeline.commands.predict import run as predict
from pipeline.core.dataset import CLASS_NAMES, InputError, as_pixels
from pipeline.core.idx import encode_idx
from pipeline.core.params import load_params
from pipeline.core.paths import Paths
from pipeline.core.splits import load_split
from pipeline.inputs import MAX_INPUT_BYTES, image_to_pixels, read_inputs

JSON_KEYS = {"path", "index", "class", "label", "probability", "top_k"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, synthetic_source) -> Paths:
    """A project folder with processed synthetic splits and the model.keras trained on them."""
    from pipeline.stages import train

    paths = Paths(tmp_path_factory.mktemp("predict"))
    processed(paths.root, synthetic_source)
    params_file = paths.root / "params.yaml"
    params_file.write_text((Path(__file__).parents[1] / "params.yaml").read_text())
    params = load_params(params_file, {"train.epochs": 15, "train.model.dense.hidden_units": [32]})
    train.run(paths, params.train)
    return paths


@pytest.fixture(scope="module")
def classifier(trained):
    from pipeline.model.inference import Classifier

    return Classifier.load(trained.keras_model)


@pytest.fixture(scope="module")
def test_split(trained):
    return load_split(trained.split("test"))


def test_the_export_is_self_contained_and_classifies_as_the_checkpoint(
    trained, classifier, test_split
) -> None:
    from pipeline.model import files as model_file

    assert classifier.class_names == CLASS_NAMES
    assert classifier.model.input.dtype == "uint8"  # the scaling is inside the model
    checkpoint = model_file.load(trained.model)
    expected = checkpoint.predict(test_split.x, verbose=0)
    actual = classifier.model.predict(test_split.x, verbose=0)
    np.testing.assert_array_equal(expected, actual)


def test_classify_ranks_the_classes(classifier, test_split) -> None:
    from pipeline.model.inference import classify

    predictions = classify(test_split.x, classifier, top_k=3)
    assert len(predictions) == len(test_split.y)
    accuracy = np.mean([p.label for p in predictions] == test_split.y)
    assert accuracy > 0.9
    for prediction in predictions:
        names, probabilities = zip(*prediction.top_k, strict=True)
        assert names[0] == prediction.class_name == CLASS_NAMES[prediction.label]
        assert probabilities[0] == prediction.probability
        assert list(probabilities) == sorted(probabilities, reverse=True) and len(set(names)) == 3
    single = classify(test_split.x[0], classifier, top_k=1)  # one (28, 28) image
    assert single == [
        predictions[0].__class__(**{**predictions[0].__dict__, "top_k": predictions[0].top_k[:1]})
    ]


def test_classify_uses_the_projects_model_by_default(trained, classifier, test_split, monkeypatch) -> None:
    from pipeline.model.inference import classify

    monkeypatch.chdir(trained.root)
    assert classify(test_split.x[:5]) == classify(test_split.x[:5], classifier)


@pytest.mark.parametrize(
    ("array", "expected"),
    [
        (np.full((28, 28), 7, np.uint8), np.full((1, 28, 28), 7, np.uint8)),
        (np.full((2, 28, 28, 1), 255, np.int64), np.full((2, 28, 28), 255, np.uint8)),
        (
            np.full((1, 28, 28), 0.5, np.float32),
            np.full((1, 28, 28), 128, np.uint8),
        ),  # the tutorial's x / 255
        (np.full((1, 28, 28), 200.0), np.full((1, 28, 28), 200, np.uint8)),
    ],
)
def test_arrays_become_uint8_batches(array, expected) -> None:
    np.testing.assert_array_equal(as_pixels(array, "a.npy"), expected)


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros(10_000, np.uint8), r"a\.npy: expected 28x28 images.*got shape \(10000,\)"),
        (np.zeros((3, 32, 32), np.uint8), r"got shape \(3, 32, 32\)"),
        (np.zeros((0, 28, 28), np.uint8), r"holds no images"),
        (np.full((28, 28), 256, np.int32), r"pixel values must be 0 to 255; got 256 to 256"),
        (np.full((28, 28), -1.0), r"must be in \[0, 1\] or \[0, 255\]"),
        (np.full((28, 28), np.nan), r"NaN or infinite"),
        (np.full((28, 28), "x"), r"must hold numbers; got dtype <U1"),
    ],
)
def test_bad_arrays_say_what_is_wrong(array, message) -> None:
    with pytest.raises(InputError, match=message):
        as_pixels(array, "a.npy")


def garment() -> np.ndarray:
    """A light T-shape on black, as the training images are."""
    pixels = np.zeros((28, 28), np.uint8)
    pixels[4:9, 3:25] = 220
    pixels[9:25, 9:19] = 180
    return pixels


def test_a_training_like_image_is_kept_as_it_is() -> None:
    np.testing.assert_array_equal(image_to_pixels(Image.fromarray(garment())), garment())


def test_a_photo_like_image_is_inverted_resized_and_centred() -> None:
    photo = Image.fromarray(255 - np.kron(garment(), np.ones((4, 4), np.uint8))).convert("RGB")
    photo = photo.crop((0, -20, 112, 132))  # 112x152, white margins at top and bottom
    photo.paste((255, 255, 255), (0, 0, 112, 20))
    photo.paste((255, 255, 255), (0, 132, 112, 152))
    pixels = image_to_pixels(photo)
    assert pixels.shape == (28, 28) and pixels.dtype == np.uint8
    assert pixels[:, 0].max() < 10 and pixels[:, -1].max() < 10  # dark background after inversion
    assert pixels[:, 4:24].max() > 170  # the light garment, shrunk to 20 columns and centred


def test_transparency_16_bit_and_float_images() -> None:
    rgba = np.zeros((56, 56, 4), np.uint8)
    rgba[10:40, 10:40] = (30, 30, 30, 255)  # a dark garment on a transparent background
    pixels = image_to_pixels(Image.fromarray(rgba))
    assert pixels[0, 0] == 0 and pixels[12, 12] > 200  # transparency is white, then inverted
    sixteen = Image.fromarray(garment().astype("<u2") * 257)
    assert sixteen.mode == "I;16"
    np.testing.assert_array_equal(image_to_pixels(sixteen), garment())
    floats = Image.fromarray(garment().astype(np.float32) / 255)
    assert floats.mode == "F"
    np.testing.assert_array_equal(image_to_pixels(floats), garment())


def write_inputs(folder: Path, images: np.ndarray) -> dict[str, Path]:
    """Each kind of input predict reads, and each kind of bad one."""
    folder.mkdir(exist_ok=True)
    files = {name: folder / name for name in ("a.png", "b.jpg", "batch.npy", "batch-idx3-ubyte.gz")}
    Image.fromarray(images[0]).save(files["a.png"])
    Image.fromarray(np.kron(255 - images[1], np.ones((3, 3), np.uint8))).convert("RGB").save(
        files["b.jpg"], quality=95
    )
    np.save(files["batch.npy"], images[2:5])
    files["batch-idx3-ubyte.gz"].write_bytes(gzip.compress(encode_idx(images[5:9])))
    bad = {
        "notes.txt": b"not an image",
        "labels.npy": None,
        "broken.png": b"\x89PNG\r\n\x1a\n" + b"\x00" * 20,
        "pickled.npy": None,
    }
    for name, content in bad.items():
        files[name] = folder / name
        if content is not None:
            files[name].write_bytes(content)
    np.save(files["labels.npy"], np.arange(10, dtype=np.uint8))
    np.save(files["pickled.npy"], np.array([{"x": 1}], dtype=object), allow_pickle=True)
    files["missing.png"] = folder / "missing.png"
    files["folder"] = folder
    return files


def test_every_kind_of_input_and_every_bad_one(tmp_path, trained, test_split, capsys, caplog) -> None:
    files = write_inputs(tmp_path / "inputs", test_split.x)
    with caplog.at_level(logging.ERROR):
        code = predict(list(files.values()), trained.keras_model, top_k=2, as_json=False)
    assert code == 1
    lines = capsys.readouterr().out.splitlines()
    where = [line.split("\t")[0] for line in lines]
    assert where == [
        str(files["a.png"]),
        str(files["b.jpg"]),
        *(f"{files['batch.npy']}[{i}]" for i in range(3)),
        *(f"{files['batch-idx3-ubyte.gz']}[{i}]" for i in range(4)),
    ]
    predicted = [line.split("\t")[1] for line in lines]
    assert predicted == [CLASS_NAMES[label] for label in test_split.y[:9]]  # the JPEG is inverted back
    for line in lines:
        _, name, probability, ranking = line.split("\t")
        assert ranking.startswith(f"{name} {probability}, ") and ranking.count(",") == 1
    errors = {record.getMessage() for record in caplog.records}
    assert len(errors) == 6 and all("\n" not in error for error in errors)
    for name, problem in {
        "notes.txt": "not an image, .npy array or IDX file",
        "labels.npy": "expected 28x28 images",
        "broken.png": "broken image file",
        "pickled.npy": "not a readable .npy array",
        "missing.png": "cannot read it (No such file or directory)",
        "inputs": "is a folder",
    }.items():
        assert any(
            error.startswith(str(files.get(name, tmp_path / name))) and problem in error for error in errors
        ), (
            name,
            errors,
        )


def test_json_lines(tmp_path, trained, test_split, capsys) -> None:
    files = write_inputs(tmp_path / "inputs", test_split.x)
    assert predict([files["a.png"], files["batch.npy"]], trained.keras_model, top_k=3, as_json=True) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["path"], r["index"]) for r in records] == [(str(files["a.png"]), 0)] + [
        (str(files["batch.npy"]), i) for i in range(3)
    ]
    for record in records:
        assert set(record) == JSON_KEYS
        assert record["class"] == CLASS_NAMES[record["label"]] and 0 <= record["probability"] <= 1
        assert [entry["class"] for entry in record["top_k"]][0] == record["class"]
        assert len(record["top_k"]) == 3 and set(record["top_k"][0]) == {"class", "probability"}


class Terminal(io.StringIO):
    """What a person's terminal receives (``isatty``), kept to read back."""

    def isatty(self) -> bool:
        return True


def test_many_inputs_show_a_progress_bar_on_a_terminal_and_the_same_lines(
    tmp_path, trained, test_split, capsys, monkeypatch
) -> None:
    count = PROGRESS_FROM_FILES
    (folder := tmp_path / "many").mkdir()
    inputs = []
    for index in range(count):
        inputs.append(folder / f"{index}.npy")
        np.save(inputs[-1], test_split.x[index])
    assert predict(inputs, trained.keras_model, top_k=1, as_json=False) == 0
    plain = capsys.readouterr()
    assert "reading" not in plain.err  # not a terminal: no bar
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert predict(inputs, trained.keras_model, top_k=1, as_json=False) == 0
    monkeypatch.undo()
    assert capsys.readouterr().out == plain.out and len(plain.out.splitlines()) == count
    assert "reading" in terminal.getvalue() and "file" in terminal.getvalue()


def test_read_inputs_tells_formats_by_content(tmp_path, test_split) -> None:
    disguised = tmp_path / "looks-like.png"
    np.save(tmp_path / "x.npy", test_split.x[:2])
    disguised.write_bytes((tmp_path / "x.npy").read_bytes())
    np.testing.assert_array_equal(read_inputs(disguised), test_split.x[:2])


def test_a_bad_model_file_is_one_line(tmp_path, trained, test_split) -> None:
    import keras

    from pipeline.model import files as model_file

    image = tmp_path / "a.png"
    Image.fromarray(test_split.x[0]).save(image)
    with pytest.raises(InputError, match=r"no-such\.keras: no such model file"):  # before TensorFlow loads
        predict([image], tmp_path / "no-such.keras", top_k=3, as_json=False)
    not_a_model = tmp_path / "model.keras"
    not_a_model.write_text("hello")
    with pytest.raises(
        model_file.ModelFileError, match=r"model\.keras: refused, not a model this pipeline trains"
    ):
        predict([image], not_a_model, top_k=3, as_json=False)
    plain = keras.Sequential(
        [keras.Input((28, 28)), keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")]
    )
    plain.save(tmp_path / "plain.keras")
    with pytest.raises(model_file.ModelFileError, match=r"plain\.keras: no class names"):
        predict([image], tmp_path / "plain.keras", top_k=3, as_json=False)
    with pytest.raises(model_file.ModelFileError, match=r"best-model\.h5: not a \.keras file"):
        predict([image], trained.model, top_k=3, as_json=False)
    with pytest.raises(InputError, match=r"--top-k must be 1 to 10; got 11"):
        predict([image], trained.keras_model, top_k=11, as_json=False)


def test_the_command_line(tmp_path, trained, test_split) -> None:
    files = write_inputs(tmp_path / "inputs", test_split.x)
    result = run(
        sys.executable,
        "-m",
        "pipeline",
        "predict",
        str(files["notes.txt"]),
        str(files["a.png"]),
        "--model",
        str(trained.keras_model),
        "--top-k",
        "1",
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 1  # one input failed; the other is classified
    assert (
        result.stdout
        == f"{files['a.png']}\t{CLASS_NAMES[test_split.y[0]]}\t" + result.stdout.split("\t", 2)[2]
    )
    assert result.stdout.count("\n") == 1
    # one line for the bad input, and nothing else: no TensorFlow start-up notices
    assert [line for line in result.stderr.splitlines() if line] == [
        line for line in result.stderr.splitlines() if "ERROR" in line and "notes.txt: not an image" in line
    ], result.stderr
    missing = run(sys.executable, "-m", "pipeline", "predict", str(files["a.png"]), cwd=tmp_path, check=False)
    assert missing.returncode == 1 and missing.stdout == ""
    assert "models/model.keras: no such model file" in missing.stderr
    too_many = run(
        sys.executable,
        "-m",
        "pipeline",
        "predict",
        str(files["a.png"]),
        "--top-k",
        "11",
        cwd=tmp_path,
        check=False,
    )
    assert too_many.returncode == 1 and "--top-k must be 1 to 10; got 11" in too_many.stderr


def write_hostile_inputs(folder: Path) -> dict[str, Path]:
    """Inputs, each small on disk, that would take gigabytes, minutes or for ever if read as they claim."""
    folder.mkdir(exist_ok=True)
    names = ("bomb-idx3-ubyte.gz", "huge.npy", "huge-idx3-ubyte", "huge.png", "fifo")
    files = {name: folder / name for name in names}
    header = b"\x00\x00\x08\x03" + np.array([400_000, 28, 28], ">u4").tobytes()  # 314 MB of uint8
    one_mib_of_zeros = gzip.compress(bytes(1 << 20))  # about 1 KiB; gzip members concatenate
    files["bomb-idx3-ubyte.gz"].write_bytes(gzip.compress(header) + one_mib_of_zeros * 300)
    with files["huge.npy"].open("wb") as file:  # the header alone: 7.8 GB of data, were it loaded
        np.lib.format.write_array_header_1_0(
            file, {"descr": "|u1", "fortran_order": False, "shape": (10**7, 28, 28)}
        )
    with files["huge-idx3-ubyte"].open("wb") as file:
        file.truncate(MAX_INPUT_BYTES + 1)  # sparse: zeros that take no disk space
    Image.new("1", (9400, 9400)).save(files["huge.png"])  # 88 million pixels in 11 KB
    os.mkfifo(files["fifo"])
    files["/dev/zero"] = Path("/dev/zero")
    return files


HOSTILE_PROBLEMS = {
    "bomb-idx3-ubyte.gz": f"refused, more than {MAX_INPUT_BYTES:,} bytes of IDX data once decompressed",
    "huge.npy": "refused, shape (10000000, 28, 28) of uint8 is 7,840,000,000 bytes",
    "huge-idx3-ubyte": f"refused, {MAX_INPUT_BYTES + 1:,} bytes; one input may hold {MAX_INPUT_BYTES:,}",
    "huge.png": "refused, too many pixels (9400x9400; predict decodes at most 25,000,000)",
    "fifo": "is a FIFO, not a regular file",
    "/dev/zero": "is a character device, not a regular file",
}


@pytest.fixture(scope="module")
def hostile_inputs(tmp_path_factory) -> dict[str, Path]:
    return write_hostile_inputs(tmp_path_factory.mktemp("hostile"))


@pytest.mark.parametrize("name", sorted(set(HOSTILE_PROBLEMS) - {"fifo"}))  # a FIFO: in a subprocess
def test_a_hostile_input_is_refused_before_it_expands(hostile_inputs, name) -> None:
    path = hostile_inputs[name]
    with pytest.raises(InputError) as refused:
        read_inputs(path)
    assert str(refused.value).startswith(f"{path}: ") and HOSTILE_PROBLEMS[name] in str(refused.value)


def test_an_input_of_too_many_images_is_refused(tmp_path, test_split, monkeypatch) -> None:
    monkeypatch.setattr(input_files, "MAX_IMAGES_PER_INPUT", 2)
    np.save(tmp_path / "three.npy", test_split.x[:3])
    with pytest.raises(InputError, match=r"three\.npy: refused, 3 images; one input may hold 2"):
        read_inputs(tmp_path / "three.npy")
    np.save(tmp_path / "two.npy", test_split.x[:2])
    np.testing.assert_array_equal(read_inputs(tmp_path / "two.npy"), test_split.x[:2])


def test_the_command_line_refuses_each_hostile_input_in_one_line(
    tmp_path, trained, test_split, hostile_inputs
) -> None:
    image = tmp_path / "a.png"
    Image.fromarray(test_split.x[0]).save(image)
    command = [sys.executable, "-m", "pipeline", "predict", *map(str, hostile_inputs.values()), str(image)]
    result = subprocess.run(
        [*command, "--model", str(trained.keras_model)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,  # reading the FIFO would wait for a writer for ever
    )
    assert result.returncode == 1, result.stderr
    assert result.stdout.startswith(f"{image}\t{CLASS_NAMES[test_split.y[0]]}\t")
    assert result.stdout.count("\n") == 1
    errors = [line for line in result.stderr.splitlines() if line]
    assert len(errors) == len(hostile_inputs), result.stderr
    for name, path in hostile_inputs.items():
        assert any(f"{path}: {HOSTILE_PROBLEMS[name]}" in error for error in errors), (name, errors)


def save_model(
    path: Path,
    input_side: int,
    outputs: int,
    class_names: tuple[str, ...] = CLASS_NAMES,
    activation: str | None = "softmax",
) -> Path:
    """An untrained model of the given shapes, exported as train exports its model."""
    import keras

    from pipeline.model import files as model_file

    inputs = keras.Input((input_side, input_side), dtype="uint8")
    dense = keras.layers.Dense(outputs, activation=activation)(keras.layers.Flatten()(inputs))
    model_file.save_keras(keras.Model(inputs, dense), path, class_names)
    return path


def test_a_model_that_does_not_fit_the_classes_is_one_line(tmp_path, test_split) -> None:
    import keras

    from pipeline.model import files as model_file

    image = tmp_path / "a.png"
    Image.fromarray(test_split.x[0]).save(image)
    for model, message in {
        save_model(tmp_path / "32x32.keras", 32, 10): r"32x32\.keras: refused, takes inputs \(None, 32, 32\)",
        save_model(tmp_path / "5.keras", 28, 5): r"5\.keras: refused, .* gives outputs \(None, 5\)",
        save_model(tmp_path / "abc.keras", 28, 10, ("a", "b", "c")): (
            r"abc\.keras: 3 class names in its metadata\.json for 10 outputs"
        ),
    }.items():
        with pytest.raises(model_file.ModelFileError, match=message):
            predict([image], model, top_k=3, as_json=False)
    checkpoint = tmp_path / "5.h5"  # evaluate loads the tutorial's checkpoint with the same loader
    keras.models.load_model(tmp_path / "5.keras").save(checkpoint)
    with pytest.raises(model_file.ModelFileError, match=r"5\.h5: refused, .* gives outputs \(None, 5\)"):
        model_file.load(checkpoint)


def test_a_zip_bomb_or_a_broken_zip_as_model_is_one_line(tmp_path, trained, test_split, monkeypatch) -> None:
    from pipeline.model import files as model_file

    image = tmp_path / "a.png"
    Image.fromarray(test_split.x[0]).save(image)
    exported = zipfile.ZipFile(trained.keras_model)
    bomb, deflated = tmp_path / "bomb.keras", tmp_path / "deflated.keras"
    with zipfile.ZipFile(bomb, "w") as target, zipfile.ZipFile(deflated, "w") as garbled:
        for member in exported.infolist():
            content = exported.read(member)
            if member.filename == "metadata.json":  # still valid JSON: 17 MiB of spaces in 17 KiB
                content += b" " * (17 << 20)
            target.writestr(member.filename, content, zipfile.ZIP_DEFLATED)
            garbled.writestr(member.filename, exported.read(member), zipfile.ZIP_DEFLATED)
    config = zipfile.ZipFile(deflated).getinfo("config.json")
    with deflated.open("r+b") as file:  # deflate data that is no deflate stream: "invalid block type"
        file.seek(config.header_offset + 30 + len(config.filename))  # past the member's local header
        file.write(b"\xff" * config.compress_size)
    truncated = tmp_path / "truncated.keras"
    truncated.write_bytes(trained.keras_model.read_bytes()[:-100])
    refused = r"refused, not a model this pipeline trains or unsafe to load"
    for model, message in {
        bomb: r"bomb\.keras: refused, its metadata\.json would decompress to 17,[0-9,]+ bytes; a JSON member",
        deflated: rf"deflated\.keras: {refused} \(Error -3 while decompressing data: invalid block type\)",
        truncated: rf"truncated\.keras: {refused} \(File is not a zip file\)",
    }.items():
        with pytest.raises(model_file.ModelFileError, match=message):
            predict([image], model, top_k=3, as_json=False)
    monkeypatch.setattr(model_file, "MAX_MODEL_BYTES", 1000)
    with pytest.raises(
        model_file.ModelFileError, match=r"would decompress to [0-9,]+ bytes; a model may have 1,000"
    ):
        predict([image], trained.keras_model, top_k=3, as_json=False)


def test_a_model_whose_outputs_are_not_probabilities_is_refused(tmp_path) -> None:
    """Logits (a linear last layer) of the right shapes, with the right class names: predict would print
    scores such as 45.0 as probabilities, and evaluate would score them as such."""
    import keras

    from pipeline.model import files as model_file
    from pipeline.model.inference import Classifier

    logits = save_model(tmp_path / "logits.keras", 28, 10, activation=None)
    checkpoint = tmp_path / "logits.h5"  # evaluate's checkpoint goes through the same loader
    keras.models.load_model(logits).save(checkpoint)
    refused = (
        r"refused, its outputs are not probabilities \(its last layer, Dense '\w+', has activation linear\)"
    )
    for path in (logits, checkpoint):
        with pytest.raises(model_file.ModelFileError, match=rf"^{re.escape(str(path))}: {refused}; "):
            model_file.load(path)
    with pytest.raises(model_file.ModelFileError, match=rf"logits\.keras: {refused}"):
        Classifier.load(logits)
    inputs = keras.Input((28, 28), dtype="uint8")
    scores = keras.layers.Dense(10)(keras.layers.Flatten()(inputs))
    for name, last in {
        "softmax-layer": keras.layers.Softmax(),
        "activation": keras.layers.Activation("softmax"),
    }.items():
        model_file.save_keras(keras.Model(inputs, last(scores)), tmp_path / f"{name}.keras", CLASS_NAMES)
        assert Classifier.load(tmp_path / f"{name}.keras").class_names == CLASS_NAMES  # softmax at the end
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "a.png")
    result = run(
        sys.executable,
        "-m",
        "pipeline",
        "predict",
        "a.png",
        "--model",
        "logits.keras",
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 1 and result.stdout == ""
    (line,) = [line for line in result.stderr.splitlines() if line]
    assert "ERROR" in line and re.search(rf"predict failed: logits\.keras: {refused}; ", line), line


def test_classify_refuses_outputs_that_are_not_probabilities(tmp_path) -> None:
    """A softmax model with NaN weights gives NaN: classify says so rather than rank NaNs."""
    from pipeline.model import files as model_file
    from pipeline.model.inference import Classifier, classify

    path = save_model(tmp_path / "nan.keras", 28, 10)
    classifier = Classifier.load(path)
    classifier.model.set_weights([np.full_like(w, np.nan) for w in classifier.model.get_weights()])
    not_probabilities = r"its outputs are not probabilities \(image 0's are in \[nan, nan\] and sum to nan\)"
    with pytest.raises(model_file.ModelFileError, match=rf"nan\.keras: refused, {not_probabilities}"):
        classify(np.zeros((3, 28, 28), np.uint8), classifier)
