"""A paused trial's full state on disk, as tensors and plain values: never a pickle.

Files beside a store are untrusted: whoever can write there must not be able to run code in the next
process that resumes a study. So a state is split into its tensors (one safetensors file, which holds
raw arrays and a JSON header and nothing executable) and everything else (numbers, strings, lists and
dicts) as JSON in that file's metadata, where each tensor is referred to by name. Reading validates the
layout and refuses anything else with a `StateFileError`; the caller then starts the trial afresh, which
gives the same result because trials are deterministic.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

_TENSOR = "__tensor__"
_METADATA_KEY = "steadytune_state"


class StateFileError(ValueError):
    """A state file that is missing, damaged, or not one steadytune wrote."""


def _split(value: Any, tensors: dict[str, torch.Tensor], names: dict[int, str]) -> Any:
    """`value` with every tensor replaced by a reference to its entry in `tensors` (one entry per tensor object)."""
    if isinstance(value, torch.Tensor):
        if id(value) not in names:
            names[id(value)] = f"t{len(tensors)}"
            tensors[names[id(value)]] = value.detach().to("cpu", copy=True).contiguous()
        return {_TENSOR: names[id(value)]}
    if isinstance(value, dict):
        if not all(isinstance(k, (str, int)) for k in value):
            raise TypeError(f"state keys must be str or int, got {[type(k).__name__ for k in value]}")
        # Kept as pairs, since JSON keys are strings and optimizer state is keyed by integer parameter index.
        return {"__dict__": [[k, _split(v, tensors, names)] for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        return [_split(v, tensors, names) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store a {type(value).__name__} in a state file")


def _join(value: Any, tensors: dict[str, torch.Tensor], where: Path) -> Any:
    if isinstance(value, dict):
        if set(value) == {_TENSOR}:
            if value[_TENSOR] not in tensors:
                raise StateFileError(f"{where}: refers to a missing tensor {value[_TENSOR]!r}")
            return tensors[value[_TENSOR]]
        items = value.get("__dict__")
        if set(value) != {"__dict__"} or not isinstance(items, list) or not all(
                isinstance(item, list) and len(item) == 2 and isinstance(item[0], (str, int)) for item in items):
            raise StateFileError(f"{where}: unexpected entry in the state's layout")
        return {k: _join(v, tensors, where) for k, v in items}
    if isinstance(value, list):
        return [_join(v, tensors, where) for v in value]
    return value


def save_state_file(path: Path, state: dict[str, Any]) -> None:
    """Write `state` atomically: readers see the old file or the complete new one, never a torn write."""
    tensors: dict[str, torch.Tensor] = {}
    layout = json.dumps(_split(state, tensors, {}))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={_METADATA_KEY: layout})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_state_file(path: Path) -> dict[str, Any]:
    """The state `save_state_file` wrote, or StateFileError for anything else."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(path))
    except FileNotFoundError:
        raise StateFileError(f"{path}: state file does not exist") from None
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise StateFileError(f"{path}: not a steadytune state file ({str(err).splitlines()[0] if str(err) else err})") from None
    if _METADATA_KEY not in metadata:
        raise StateFileError(f"{path}: not a steadytune state file (no state layout)")
    try:
        layout = json.loads(metadata[_METADATA_KEY])
    except json.JSONDecodeError as err:
        raise StateFileError(f"{path}: damaged state layout ({err.msg})") from None
    state = _join(layout, tensors, path)
    if not isinstance(state, dict):
        raise StateFileError(f"{path}: the state is not a mapping")
    return state
