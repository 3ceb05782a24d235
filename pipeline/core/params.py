"""Typed, validated pipeline parameters, loaded once from ``params.yaml``.

Every stage validates the whole file before doing any work, so a bad value anywhere fails fast with
the dotted key and the allowed values in the message. The file is read as DVC reads it (ruamel.yaml,
YAML 1.2: ``1e-3`` is a number, ``yes`` a string), so DVC and the stages never disagree on a value.
Bounds reject what can only be a mistake (``epochs: 10000000``, a non-finite rate) before any work.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from pipeline.core.dataset import FILE_NAMES, IMAGE_SIDE
from pipeline.core.errors import PipelineError

DEFAULT_PARAMS_PATH = Path("params.yaml")
_YAML = YAML(typ="safe")  # as DVC reads params (dvc.utils.serialize.parse_yaml)
# What a params file (or preset, or dataset spec) may hold, checked before it is parsed or used: the
# repository's is 3 KB with about 60 values; a YAML alias bomb is 4 KB that expands to billions.
MAX_PARAMS_BYTES = 256 * 1024
MAX_PARAMS_VALUES = 10_000
MAX_SHOWN_CHARS = 80  # of a value quoted in an error message


class ParamsError(PipelineError, ValueError):
    """The params file (or an override) is missing, malformed or holds an invalid value."""


class _Section(BaseModel):
    # Each field's docstring is its description: docs/params.md is generated from them.
    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, allow_inf_nan=False, use_attribute_docstrings=True
    )


Fraction = Annotated[float, Field(gt=0, lt=1)]
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]  # what NumPy's and TensorFlow's seeding accept
BatchSize = Annotated[int, Field(ge=1, le=65_536)]  # more than the 60,000 training images is a mistake
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
SOURCE_SCHEMES = ("http://", "https://", "file://")


class DatasetSpec(_Section):
    """Where the four IDX files come from (tried in order) and the SHA-256 of each one's content.

    Kept in its own file (``datasets/fashion-mnist.yaml``), a dependency of the ingest stage rather
    than a param, so ``dvc exp show`` and ``dvc params diff`` show what users vary.
    """

    sources: list[str] = Field(min_length=1, max_length=16)
    """Directories, ``file://`` or ``http(s)://`` base URLs, tried in order for each file."""
    sha256: dict[str, Sha256]
    """SHA-256 of each file's decompressed IDX bytes (the compressed bytes may differ)."""

    @field_validator("sources")
    @classmethod
    def _sources_are_directories_or_urls(cls, sources: list[str]) -> list[str]:
        for source in sources:
            check_source(source)
        return sources

    @model_validator(mode="after")
    def _one_checksum_per_file(self) -> DatasetSpec:
        if set(self.sha256) != set(FILE_NAMES):
            raise ValueError(f"sha256 must map exactly these files: {', '.join(FILE_NAMES)}")
        return self


class IngestParams(_Section):
    """The limits of fetching the dataset's files (the files themselves: :class:`DatasetSpec`)."""

    timeout_s: Annotated[float, Field(gt=0, le=600)] = 30.0
    """Seconds per HTTP request: connecting, and each wait for bytes."""
    retries: Annotated[int, Field(ge=0, le=10)] = 3
    """Retries per source on connection errors, 5xx answers and downloads that break off."""
    deadline_s: Annotated[float, Field(gt=0, le=86_400)] = 300.0
    """Most seconds one file may take from one source, retries included."""
    max_mib: Annotated[int, Field(ge=1, le=4096)] = 64
    """Largest download or decompressed file accepted, in MiB (the largest is 45 MiB)."""


def check_source(source: str) -> str:
    """A local directory, a ``file://`` URL or an ``http(s)://`` base URL; anything else is an error."""
    if not source.strip():
        raise ValueError("an empty source: give a directory or an http(s):// or file:// URL")
    scheme, sep, _ = source.partition("://")
    if sep and f"{scheme}://" not in SOURCE_SCHEMES:
        raise ValueError(f"{source!r}: sources are directories or {', '.join(SOURCE_SCHEMES)} URLs")
    return source


class PreprocessParams(_Section):
    """The train/validation split of the 60,000 training images (scikit-learn's names)."""

    test_size: Fraction
    """Share of the 60,000 training images held out for validation."""
    random_state: Seed = 42
    """Seed of scikit-learn's ``train_test_split``."""
    stratify: bool = False
    """Keep the class proportions equal in both splits."""


StepsPerExecution = Annotated[int, Field(ge=1, le=10_000)]
DropoutRate = Annotated[float, Field(ge=0, lt=1)]


class DenseModelParams(_Section):
    """The tutorial's family: Flatten, then ``Dense(units, activation)`` + ``Dropout`` per hidden layer."""

    hidden_units: list[Annotated[int, Field(ge=1, le=65_536)]] = Field(default=[100], max_length=16)
    """Units of each hidden Dense layer; ``[]`` is the softmax-only net, ``[256, 128]`` two layers."""
    activation: Literal["relu", "sigmoid", "tanh"] = "relu"
    """Activation of the hidden layers."""
    dropout: DropoutRate = 0.3
    """Dropout after each hidden layer; 0 = none."""
    steps_per_execution: StepsPerExecution = 100
    """Batches per compiled Keras call: the speed, never the weights (bench/speed.py). No XLA: Keras
    turns it off under deterministic ops."""

    @model_validator(mode="after")
    def _dropout_needs_a_hidden_layer(self) -> DenseModelParams:
        if self.dropout and not self.hidden_units:
            raise ValueError("dropout follows each hidden layer, so it must be 0 when hidden_units is []")
        return self


class AugmentParams(_Section):
    """Seeded random changes to each training batch (never to validation, test or predict)."""

    shift: Annotated[float, Field(ge=0, le=0.5)] = 0.0
    """Largest random shift, a fraction of the side; 0 = off."""
    flip: bool = False
    """Mirror left-right at random."""


MAX_CNN_BLOCKS = 4  # each block halves the 28x28 maps: 14, 7, 3, 1


class CnnModelParams(_Section):
    """Convolutional blocks (``convs_per_block`` x Conv2D, BatchNorm, MaxPool, Dropout), then a dense head."""

    filters: list[Annotated[int, Field(ge=1, le=1024)]] = Field(default=[32, 64], min_length=1)
    """Filters of each block, one block per entry (at most 4: each halves the 28x28 maps)."""
    convs_per_block: Annotated[int, Field(ge=1, le=4)] = 2
    """Conv2D (-> BatchNorm -> relu) layers per block, before its max pooling."""
    kernel_size: Annotated[int, Field(ge=1, le=IMAGE_SIDE)] = 3
    """Side of each convolution's kernel."""
    batch_norm: bool = True
    """BatchNormalization after each convolution."""
    block_dropout: DropoutRate = 0.1
    """Dropout after each block's pooling; 0 = none."""
    dense_units: Annotated[int, Field(ge=0, le=65_536)] = 256
    """Units of the head's hidden layer; 0 = softmax right after the blocks."""
    dense_dropout: DropoutRate = 0.3
    """Dropout after the head's hidden layer."""
    augment: AugmentParams = AugmentParams()
    """Random changes to each training batch, seeded by ``train.seed``."""
    precision: Literal["float32", "mixed_bfloat16", "mixed_float16"] = "float32"
    """``mixed_bfloat16``: bfloat16 compute, float32 weights and softmax. 1.03x-1.13x as fast on a CPU
    with AVX-512 bfloat16 instructions; 10x slower on one without (bench/models.py).
    ``mixed_float16``: float16 compute with loss scaling, for a GPU's tensor cores; not for a CPU."""
    steps_per_execution: StepsPerExecution = 10
    """Batches per compiled Keras call (a CNN step dwarfs the per-call overhead this saves)."""

    @model_validator(mode="after")
    def _a_valid_network(self) -> CnnModelParams:
        if len(self.filters) > MAX_CNN_BLOCKS:
            raise ValueError(
                f"filters has {len(self.filters)} blocks; each halves the {IMAGE_SIDE}x{IMAGE_SIDE} "
                f"maps, so at most {MAX_CNN_BLOCKS} fit"
            )
        if self.dense_dropout and not self.dense_units:
            raise ValueError("dense_dropout follows the dense head, so it must be 0 when dense_units is 0")
        return self


class ModelParams(_Section):
    """``architecture`` names the family to train; each family keeps its own typed section.

    Both sections have defaults, so one override switches family
    (``dvc exp run -S train.model.architecture=cnn``); ``params.yaml`` holds the keys a project
    changes (``presets/`` sets the cnn family's), and ``dvc exp show`` shows those.
    """

    architecture: Literal["dense", "cnn"]
    """Which family below is trained."""
    dense: DenseModelParams = DenseModelParams()
    """The tutorial's nets: Flatten, then Dense + Dropout per hidden layer."""
    cnn: CnnModelParams = CnnModelParams()
    """Convolutional blocks, then a dense head (``presets/`` picks the rest)."""

    @property
    def family(self) -> DenseModelParams | CnnModelParams:
        """The selected family's params."""
        return getattr(self, self.architecture)

    @property
    def precision(self) -> str:
        """The selected family's compute precision (the dense nets compute in float32)."""
        return getattr(self.family, "precision", "float32")


class EarlyStoppingParams(_Section):
    enabled: bool = False
    """Stop when val_loss has not improved for ``patience`` epochs."""
    patience: Annotated[int, Field(ge=0, le=1000)] = 3
    """Epochs without improvement before stopping."""
    restore_best_weights: bool = True
    """Keras's option; the checkpoint keeps the best epoch either way."""


class TrainParams(_Section):
    seed: Seed
    """``keras.utils.set_random_seed``, plus deterministic ops: same params, same weights."""
    model: ModelParams
    """The network."""
    optimizer: Literal["sgd", "adam", "rmsprop", "adamw"]
    """Keras optimizer."""
    learning_rate: Annotated[float, Field(gt=0, le=10)] | None
    """``null`` = the optimizer's Keras default."""
    learning_rate_schedule: Literal["constant", "cosine"] = "constant"
    """``cosine`` decays the rate to 0 over all the epochs' steps."""
    epochs: Annotated[int, Field(ge=1, le=1000)]
    """Passes over the training split; the checkpoint keeps the best (lowest val_loss)."""
    batch_size: BatchSize
    """Training batch size."""
    validation_batch_size: BatchSize | None = 1000
    """Batch of the validation pass after each epoch (``null`` = batch_size): the speed, never the
    weights (val_loss differs in the 7th digit; 1000 saves about 1 s in 20 epochs)."""
    early_stopping: EarlyStoppingParams = EarlyStoppingParams()
    """Keras's ``EarlyStopping`` on val_loss."""


class EvaluateParams(_Section):
    batch_size: BatchSize = 256
    """Inference batch; does not change the model."""


class ReviewParams(_Section):
    """Regression gate of ``python -m pipeline report``; ``None`` turns a check off.

    Only the ingest stage's check of the whole file depends on it, so changing it retrains nothing.
    """

    min_test_accuracy: Annotated[float, Field(ge=0, le=1)] | None = None
    """Fail when the new test accuracy is below this."""
    max_test_accuracy_drop: Annotated[float, Field(ge=0, le=1)] | None = None
    """Fail when test accuracy drops more than this against the base: with seed groups, only a
    significant drop (its 95% interval below zero) larger than this."""
    seeds: Annotated[int, Field(ge=1, le=100)] = 3
    """Runs in a seed group (``python -m flows seeds``; the PR workflow's groups of head and base;
    ``python -m flows promote``'s groups of the candidate and the stage's version)."""
    max_class_f1_drop: Annotated[float, Field(ge=0, le=1)] = 0.02
    """``python -m flows promote`` refuses a version whose F1 of any class drops significantly (its
    95% interval below zero) by more than this against the stage's version."""


class Params(_Section):
    ingest: IngestParams = IngestParams()
    """Limits of fetching the files (which files: ``datasets/fashion-mnist.yaml``)."""
    preprocess: PreprocessParams
    """The train/validation split."""
    train: TrainParams
    """The model and how it is trained."""
    evaluate: EvaluateParams = EvaluateParams()
    """Scoring on the test split."""
    review: ReviewParams = ReviewParams()
    """The regression gate of ``python -m pipeline report`` (a PR check)."""


def load_dataset_spec(path: Path | str) -> DatasetSpec:
    """Read and validate a dataset spec file; errors name the file and the key."""
    path = Path(path)
    raw = parse_raw_params(read_params_text(path, "dataset spec"), str(path))
    return _validated(DatasetSpec, raw, f"{path}: invalid dataset spec")


def load_params(path: Path | str = DEFAULT_PARAMS_PATH, overrides: Mapping[str, Any] | None = None) -> Params:
    """Read ``path``, apply dotted-key ``overrides`` (e.g. ``{"train.epochs": 3}``) and validate."""
    return validate_params(read_raw_params(path, overrides), source=str(path))


def read_raw_params(path: Path | str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The YAML mapping in ``path`` with ``overrides`` applied, not yet validated."""
    path = Path(path)
    return parse_raw_params(read_params_text(path), str(path), overrides)


def read_params_text(path: Path, what: str = "params file") -> str:
    """The text of a params-like file: a regular file of at most :data:`MAX_PARAMS_BYTES`."""
    try:
        if not path.is_file():
            kind = "a folder" if path.is_dir() else "not a regular file"
            problem = f"the {what} is {kind}" if path.exists() else f"{what} not found"
            raise ParamsError(f"{path}: {problem}")
        if (size := path.stat().st_size) > MAX_PARAMS_BYTES:
            raise ParamsError(f"{path}: the {what} is {size:,} bytes; at most {MAX_PARAMS_BYTES:,} are read")
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        problem = f"not UTF-8 text ({exc.reason} at byte {exc.start})"
        raise ParamsError(f"{path}: the {what} is {problem}") from None
    except OSError as exc:
        raise ParamsError(f"{path}: cannot read the {what}: {exc.strerror}") from None


def parse_raw_params(
    text: str,
    source: str,
    overrides: Mapping[str, Any] | None = None,
    overrides_source: str | Mapping[str, str] = "override",
) -> dict[str, Any]:
    """The YAML mapping ``text`` (read from ``source``) with ``overrides`` applied, not yet validated.

    ``overrides_source``: where the overrides came from (``--override``), or that per key, for the messages.
    """
    if len(text) > MAX_PARAMS_BYTES:
        limit = f"at most {MAX_PARAMS_BYTES:,} are read"
        raise ParamsError(f"{source}: {len(text):,} characters of params; {limit}")
    try:
        raw = _YAML.load(text)
    except (YAMLError, ValueError) as exc:  # ValueError: an integer of more than 4300 digits
        raise ParamsError(f"{source}: not valid YAML: {shorten(_one_line(exc), 300)}") from None
    except RecursionError:
        raise ParamsError(f"{source}: not valid params: nested too deeply") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of sections at the top level")
    _check_expanded_size(raw, source)
    for key, value in (overrides or {}).items():
        origin = overrides_source if isinstance(overrides_source, str) else overrides_source.get(key)
        set_dotted(raw, key, value, source=origin or "override")
    return raw


def validate_params(
    raw: Mapping[str, Any], source: str = "params", overridden: Mapping[str, str] | None = None
) -> Params:
    """Validate a params mapping, turning pydantic's report into one line per bad key.

    ``overridden``: dotted key -> where its value came from (``--override``), named in the message.
    """
    return _validated(Params, raw, f"{source}: invalid params", overridden)


def _validated(
    schema: type[_Section], raw: Mapping[str, Any], what: str, overridden: Mapping[str, str] | None = None
) -> Any:
    """``schema`` of ``raw``, turning pydantic's report into one line per bad key after ``what``."""
    try:
        return schema.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        problems = "; ".join(_describe(error, overridden or {}) for error in errors[:5])
        if len(errors) > 5:
            problems += f"; and {len(errors) - 5} more"
        raise ParamsError(f"{what}: {problems}") from None


def set_dotted(raw: dict[str, Any], key: str, value: Any, source: str | None = None) -> None:
    """Set ``raw["a"]["b"] = value`` for ``key == "a.b"``; unknown keys are an error."""
    *parents, leaf = key.split(".")
    node: Any = raw
    known = _known_keys()
    if key not in known:
        raise _unknown_param(key, known, source)
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = parse_value(key, value) if isinstance(value, str) else value


def parse_value(key: str, text: str) -> Any:
    """An override's value, read as a YAML 1.2 scalar or flow collection (``3``, ``[8, 4]``, ``null``)."""
    if "\n" in text or "\r" in text:
        raise ParamsError(f"override {key}: the value must be one line (got {shorten(repr(text))})")
    try:
        return _YAML.load(text)
    except (YAMLError, ValueError, RecursionError) as exc:
        problem = f"not a YAML value ({shorten(_one_line(exc))}; got {shorten(repr(text))})"
        raise ParamsError(f"override {key}: {problem}") from None


def _check_expanded_size(raw: Any, source: str) -> None:
    """Refuse a document of more than :data:`MAX_PARAMS_VALUES` values once its aliases are expanded.

    YAML aliases share one parsed object, so the count stops at the limit and costs no more than it.
    """
    pending, counted = [raw], 0
    while pending:
        node = pending.pop()
        counted += 1
        if counted > MAX_PARAMS_VALUES:
            raise ParamsError(
                f"{source}: more than {MAX_PARAMS_VALUES:,} values once YAML aliases (*name) are expanded; "
                "a params file holds a few dozen"
            )
        if isinstance(node, dict):
            pending.extend(node.keys())
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)


def shorten(text: str, limit: int = MAX_SHOWN_CHARS) -> str:
    """``text`` cut to ``limit`` characters, saying how much was left out."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit:,} more characters)"


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def _non_ascii_note(key: str) -> str:
    """`` (its letters 'е' (U+0435) are not ASCII)`` for a look-alike key, else nothing."""
    odd = sorted({char for char in key if not char.isascii()})
    if not odd:
        return ""
    return " (it has non-ASCII letters: " + ", ".join(f"{char!r} U+{ord(char):04X}" for char in odd) + ")"


def leaf_values(raw: Mapping[str, Any], source: str = "params") -> dict[str, Any]:
    """``raw``'s values by dotted key, down to the schema's leaves (``train.epochs``, ``review.*``).

    What another params file means as overrides: only the keys it holds, each checked to be known.
    """
    known = _known_keys()
    sections = {key.rsplit(".", 1)[0] for key in known if "." in key}
    values: dict[str, Any] = {}

    def visit(node: Mapping[str, Any], prefix: str) -> None:
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            if dotted not in known:
                raise _unknown_param(dotted, known, source)
            if dotted in sections and isinstance(value, Mapping):
                visit(value, f"{dotted}.")
            else:
                values[dotted] = value

    visit(raw, "")
    return values


def _unknown_param(key: str, known: set[str], source: str | None = None) -> ParamsError:
    """One line: the key, and the known keys closest to it (never the whole list)."""
    where = f"{source}: " if source else ""
    note = _non_ascii_note(key)
    key = shorten(key)
    close = difflib.get_close_matches(key, sorted(known), n=3, cutoff=0.6)
    section = key.rsplit(".", 1)[0] if "." in key else ""
    hint = (
        f"did you mean {' or '.join(map(repr, close))}?"
        if close
        else "known sections: " + ", ".join(sorted(k for k in known if "." not in k))
        if section not in known
        else f"known keys of {section}: "
        + ", ".join(sorted(k for k in known if k.rsplit(".", 1)[0] == section))
    )
    return ParamsError(f"{where}unknown param {key!r}{note}; {hint}")


def _known_keys(model: type[BaseModel] = Params, prefix: str = "") -> set[str]:
    keys = set()
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        keys.add(dotted)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys |= _known_keys(annotation, f"{dotted}.")
    return keys


def _describe(error: Mapping[str, Any], overridden: Mapping[str, str]) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "<top level>"
    note = _non_ascii_note(key)
    key = shorten(key)
    if key in overridden:
        key = f"{key} (set by {overridden[key]})"
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key{note}"
    if error["type"] == "missing":
        return f"{key}: missing"
    return f"{key}: {error['msg']} (got {shorten(repr(error.get('input')))})"
