"""Stabilizers of few-sample fine-tuning and the LoRA adapter, one module per method, each a `Stabilizer` (base.py).

- reinit: re-initialize the top layers and the pooler (Zhang et al. 2021);
- mixout: mix weights toward their pretrained values (Lee et al. 2020);
- llrd: layer-wise learning-rate decay (Zhang et al. 2021, after Howard & Ruder 2018);
- pretrained_wd: weight decay toward the pretrained weights (Zhang et al. 2021);
- noisytune: uniform noise on the pretrained weights, scaled per tensor (Wu et al. 2022);
- r3f: a symmetric-KL smoothness term against noisy input embeddings (Aghajanyan et al. 2021);
- averaging: an EMA or SWA of the weights, evaluated beside the raw model;
- lora: low-rank adapters on a frozen encoder (Hu et al. 2021), through peft;
- bias_correction: AdamW against the original BERTAdam (Zhang et al. 2021; Mosbach et al. 2021). It is the
  optimizer choice (`--optimizer`), not a hook: every trial has exactly one optimizer.

Adding a method touches three places: a module here with a `Stabilizer` subclass and its entry in REGISTRY; its
TrialConfig field(s), each named in a help panel of config.SECTIONS (a test checks every field has one; a new field
joins the trial key only when changed, so earlier keys stay); and, if it has the paper's defaults, a recipe. It then
runs unpacked (packed/trial.py packs only the methods that act before training) until packing is taught it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .averaging import WeightAverage
from .base import Stabilizer
from .llrd import LayerwiseLRDecay
from .lora import LoRA
from .mixout import Mixout
from .noisytune import NoisyTune
from .pretrained_wd import PretrainedWD
from .r3f import R3F
from .reinit import ReInit

if TYPE_CHECKING:
    from ..config import TrialConfig

# Hooks run in this order. Mixout after re-init: a re-initialized weight then mixes toward its new value. NoisyTune
# after re-init (the new layers are perturbed too, as a fresh draw would be) and before Mixout and pretrained WD,
# which then anchor to the perturbed start.
# Pretrained WD after LLRD: it zeroes the ordinary weight decay of whatever groups LLRD built. LoRA before LLRD,
# so that the adapters are in the groups LLRD builds by depth.
# The weight average last: it averages the weights every other method has acted on.
REGISTRY: tuple[type[Stabilizer], ...] = (ReInit, NoisyTune, Mixout, LoRA, LayerwiseLRDecay, PretrainedWD, R3F,
                                          WeightAverage)


def active_stabilizers(config: TrialConfig) -> list[Stabilizer]:
    """The stabilizers `config` turns on, built for one trial, in registry order."""
    return [method(config) for method in REGISTRY if method.applies(config)]


__all__ = ["REGISTRY", "Stabilizer", "active_stabilizers"]
