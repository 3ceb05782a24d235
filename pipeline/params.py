"""Typed, validated pipeline parameters, loaded once from ``params.yaml``.

Every stage validates the whole file before doing any work, so a bad value anywhere fails fast with
the dotted key and the allowed values in the message.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.dataset import FILE_NAMES
from pipeline.errors import PipelineError

DEFAULT_PARAMS_PATH = Path("params.yaml")


class ParamsError(PipelineError, ValueError):
    """The params file (or an override) is missing, malformed or holds an invalid value."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


Fraction = Annotated[float, Field(gt=0, lt=1)]


Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class IngestParams(_Section):
    """Where the four IDX files come from (tried in order) and the SHA-256 of each one's content."""

    sources: list[str] = Field(min_length=1)
    sha256: dict[str, Sha256]
    timeout_s: Annotated[float, Field(gt=0)] = 30.0
    retries: Annotated[int, Field(ge=0)] = 3

    @model_validator(mode="after")
    def _one_checksum_per_file(self) -> IngestParams:
        if set(self.sha256) != set(FILE_NAMES):
            raise ValueError(f"sha256 must map exactly these files: {', '.join(FILE_NAMES)}")
        return self


class PreprocessParams(_Section):
    """The train/validation split of the 60,000 training images (scikit-learn's names)."""

    test_size: Fraction
    random_state: int
    stratify: bool = False


class DenseModelParams(_Section):
    """The tutorial's family: Flatten, then ``Dense(units, activation)`` + ``Dropout`` per hidden layer."""

    architecture: Literal["dense"]
    hidden_units: list[Annotated[int, Field(ge=1)]]
    activation: Literal["relu", "sigmoid", "tanh"]
    dropout: Annotated[float, Field(ge=0, lt=1)]

    @model_validator(mode="after")
    def _dropout_needs_a_hidden_layer(self) -> DenseModelParams:
        if self.dropout and not self.hidden_units:
            raise ValueError("dropout follows each hidden layer, so it must be 0 when hidden_units is []")
        return self


class EarlyStoppingParams(_Section):
    enabled: bool
    patience: Annotated[int, Field(ge=0)]
    restore_best_weights: bool


class TrainParams(_Section):
    seed: int
    model: DenseModelParams
    optimizer: Literal["sgd", "adam", "rmsprop"]
    learning_rate: Annotated[float, Field(gt=0)] | None
    epochs: Annotated[int, Field(ge=1)]
    batch_size: Annotated[int, Field(ge=1)]
    early_stopping: EarlyStoppingParams


class EvaluateParams(_Section):
    batch_size: Annotated[int, Field(ge=1)]


class ReviewParams(_Section):
    """Regression gate of ``python -m pipeline report``; ``None`` turns a check off.

    No stage reads this section, so changing it never reruns the pipeline.
    """

    min_test_accuracy: Annotated[float, Field(ge=0, le=1)] | None = None
    max_test_accuracy_drop: Annotated[float, Field(ge=0, le=1)] | None = None


class Params(_Section):
    ingest: IngestParams
    preprocess: PreprocessParams
    train: TrainParams
    evaluate: EvaluateParams
    review: ReviewParams = ReviewParams()


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


def parse_raw_params(text: str, source: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The YAML mapping ``text`` (read from ``source``) with ``overrides`` applied, not yet validated."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ParamsError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of sections at the top level")
    for key, value in (overrides or {}).items():
        set_dotted(raw, key, value)
    return raw


def validate_params(raw: Mapping[str, Any], source: str = "params") -> Params:
    """Validate a params mapping, turning pydantic's report into one line per bad key."""
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(_describe(error) for error in exc.errors())
        raise ParamsError(f"{source}: invalid params: {problems}") from None


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    """Set ``raw["a"]["b"] = value`` for ``key == "a.b"``; unknown keys are an error."""
    *parents, leaf = key.split(".")
    node: Any = raw
    known = _known_keys()
    if key not in known:
        raise _unknown_param(key, known)
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = yaml.safe_load(value) if isinstance(value, str) else value


def leaf_values(raw: Mapping[str, Any], source: str = "params") -> dict[str, Any]:
    """``raw``'s values by dotted key, down to the schema's leaves (``train.epochs``, ``ingest.sha256``).

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
    where = f"{source}: " if source else ""
    return ParamsError(f"{where}unknown param {key!r}; known params: {', '.join(sorted(known))}")


def _known_keys(model: type[BaseModel] = Params, prefix: str = "") -> set[str]:
    keys = set()
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        keys.add(dotted)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys |= _known_keys(annotation, f"{dotted}.")
    return keys


def _describe(error: Mapping[str, Any]) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "<top level>"
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key"
    if error["type"] == "missing":
        return f"{key}: missing"
    got = error.get("input")
    return f"{key}: {error['msg']} (got {got!r})"
