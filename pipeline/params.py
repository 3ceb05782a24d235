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

from pipeline.dataset import FILE_NAMES, IMAGE_SIDE
from pipeline.errors import PipelineError

DEFAULT_PARAMS_PATH = Path("params.yaml")
_YAML = YAML(typ="safe")  # as DVC reads params (dvc.utils.serialize.parse_yaml)


class ParamsError(PipelineError, ValueError):
    """The params file (or an override) is missing, malformed or holds an invalid value."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


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
    sha256: dict[str, Sha256]

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
    retries: Annotated[int, Field(ge=0, le=10)] = 3
    deadline_s: Annotated[float, Field(gt=0, le=86_400)] = 300.0
    max_mib: Annotated[int, Field(ge=1, le=4096)] = 64


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
    random_state: Seed
    stratify: bool = False


StepsPerExecution = Annotated[int, Field(ge=1, le=10_000)]
DropoutRate = Annotated[float, Field(ge=0, lt=1)]


class DenseModelParams(_Section):
    """The tutorial's family: Flatten, then ``Dense(units, activation)`` + ``Dropout`` per hidden layer."""

    hidden_units: list[Annotated[int, Field(ge=1, le=65_536)]] = Field(default=[100], max_length=16)
    activation: Literal["relu", "sigmoid", "tanh"] = "relu"
    dropout: DropoutRate = 0.3
    # Batches per compiled Keras call: the speed, never the weights; each family has its own default,
    # measured by bench/speed.py. No jit_compile: Keras turns XLA off under deterministic ops.
    steps_per_execution: StepsPerExecution = 100

    @model_validator(mode="after")
    def _dropout_needs_a_hidden_layer(self) -> DenseModelParams:
        if self.dropout and not self.hidden_units:
            raise ValueError("dropout follows each hidden layer, so it must be 0 when hidden_units is []")
        return self


class AugmentParams(_Section):
    """Seeded random changes to each training batch (never to validation, test or predict)."""

    shift: Annotated[float, Field(ge=0, le=0.5)] = 0.0  # largest shift, as a fraction of the side
    flip: bool = False  # mirror left-right at random


MAX_CNN_BLOCKS = 4  # each block halves the 28x28 maps: 14, 7, 3, 1


class CnnModelParams(_Section):
    """Convolutional blocks (``convs_per_block`` x Conv2D, BatchNorm, MaxPool, Dropout), then a dense head."""

    filters: list[Annotated[int, Field(ge=1, le=1024)]] = Field(default=[32, 64], min_length=1)
    convs_per_block: Annotated[int, Field(ge=1, le=4)] = 2
    kernel_size: Annotated[int, Field(ge=1, le=IMAGE_SIDE)] = 3
    batch_norm: bool = True
    block_dropout: DropoutRate = 0.1
    dense_units: Annotated[int, Field(ge=0, le=65_536)] = 256  # 0: softmax right after the blocks
    dense_dropout: DropoutRate = 0.3
    augment: AugmentParams = AugmentParams()
    # mixed_bfloat16 computes in bfloat16 and keeps float32 weights and softmax (Keras's policy);
    # about as fast as float32 on this CPU (which has bfloat16 instructions); CPUs without them emulate it.
    precision: Literal["float32", "mixed_bfloat16"] = "float32"
    steps_per_execution: StepsPerExecution = 10

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

    Both sections stay in ``params.yaml`` so one override switches family
    (``dvc exp run -S train.model.architecture=cnn``): DVC's ``-S`` merges mappings, so a section that
    changed shape with the architecture could not be switched from the command line.
    """

    architecture: Literal["dense", "cnn"]
    dense: DenseModelParams = DenseModelParams()
    cnn: CnnModelParams = CnnModelParams()

    @property
    def family(self) -> DenseModelParams | CnnModelParams:
        """The selected family's params."""
        return getattr(self, self.architecture)


class EarlyStoppingParams(_Section):
    enabled: bool
    patience: Annotated[int, Field(ge=0, le=1000)]
    restore_best_weights: bool


class TrainParams(_Section):
    seed: Seed
    model: ModelParams
    optimizer: Literal["sgd", "adam", "rmsprop", "adamw"]
    learning_rate: Annotated[float, Field(gt=0, le=10)] | None
    # constant, or cosine decay from learning_rate to 0 over all the epochs' steps
    learning_rate_schedule: Literal["constant", "cosine"] = "constant"
    epochs: Annotated[int, Field(ge=1, le=1000)]
    batch_size: BatchSize
    # Inference batch of the per-epoch validation: the speed, never the weights.
    validation_batch_size: BatchSize | None = None
    early_stopping: EarlyStoppingParams


class EvaluateParams(_Section):
    batch_size: BatchSize


class ReviewParams(_Section):
    """Regression gate of ``python -m pipeline report``; ``None`` turns a check off.

    Only the validate stage (the whole file) depends on it, so changing it retrains nothing.
    """

    min_test_accuracy: Annotated[float, Field(ge=0, le=1)] | None = None
    max_test_accuracy_drop: Annotated[float, Field(ge=0, le=1)] | None = None


class Params(_Section):
    ingest: IngestParams
    preprocess: PreprocessParams
    train: TrainParams
    evaluate: EvaluateParams
    review: ReviewParams = ReviewParams()


def load_dataset_spec(path: Path | str) -> DatasetSpec:
    """Read and validate a dataset spec file; errors name the file and the key."""
    path = Path(path)
    try:
        raw = parse_raw_params(path.read_text(), str(path))
    except FileNotFoundError:
        raise ParamsError(f"{path}: dataset spec not found") from None
    return _validated(DatasetSpec, raw, f"{path}: invalid dataset spec")


def load_params(path: Path | str = DEFAULT_PARAMS_PATH, overrides: Mapping[str, Any] | None = None) -> Params:
    """Read ``path``, apply dotted-key ``overrides`` (e.g. ``{"train.epochs": 3}``) and validate."""
    return validate_params(read_raw_params(path, overrides), source=str(path))


def read_raw_params(path: Path | str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The YAML mapping in ``path`` with ``overrides`` applied, not yet validated."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ParamsError(f"{path}: params file not found") from None
    return parse_raw_params(text, str(path), overrides)


def parse_raw_params(
    text: str, source: str, overrides: Mapping[str, Any] | None = None, overrides_source: str = "override"
) -> dict[str, Any]:
    """The YAML mapping ``text`` (read from ``source``) with ``overrides`` (given by
    ``overrides_source``, for the messages) applied, not yet validated."""
    try:
        raw = _YAML.load(text)
    except YAMLError as exc:
        raise ParamsError(f"{source}: not valid YAML: {_one_line(exc)}") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of sections at the top level")
    for key, value in (overrides or {}).items():
        set_dotted(raw, key, value, source=overrides_source)
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
        problems = "; ".join(_describe(error, overridden or {}) for error in exc.errors())
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
        raise ParamsError(f"override {key}: the value must be one line (got {text!r})")
    try:
        return _YAML.load(text)
    except YAMLError as exc:
        raise ParamsError(f"override {key}: not a YAML value ({_one_line(exc)}; got {text!r})") from None


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


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
    return ParamsError(f"{where}unknown param {key!r}; {hint}")


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
    if key in overridden:
        key = f"{key} (set by {overridden[key]})"
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key"
    if error["type"] == "missing":
        return f"{key}: missing"
    got = error.get("input")
    return f"{key}: {error['msg']} (got {got!r})"
