"""The params a flow run asks for: overrides (``KEY=VALUE``), grids of them (a sweep), and writing
them into ``params.yaml``, the file DVC's stages read.

This is what ``dvc exp run -S key=value`` does to the workspace: changed values are written into
the file in place (comments, key order and layout kept), so DVC sees the change as it sees a hand
edit, and ``dvc params diff`` / ``dvc exp show`` report it. The file is the run's workspace's,
never the checkout's.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.representer import RoundTripRepresenter

from pipeline.core import atomic
from pipeline.core.params import DEFAULT_PARAMS_PATH, ParamsError


def key_value(text: str) -> tuple[str, str]:
    """``train.epochs=3`` -> ``("train.epochs", "3")``; the value is parsed as YAML when applied."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"{text!r} is not KEY=VALUE")
    return key.strip(), value.strip()


def trial_overrides(grid: list[str]) -> list[dict[str, str]]:
    """Each combination of the ``-S`` sweep overrides (DVC's Hydra grammar), as
    ``{"train.epochs": "10", ...}``."""
    from dvc.exceptions import DvcException
    from dvc.utils.hydra import get_hydra_sweeps
    from hydra.errors import HydraException

    try:
        sweeps = get_hydra_sweeps({DEFAULT_PARAMS_PATH.name: list(grid)})
    except (DvcException, HydraException) as exc:
        raise ParamsError(f"not a sweep DVC understands ({' '.join(grid)}): {exc}") from None
    return [dict(key_value(item) for item in sweep[DEFAULT_PARAMS_PATH.name]) for sweep in sweeps]


def write_params(target: Path, wanted: Mapping[str, Any]) -> list[str]:
    """Make ``target`` hold exactly ``wanted``, editing only what differs; return the changed keys."""
    rt_yaml = _round_trip_yaml()
    document = rt_yaml.load(target.read_text())
    changed = _update(document, wanted)
    if changed:
        buffer = io.StringIO()
        rt_yaml.dump(document, buffer)
        atomic.write_text(target, buffer.getvalue())
    return changed


def _update(node: MutableMapping[str, Any], wanted: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Edit ``node`` in place until it equals ``wanted``; the dotted keys that changed."""
    changed = []
    for key in [key for key in node if key not in wanted]:
        del node[key]
        changed.append(f"{prefix}{key}")
    for key, value in wanted.items():
        current = node.get(key)
        if isinstance(current, MutableMapping) and isinstance(value, Mapping):
            changed += _update(current, value, f"{prefix}{key}.")
        elif key not in node or current != value:
            if isinstance(current, list) and isinstance(value, list):
                current[:] = value  # keeps the list's flow style and trailing comment
            else:
                node[key] = value
            changed.append(f"{prefix}{key}")
    return changed


class _Representer(RoundTripRepresenter):
    """Writes ``None`` as ``null`` like the file does (ruamel's default is an empty value)."""


_Representer.add_representer(
    type(None), lambda representer, _: representer.represent_scalar("tag:yaml.org,2002:null", "null")
)


def _round_trip_yaml() -> YAML:
    """ruamel.yaml set up to rewrite this project's ``params.yaml`` byte for byte when nothing changed."""
    rt_yaml = YAML()
    rt_yaml.Representer = _Representer
    rt_yaml.preserve_quotes = True
    rt_yaml.indent(mapping=2, sequence=4, offset=2)
    rt_yaml.width = 4096  # never wrap the long SHA-256 values
    return rt_yaml
