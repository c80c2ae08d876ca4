"""Named presets from the papers. A recipe is a set of TrialConfig overrides; flags override it."""
from __future__ import annotations

from typing import Any

from .config import ConfigError, TrialConfig

RECIPES: dict[str, tuple[str, dict[str, Any]]] = {
    "devlin2019": ("Original BERT fine-tuning: BERTAdam (no bias correction), 3 epochs, warmup 10%, wd 0.01.",
                   dict(optimizer="bertadam", lr=2e-5, batch_size=16, epochs=3.0, warmup=0.1, weight_decay=0.01,
                        adam_eps=1e-6, max_grad_norm=1.0, evals_per_epoch=1)),
    "mosbach2021": ("Mosbach et al.'s simple baseline: AdamW with bias correction, 20 epochs, warmup 10%, wd 0.01, "
                    "eps 1e-6, clip 1.0, 3 evals per epoch (keep the best).",
                    dict(optimizer="adamw", lr=2e-5, batch_size=16, epochs=20.0, warmup=0.1, weight_decay=0.01,
                         adam_eps=1e-6, max_grad_norm=1.0, evals_per_epoch=3)),
    "zhang2021": ("Zhang et al.: bias correction, re-initialized pooler and top 5 layers, longer training "
                  "(their released RTE example: 400 steps at batch 32; scale --max-steps to your data).",
                  dict(optimizer="adamw", lr=2e-5, batch_size=32, max_steps=400, warmup=0.1, weight_decay=0.01,
                       adam_eps=1e-6, max_grad_norm=1.0, reinit_pooler=True, reinit_layers=5)),
    "mixout": ("Mixout (Lee et al. 2020) with p 0.1 toward the pretrained weights; dropout off; AdamW.",
               dict(optimizer="adamw", mixout=0.1)),
    "llrd": ("Layer-wise learning-rate decay with eta 0.95; AdamW.", dict(optimizer="adamw", llrd=0.95)),
    "noisytune": ("NoisyTune (Wu et al. 2022): uniform noise of width 0.15 x each tensor's std before training; AdamW.",
                  dict(optimizer="adamw", noisytune=0.15)),
    "r3f": ("R3F (Aghajanyan et al. 2021): lambda 1 x the symmetric KL against uniform noise of 1e-5 on the word "
            "embeddings; AdamW.", dict(optimizer="adamw", r3f=1.0)),
    "ema": ("AdamW, with an exponential moving average of the weights (decay 0.999) evaluated beside the model.",
            dict(optimizer="adamw", average="ema")),
    "swa": ("AdamW, with the uniform average of every step's weights over the last quarter of training (SWA, "
            "Izmailov et al. 2018) evaluated beside the model.", dict(optimizer="adamw", average="swa")),
    "pretrained-wd": ("Weight decay toward the pretrained weights (strength 1e-3) instead of toward 0; AdamW.",
                      dict(optimizer="adamw", pretrained_wd=1e-3)),
}


def recipe_overrides(name: str) -> dict[str, Any]:
    """The recipe's values, tagged with its name so the trial records where it started from."""
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; known: {', '.join(RECIPES)}")
    return {**RECIPES[name][1], "recipe": name}


def resolved_recipe(name: str) -> TrialConfig:
    """The full config a recipe gives on top of the defaults."""
    return TrialConfig(**recipe_overrides(name))
