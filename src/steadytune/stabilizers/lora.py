"""LoRA (Hu et al. 2021) through peft: a frozen encoder, low-rank adapters on chosen Linear modules, a trained head.

peft draws each adapter's A matrix from the global RNG; here every A is drawn again, in module order, from
a generator seeded by the adapter seed (default: the WI seed), with peft's own rule (Kaiming-uniform,
a = sqrt(5)), and B starts at 0 as in peft. So the adapters' start depends on that seed alone, and the
adapter seed can be a study factor of its own. The head (and a CRF) stays fully trained; the pooler,
as in peft's sequence-classification setup, stays frozen.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..config import ConfigError
from ..models.architecture import encoder_layout
from .base import Stabilizer


class LoRA(Stabilizer):
    structural = True

    @classmethod
    def applies(cls, config) -> bool:
        return config.adapter == "lora"

    def targets(self) -> list[str]:
        return [name.strip() for name in self.config.lora_targets.split(",") if name.strip()]

    def change_model(self, model: nn.Module, generator: torch.Generator) -> None:
        from peft import LoraConfig, inject_adapter_in_model

        targets = self.targets()
        present = {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, nn.Linear)}
        missing = [t for t in targets if t not in present]
        if missing or not targets:
            raise ConfigError(f"--lora-targets: no Linear module named {', '.join(missing) or '(none given)'} in this "
                              f"model; its Linear modules are named {', '.join(sorted(present))}")
        heads = encoder_layout(model).head_prefix
        heads = heads if isinstance(heads, tuple) else (heads,)
        config = LoraConfig(r=self.config.lora_rank, lora_alpha=self.config.lora_alpha,
                            lora_dropout=self.config.lora_dropout, target_modules=targets, bias="none")
        inject_adapter_in_model(config, model)
        adapter_generator = torch.Generator().manual_seed(self.config.effective_adapter_seed)
        for name, param in model.named_parameters():
            param.requires_grad = ".lora_" in name or name.startswith(heads)
            if ".lora_A." in name:
                with torch.no_grad():
                    nn.init.kaiming_uniform_(param, a=math.sqrt(5), generator=adapter_generator)
            elif ".lora_B." in name:
                with torch.no_grad():
                    param.zero_()

