"""Parameter snapshots along a trial's trajectory, for landscapes computed after training.

`--save-checkpoints K` keeps K snapshots evenly spaced from step 0 (the starting point: pretrained
or random encoder plus the freshly drawn head) to the last step. They are safetensors files of the
trainable parameters (encoder and head) under ``<store>-checkpoints/<trial key>/``: keyed by the
trial's config hash, so a trial paused and resumed by a study keeps adding to the same folder, and
a re-run of the same config (bit-identical by construction) overwrites identical files.

`--keep-weights` keeps the last step's snapshot alone, for seed soups (analysis/soup.py); for an adapter trial it holds
the adapters and the head only, since the frozen encoder is the pretrained one.

Snapshots are untrusted when read back. Each file carries the sha256 of its tensors (written with it,
atomically), which `load_checkpoint` verifies: that catches damage. The store records the sha256 of the
file's bytes when the trial that wrote it is recorded (`TrialOutcome.files`), and readers check the file
against that record (`check_recorded`): that catches a file replaced by a consistent forgery. Landscapes
key their cached cells by the tensors' hashes: a snapshot that changes gets new cells.
"""
from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import CheckpointError
from .layout import unrecorded

_FILE = re.compile(r"step-(\d+)\.safetensors")
HASH_KEY = "sha256"



def checkpoint_steps(total_steps: int, count: int) -> list[int]:
    """`count` steps evenly spaced over [0, total_steps], always including both ends."""
    if count < 2:
        return []
    return sorted({int(s) for s in np.rint(np.linspace(0, total_steps, count))})


def tensors_hash(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over the names, dtypes, shapes and bytes of `tensors`, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def save_checkpoint(model: nn.Module, folder: Path, step: int, trial_key: str, trainable_only: bool = False) -> Path:
    """Write the model's parameters (only those that train, with `trainable_only`: an adapter trial's adapters and
    head) at `step`."""
    path = folder / f"step-{step:06d}.safetensors"
    tensors = {name: p.detach().to("cpu", copy=True).contiguous() for name, p in model.named_parameters()
               if p.requires_grad or not trainable_only}
    metadata = {"step": str(step), "trial_key": trial_key, HASH_KEY: tensors_hash(tensors)}
    tmp = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=path.name, suffix=".tmp")
        os.close(fd)
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)
    except (OSError, SafetensorError) as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise CheckpointError(f"cannot write snapshot {path} ({reason}); the snapshots written before it are "
                              f"kept") from None
    return path


def check_recorded(path: Path, recorded: str | None, legacy: bool) -> None:
    """Refuse a snapshot whose bytes are not what the store recorded when its trial wrote it. `legacy`: the trial
    ran before its store recorded file hashes, so only the hash inside the file can be checked."""
    reason = None if legacy else unrecorded(path, recorded, "snapshot")
    if reason:
        raise CheckpointError(f"{reason}; train the trial again with --save-checkpoints to rewrite it")


def list_checkpoints(folder: Path) -> dict[int, Path]:
    """Snapshots in a trial's folder by step, in step order."""
    found = {int(m.group(1)): p for p in folder.glob("step-*.safetensors") if (m := _FILE.fullmatch(p.name))}
    return dict(sorted(found.items()))


def checkpoint_hash(path: Path) -> str:
    """The content hash a snapshot was written with (read from its header, cheap); verified by load_checkpoint."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            recorded = (handle.metadata() or {}).get(HASH_KEY)
    except (OSError, SafetensorError) as err:
        raise CheckpointError(f"{path}: damaged snapshot ({_reason(err)}); train the trial again with "
                              f"--save-checkpoints to rewrite it") from None
    if recorded is None:  # written before snapshots carried their hash: hash the content itself
        return tensors_hash(load_checkpoint(path))
    return recorded


def load_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """A snapshot's tensors, verified against the hash written with them."""
    try:
        tensors = load_file(path)
        with safe_open(str(path), framework="pt") as handle:
            recorded = (handle.metadata() or {}).get(HASH_KEY)
    except (OSError, SafetensorError) as err:
        raise CheckpointError(f"{path}: damaged snapshot ({_reason(err)}); train the trial again with "
                              f"--save-checkpoints to rewrite it") from None
    if recorded is not None and tensors_hash(tensors) != recorded:
        raise CheckpointError(f"{path}: snapshot content does not match the hash written with it (damaged or "
                              f"replaced); train the trial again with --save-checkpoints to rewrite it")
    return tensors


def _reason(err: Exception) -> str:
    text = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
    return (text.splitlines() or [type(err).__name__])[0]
