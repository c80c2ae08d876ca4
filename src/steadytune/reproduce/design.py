"""What `reproduce` trains: its scales, its arms, and the study spec of each arm at each learning rate.

Each claim is tested in two settings: the papers' published lr (2e-5 everywhere) and an lr at which a
3-epoch Devlin run of this model learns each task, found by a short lr check recorded in the store. An
arm is a recipe with overrides and a seed range; its trials are found again by their trial keys, so
the analysis reads exactly the trials the design names, whatever else the store holds.

The units are seeds. Every arm but Dodge's grid draws its runs as independent (WI, DO) pairs, (1, 1),
(2, 2), ..., so an arm's spread holds for data orders as well as initializations, and two arms compared
share no seed of either kind within an arm. Only the claims that read the crossed WI x DO grid (Dodge's,
and Mosbach's loss-versus-dev claim) train it. The from-scratch arm has its own lr check and budget: a
transformer trained from random weights needs a larger lr and longer training than fine-tuning does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..studies.spec import StudySpec, expand

PUBLISHED_LR = 2e-5  # Devlin et al., Dodge et al., Zhang et al., Mosbach et al. (BERT-large)


@dataclass(frozen=True)
class Scale:
    """Sizes of one scale. The grid is Dodge's WI x DO design; the other arms use WI seeds with DO 1."""

    name: str
    description: str
    max_train: int | None
    grid_wi: int
    grid_do: int
    arm_seeds: int
    epochs: float
    long_epochs: float       # Zhang's longer training and Mosbach's baseline
    grid_evals: int          # dev evaluations per epoch in the grid (Dodge: 10)
    landscape_seeds: int     # pretrained and from-scratch runs with snapshots (Hao)
    landscape_examples: int  # train and dev examples each landscape point is evaluated on
    line_points: int         # points along the 1-D random direction, a in [-1, 1]
    surface_points: int      # points per axis of the 2-D surface, a and b in [-1, 1]
    scratch_epochs: float     # the from-scratch arm's budget
    scratch_lr_candidates: tuple[float, ...]
    lr_candidates: tuple[float, ...] | None = None  # None: by the model's size (lr_candidates_for)
    batch_size: int | None = None  # None: each recipe's own (16 everywhere)

    def sizes(self) -> str:
        """The scale's sizes in words, as the page states them."""
        examples = "full training sets" if self.max_train is None else f"{self.max_train:,} training examples"
        return (f"{examples}; {self.arm_seeds} seed pairs per arm, {self.epochs:g} epochs ({self.long_epochs:g} for "
                f"the long arm); a {self.grid_wi} x {self.grid_do} WI x DO grid; {self.landscape_seeds} seed pairs per "
                f"landscape arm, measured on {self.landscape_examples} training and dev examples")


SCALES: dict[str, Scale] = {
    "smoke": Scale("smoke", "minutes on the CPU with a tiny model: a pipeline check (a random model learns nothing, "
                   "and its rows say so)", max_train=64, grid_wi=3, grid_do=2, arm_seeds=3, epochs=1.0,
                   long_epochs=2.0, grid_evals=4, landscape_seeds=2, landscape_examples=16, line_points=5,
                   surface_points=3, scratch_epochs=2.0, scratch_lr_candidates=(1e-3,), lr_candidates=(1e-3,),
                   batch_size=8),
    "small": Scale("small", "a few hours per task on a 2-core CPU with MiniLM-L6", max_train=1000, grid_wi=5,
                   grid_do=3, arm_seeds=5, epochs=3.0, long_epochs=6.0, grid_evals=10, landscape_seeds=3,
                   landscape_examples=128, line_points=11, surface_points=5, scratch_epochs=6.0,
                   scratch_lr_candidates=(1e-4, 3e-4)),
    "paper": Scale("paper", "the papers' sizes (Dodge's grid, Mosbach's 25 seeds and 20 epochs), for a GPU",
                   max_train=None, grid_wi=25, grid_do=25, arm_seeds=25, epochs=3.0, long_epochs=20.0,
                   grid_evals=10, landscape_seeds=5, landscape_examples=512, line_points=21, surface_points=11,
                   scratch_epochs=20.0, scratch_lr_candidates=(1e-4, 3e-4, 1e-3)),
}

# Fine-tuning lrs that work grow as models shrink: BERT-large needs 1e-5 to 5e-5 (Devlin et al.; Mosbach et al.
# use 2e-5), BERT-base up to 1e-4, and a 384-wide MiniLM learned RTE and SST-2 only from 5e-5 upward here.
LR_CANDIDATES_BY_WIDTH = ((1024, (1e-5, 2e-5, 3e-5, 5e-5)), (768, (2e-5, 5e-5, 1e-4)), (0, (5e-5, 1e-4, 2e-4)))


def lr_candidates_for(scale: Scale, hidden_size: int) -> tuple[float, ...]:
    """The lr check's candidates: the scale's own if it names them, else by the model's hidden size."""
    if scale.lr_candidates is not None:
        return scale.lr_candidates
    return next(candidates for least, candidates in LR_CANDIDATES_BY_WIDTH if hidden_size >= least)


def reinit_layers(num_layers: int) -> int:
    """Zhang et al.'s released example re-initializes 5 of BERT-large's 24 layers: the same share, at least one."""
    return max(1, math.ceil(num_layers * 5 / 24))


@dataclass(frozen=True)
class Arm:
    name: str
    description: str
    recipe: str
    overrides: dict[str, Any] = field(default_factory=dict)
    grid: bool = False           # WI x DO crossed; otherwise independent (WI, DO) pairs (1, 1), (2, 2), ...
    snapshots: bool = False      # trained with start and end snapshots, for landscapes
    seeds_from: str = "arm_seeds"
    own_lr: bool = False         # trained at the from-scratch lr check's choice, in every setting


def arms(scale: Scale, num_layers: int) -> dict[str, Arm]:
    """Every arm of the design. Zhang's BERTAdam arm and Mosbach's Devlin arm are `devlin`: the grid's recipe and
    evaluations, on paired seeds (its first pairs are grid cells, so a store holding the grid reuses them)."""
    long = {"epochs": scale.long_epochs}
    grid = {"evals_per_epoch": scale.grid_evals, "epochs": scale.epochs}
    table = [
        Arm("grid", f"Devlin et al.'s recipe (BERTAdam, {scale.epochs:g} epochs), Dodge's WI x DO grid", "devlin2019",
            grid, grid=True),
        Arm("devlin", f"Devlin et al.'s recipe (BERTAdam, {scale.epochs:g} epochs)", "devlin2019", grid),
        Arm("adamw", "the same with bias-corrected AdamW", "devlin2019", {"optimizer": "adamw", "epochs": scale.epochs}),
        Arm("reinit", f"AdamW with the pooler and the top {reinit_layers(num_layers)} layer(s) re-initialized",
            "devlin2019", {"optimizer": "adamw", "epochs": scale.epochs, "reinit_pooler": True,
                           "reinit_layers": reinit_layers(num_layers)}),
        Arm("long", f"Mosbach et al.'s baseline: AdamW, warmup 10%, {scale.long_epochs:g} epochs", "mosbach2021", long),
        Arm("pretrained", "Devlin's recipe with start and end snapshots", "devlin2019", {"epochs": scale.epochs},
            snapshots=True, seeds_from="landscape_seeds"),
        Arm("scratch", f"the same architecture from random weights, {scale.scratch_epochs:g} epochs at its own lr, "
            "with snapshots", "devlin2019", {"epochs": scale.scratch_epochs, "from_scratch": True}, snapshots=True,
            seeds_from="landscape_seeds", own_lr=True),
    ]
    return {arm.name: arm for arm in table}


def _sizes(scale: Scale) -> dict[str, Any]:
    sizes = {"max_train": scale.max_train, "batch_size": scale.batch_size}
    return {name: value for name, value in sizes.items() if value is not None}


def arm_spec(arm: Arm, scale: Scale, task: str, lr: float, setting: str, common: dict[str, Any]) -> StudySpec:
    """The study that trains one arm on one task at one lr."""
    config = {**common, **arm.overrides, "lr": lr, **_sizes(scale)}
    name = f"reproduce-{scale.name}-{'scratch' if arm.own_lr else setting}-{task}-{arm.name}"
    if arm.grid:
        return StudySpec(name=name, tasks=[task], recipes=[arm.recipe], wi_seeds=f"1-{scale.grid_wi}",
                         do_seeds=f"1-{scale.grid_do}", config=config)
    seeds = f"1-{getattr(scale, arm.seeds_from)}"
    return StudySpec(name=name, tasks=[task], recipes=[arm.recipe], wi_seeds=seeds, do_seeds=seeds, seed_pairs=True,
                     config=config)


def trial_keys(spec: StudySpec) -> list[str]:
    return [trial.config.trial_key() for trial in expand(spec)]


def lr_check_spec(scale: Scale, task: str, lr: float, common: dict[str, Any], scratch: bool = False) -> StudySpec:
    """One Devlin run (WI 1, DO 1) at one candidate lr: 3 epochs fine-tuned, or the scratch budget from random
    weights."""
    if scratch:
        config = {**common, "lr": lr, "epochs": scale.scratch_epochs, "from_scratch": True, **_sizes(scale)}
        return StudySpec(name=f"reproduce-{scale.name}-scratch-lr-check-{task}-{lr:g}", tasks=[task],
                         recipes=["devlin2019"], config=config)
    config = {**common, "lr": lr, "epochs": scale.epochs, **_sizes(scale)}
    return StudySpec(name=f"reproduce-{scale.name}-lr-check-{task}-{lr:g}", tasks=[task], recipes=["devlin2019"],
                     config=config)
