"""Calibration files: a chosen controller and what it measured, as JSON.

``dynasor-agents bench calibrate`` picks a controller on a labeled trace bank and
writes it with :func:`write_calibration`; a production strategy loads it with
:func:`load_controller`::

    {"policy": "threshold | max_samples",
     "params": {"threshold": {"value": 0.8}, "max_samples": {"n": 16}},
     "first_round": 5, "round_size": 1,
     "measured": {"accuracy": ..., "tokens_per_question": ..., ...}}

Example:
    >>> import pathlib, tempfile
    >>> spec = ControllerSpec.of([("threshold", {"value": 0.8}), ("max_samples", {"n": 16})])
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "calib.json"
    >>> _ = write_calibration(path, spec, {"accuracy": 0.61})
    >>> ctl = load_controller(path)
    >>> ctl.policy, ctl.first_round, ctl.round_size
    (threshold(0.8) | max_samples(16), 5, 5)
    >>> load_calibration(path)[1]
    {'accuracy': 0.61}
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dynasor_agents._controller_spec import ControllerSpec
from dynasor_agents.controller import CertaintyController
from dynasor_agents.errors import InvalidInputError

__all__ = ["load_calibration", "load_controller", "write_calibration"]


def write_calibration(
    path: str | Path, spec: ControllerSpec, measured: Mapping[str, Any]
) -> dict[str, Any]:
    """Write ``spec`` and its measurements as a calibration file; return the data.

    Args:
        path: Where to write (parent directories are created).
        spec: The chosen controller.
        measured: What it measured (accuracy, tokens, the bank, ...), JSON-ready.
    """
    path = Path(path)
    data = spec.to_json()
    data["measured"] = dict(measured)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return data


def load_calibration(path: str | Path) -> tuple[ControllerSpec, dict[str, Any]]:
    """Read a calibration file: the controller spec and the measurements.

    Raises:
        InvalidInputError: The file is missing, not JSON, or not a calibration.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InvalidInputError(f"calibration file not found: {path}") from exc
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{path} is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidInputError(f"{path} must hold a JSON object, got {type(data).__name__}")
    measured = data.get("measured", {})
    return ControllerSpec.from_json(data), measured if isinstance(measured, dict) else {}


def load_controller(path: str | Path) -> CertaintyController:
    """The :class:`CertaintyController` saved in a calibration file.

    Raises:
        InvalidInputError: As :func:`load_calibration`.
    """
    return load_calibration(path)[0].build()
