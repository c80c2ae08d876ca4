"""Parameter snapshots along a trial's trajectory, for landscapes computed after training.

`--save-checkpoints K` keeps K snapshots evenly spaced from step 0 (the starting point: pretrained
or random encoder plus the freshly drawn head) to the last step. They are safetensors files of the
trainable parameters (encoder and head) under ``<store>-checkpoints/<trial key>/``: keyed by the
trial's config hash, so a trial paused and resumed by a study keeps adding to the same folder, and
a re-run of the same config (bit-identical by construction) overwrites identical files.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

_FILE = re.compile(r"step-(\d+)\.safetensors")


class CheckpointError(FileNotFoundError):
    """Snapshots that a landscape needs are missing."""


def checkpoint_steps(total_steps: int, count: int) -> list[int]:
    """`count` steps evenly spaced over [0, total_steps], always including both ends."""
    if count < 2:
        return []
    return sorted({int(s) for s in np.rint(np.linspace(0, total_steps, count))})


def checkpoint_dir(store_path: Path, trial_key: str) -> Path:
    return store_path.parent / f"{store_path.stem}-checkpoints" / trial_key


def save_checkpoint(model: nn.Module, folder: Path, step: int, trial_key: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step-{step:06d}.safetensors"
    tensors = {name: p.detach().to("cpu", copy=True).contiguous() for name, p in model.named_parameters()}
    save_file(tensors, path, metadata={"step": str(step), "trial_key": trial_key})
    return path


def list_checkpoints(folder: Path) -> dict[int, Path]:
    """Snapshots in a trial's folder by step, in step order."""
    found = {int(m.group(1)): p for p in folder.glob("step-*.safetensors") if (m := _FILE.fullmatch(p.name))}
    return dict(sorted(found.items()))


def load_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path)
