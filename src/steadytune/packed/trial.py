"""A packed trial: K trials of one config that differ only in their seeds (WI, DO, dropout), trained together.

Each member is prepared exactly as its single trial is (trial.Trial: its data, its head and re-initialized layers
from its WI generator, its schedule, its own dropout stream); then their models are stacked (model.py) and trained
as one. Per seed, as alone: its batches in its DO order (padded to the pack's largest batch), its dropout masks from
its own stream, its gradient clipping, its loss, its curve and diagnostics, its evaluations. The optimizer runs once
over the stacked parameters; Adam's update is elementwise, so each seed's slice is updated as its own optimizer
would. Dev batches are shared: collated once, read by every seed. A seed that finishes early (it diverged, or
reached its cut) leaves the pack, and the rest continue without paying for it.

What differs from K single runs is rounding only (batched products sum in another order): the equivalence test
bounds it. Methods that change the loss, the optimizer's groups or the model during training (Mixout, R3F, LLRD,
pretrained WD, weight averaging, adapters) run unpacked.
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..config import RunOptions, TrialConfig
from ..data.encoding import collate, length_sorted_batches
from ..data.metrics import compute_metrics
from ..stabilizers.llrd import no_weight_decay
from ..training import ordering
from ..training.diagnostics import SATURATION_THRESHOLD, part_parameters, prediction_summary
from ..training.records import CurvePoint, TrialOutcome
from ..training.trial import Trial, bf16_autocast, configure_torch, optimizer_and_schedule
from .model import NotPackable, PackedClassifier, model_refusal, packable

SEED_FIELDS = ("wi_seed", "do_seed", "dropout_seed")
# Stabilizers that act on the model before training only, as a member's Trial builds it.
PACKABLE_STABILIZERS = ("ReInit", "NoisyTune")

# (member index, curve points) -> None: a member's points as they accumulate, like trial.FlushCallback.
PackedFlush = Callable[[int, list[CurvePoint]], None]


# On the 2-core CPU every pass wider than one seed trained slower than the same seeds alone (one pass of 2: 0.90x, 4:
# 0.83-0.88x, 8 in passes of 4: 0.72-0.84x), since one seed's products already keep a CPU busy; so there a pack's seeds
# train one at a time unless --pack-pass says otherwise.
CPU_PASS_SEEDS = 1


def seeds_per_pass(device: torch.device, pack_pass: int | None = None) -> int | None:
    """How many seeds of a pack train in one pass on this device (None: all of them): --pack-pass if given."""
    if pack_pass is not None:
        return pack_pass
    return CPU_PASS_SEEDS if device.type == "cpu" else None


def pack_key(config: TrialConfig) -> str:
    """What trials must share to train as one pack: everything but their seeds."""
    return json.dumps({k: v for k, v in config.model_dump(mode="json").items() if k not in SEED_FIELDS}, sort_keys=True)


def pack_refusal(configs: list[TrialConfig], options: RunOptions) -> str | None:
    """Why these trials cannot train as one pack (a one-line reason), or None."""
    from ..stabilizers import active_stabilizers
    from ..training.inputs import resolve_task

    if len({pack_key(c) for c in configs}) > 1:
        return "the trials of a pack must differ only in their seeds"
    config = configs[0]
    unpackable_model = model_refusal(config.model)
    if unpackable_model:
        return unpackable_model
    others = [type(m).__name__ for m in active_stabilizers(config) if type(m).__name__ not in PACKABLE_STABILIZERS]
    if others:
        return f"{', '.join(others)} changes training step by step: runs unpacked"
    if config.eval_precision == "int8":
        return "--eval-precision int8 runs unpacked"
    if options.save_checkpoints or options.keep_weights or options.checkpoint_every is not None:
        return "snapshots, kept weights and autosaves run unpacked"
    if config.head != "linear" or resolve_task(config).tagging:
        return "packing covers sequence classification with a linear head"
    return None


class PackedTrial:
    """K prepared trials of one config at one step (fresh, or restored from their saved states), ready to `run` as
    one pack."""

    def __init__(self, members: list[Trial], options: RunOptions):
        reason = pack_refusal([member.config for member in members], options)
        if reason:
            raise NotPackable(reason)
        if len({member.step for member in members}) > 1:
            raise NotPackable("the trials of a pack must stand at one step")
        self.members = members
        first = members[0]
        reason = packable(first.model)
        if reason:
            raise NotPackable(reason)
        self.config, self.options, self.task, self.device = first.config, options, first.task, first.device
        self.parts = {part: [name for name, p in first.model.named_parameters() if any(p is q for q in params)]
                      for part, params in part_parameters(first.model).items()} if options.log_grads_every else {}
        excluded = no_weight_decay(first.model)
        # Buffers the state file carries beside the parameters (none trains): the first member's stand for all.
        self.buffers = {key: value for key, value in first.model.state_dict().items()
                        if key not in dict(first.model.named_parameters())}
        self.state_keys = list(first.model.state_dict())
        # A member's optimizer state, by parameter name: how its own optimizer numbers the parameters.
        by_id = {id(p): name for name, p in first.model.named_parameters()}
        self.single_groups = first.optimizer.state_dict()["param_groups"]
        self.single_order = [by_id[id(p)] for group in first.optimizer.param_groups for p in group["params"]]
        member_states = [member.optimizer.state_dict()["state"] for member in members]
        scheduler_state = first.scheduler.state_dict()
        self.model = PackedClassifier([member.model for member in members]).to(self.device)
        for member in members:  # their weights live in the pack now
            member.hand_over()
        self.decayed = [name for name in self.model.names if name not in excluded]
        self.part_rows = {part: [self.model.names.index(n) for n in names] for part, names in self.parts.items()}
        self.active = list(range(len(members)))
        self.optimizer, self.scheduler = self._optimizer()
        if any(member_states):  # restored members: their Adam moments, stacked
            self._load_member_states(member_states, scheduler_state)
        # Each member's dropout stream, as its Trial left it (seeded with dropout_seed after the model was built).
        self.generators = [self._generator(member) for member in members]
        self.pad_token_id = first.pad_token_id
        self.orders: dict[tuple[int, int], list[np.ndarray]] = {}

    @classmethod
    def from_configs(cls, configs: list[TrialConfig], options: RunOptions) -> PackedTrial:
        reason = pack_refusal(configs, options)
        if reason:
            raise NotPackable(reason)
        configure_torch(options)
        return cls([Trial(config, options) for config in configs], options)

    def _load_member_states(self, states: list[dict], scheduler_state: dict) -> None:
        index = {name: i for i, name in enumerate(self.single_order)}
        packed = self.optimizer.state_dict()
        for packed_id, name in self._packed_ids(packed).items():
            per_member = [state.get(index[name]) for state in states]
            if any(s is None for s in per_member):
                continue
            packed["state"][packed_id] = {key: (torch.stack([s[key] for s in per_member]).to(self.device)
                                                if isinstance(value, torch.Tensor) and value.dim() > 0 else value)
                                          for key, value in per_member[0].items()}
        for group in packed["param_groups"]:  # the schedule's current rate (one for all groups without LLRD)
            group["lr"] = self.single_groups[0]["lr"]
        self.optimizer.load_state_dict(packed)
        self.scheduler.load_state_dict(scheduler_state)

    def _packed_ids(self, packed: dict) -> dict[int, str]:
        """The packed optimizer's parameter ids (in a state dict) and their names: decayed ones first, as built."""
        ids = [p for group in packed["param_groups"] for p in group["params"]]
        return dict(zip(ids, [*self.decayed, *(n for n in self.model.names if n not in self.decayed)]))

    def save_member_state(self, k: int, path: Path) -> None:
        """Member k's state as its single trial saves it (trial.Trial.save_state): a study continues it alone or in
        another pack."""
        slot = self.active.index(k)
        member = self.members[k]
        member.handed_back(member.elapsed, self.generators[k].get_state())
        weights = {name: self.model.weight(name)[slot].detach().clone() for name in self.model.names}
        model_state = {key: weights[key] if key in weights else self.buffers[key] for key in self.state_keys}
        packed = self.optimizer.state_dict()
        by_name = {name: packed_id for packed_id, name in self._packed_ids(packed).items()}
        state = {}
        for i, name in enumerate(self.single_order):
            saved = packed["state"].get(by_name[name])
            if saved is not None:
                state[i] = {key: (value[slot].clone() if isinstance(value, torch.Tensor) and value.dim() > 0 else value)
                            for key, value in saved.items()}
        groups = [{**group, "lr": packed["param_groups"][0]["lr"]} for group in self.single_groups]
        member.save_state(path, trained={"model": model_state, "optimizer": {"state": state, "param_groups": groups},
                                         "scheduler": self.scheduler.state_dict()})

    def _generator(self, member: Trial) -> torch.Generator:
        generator = torch.Generator(device=self.device)
        generator.set_state(member.dropout_rng["cuda" if self.device.type == "cuda" else "cpu"])
        return generator

    def _optimizer(self):
        stacked = {name: self.model.weight(name) for name in self.model.names}
        groups = [{"params": [stacked[n] for n in self.decayed], "weight_decay": self.config.weight_decay},
                  {"params": [stacked[n] for n in self.model.names if n not in self.decayed], "weight_decay": 0.0}]
        return optimizer_and_schedule(self.config, [g for g in groups if g["params"]], self.members[0].total_steps)

    @property
    def step(self) -> int:
        return self.members[self.active[0]].step if self.active else self.members[0].total_steps

    def run(self, flush: PackedFlush, stop_at: list[int | None] | None = None,
            on_stop: Callable[[int], object] | None = None) -> list[tuple[TrialOutcome, list[CurvePoint]]]:
        """Train every member to its end, until it diverges, or to its step in `stop_at` (then it is 'stopped', as a
        single trial's run(stop_at=...), and `on_stop(k)` may save its state before it goes); per member, its
        outcome and unflushed points. A member that is done leaves the pack at once, and the others go on without
        it. Each member is charged its share of the pack's wall time."""
        started = time.perf_counter()
        before = [member.elapsed for member in self.members]

        def charge(k: int) -> None:
            self.members[k].handed_back(before[k] + (time.perf_counter() - started) / len(self.members),
                                        self.generators[k].get_state())

        pending: list[list[CurvePoint]] = [[] for _ in self.members]
        total = self.members[0].total_steps
        limits = [total if s is None else min(s, total) for s in (stop_at or [None] * len(self.members))]
        self.model.train()
        while self.active:
            for k, points in zip(self.active, self._train_step()):
                pending[k] += points
            for k, points in self._evaluate([k for k in self.active if self.members[k].step in
                                             self.members[k].eval_at and not self.members[k].diverged]).items():
                flush(k, pending[k] + points)
                pending[k] = []
            finished = [k for k in self.active if self.members[k].diverged or self.members[k].step >= limits[k]]
            for k in finished:
                charge(k)
                if on_stop is not None and not self.members[k].finished:
                    on_stop(k)
            if finished:
                self._leave(finished)
        outcomes = []
        for k, member in enumerate(self.members):
            outcome = member.outcome()
            device = f"{outcome.device}, packed with {len(self.members) - 1} other seed(s)"
            outcomes.append((TrialOutcome(**{**outcome.__dict__, "device": device}), pending[k]))
        return outcomes

    def _batch(self) -> tuple[dict[str, torch.Tensor], list[tuple[int, int]]]:
        """Each active member's next batch (its DO order), padded to the largest: [K, B, L] tensors."""
        c = self.config
        batches, collated = [], {}
        for k in self.active:
            member = self.members[k]
            epoch, done = divmod(member.step, member.per_epoch)
            order = (member.config.do_seed, epoch)
            if order not in self.orders:  # an epoch's batches, once per DO seed (a single trial also draws them once)
                self.orders[order] = ordering.epoch_batches(member.inputs.train.lengths, c.batch_size,
                                                            member.config.do_seed, epoch, c.group_by_length)
            indices = self.orders[order][done]
            key = tuple(indices)  # members of one DO seed share their batch: collated once
            if key not in collated:
                collated[key] = collate(member.inputs.train, indices, self.pad_token_id, self.task.is_regression)
            batches.append(collated[key])
        return _stacked(batches, self.pad_token_id), [tuple(b["input_ids"].shape) for b in batches]

    def _train_step(self) -> list[list[CurvePoint]]:
        c, every = self.config, self.options.log_grads_every
        step = self.step
        diagnose = every > 0 and step % every == 0
        batch, shapes = self._batch()
        batch = {name: tensor.to(self.device) for name, tensor in batch.items()}
        with bf16_autocast(self.device, c.train_precision == "bf16"):
            out = self.model(**batch, generators=[self.generators[k] for k in self.active], shapes=shapes)
        losses = out.loss.detach().cpu().tolist()
        lr = self.scheduler.get_last_lr()[0]
        out.loss.sum().backward()
        grads = self.model.named_seed_grads()
        norms = torch.stack([torch.linalg.vector_norm(g.reshape(len(self.active), -1), dim=1) for g in grads.values()])
        total = torch.linalg.vector_norm(norms, dim=0)  # clip_grad_norm_'s total norm, per seed
        parts = {f"grad.{part}": torch.linalg.vector_norm(norms[rows], dim=0)
                 for part, rows in self.part_rows.items()} if diagnose else {}
        max_norm = c.max_grad_norm if c.max_grad_norm else math.inf
        coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
        for g in grads.values():
            g.mul_(coef.view(-1, *([1] * (g.dim() - 1))))
        clipped = None
        if diagnose:  # the total norm per seed after clipping
            per_tensor = [torch.linalg.vector_norm(g.reshape(len(self.active), -1), dim=1) for g in grads.values()]
            clipped = torch.linalg.vector_norm(torch.stack(per_tensor), dim=0)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        points_per_member = []
        for i, k in enumerate(self.active):
            grad_norm, diagnostics = float(total[i]), {}
            if diagnose and math.isfinite(losses[i]):
                rows = shapes[i][0]
                pooled = out.pooled[i, :rows]
                diagnostics = {**{name: float(value[i]) for name, value in parts.items()}, "grad.total": grad_norm,
                               "grad.total_clipped": float(clipped[i]),
                               "pooler_saturation": (pooled.abs() >= SATURATION_THRESHOLD).float().mean().item(),
                               **prediction_summary(out.logits[i, :rows], self.task.is_regression)}
            points_per_member.append(self.members[k].record_step(losses[i], grad_norm, lr, diagnostics))
        return points_per_member

    @torch.inference_mode()
    def _evaluate(self, members: list[int]) -> dict[int, list[CurvePoint]]:
        """Dev (and the test half, if any) for these active members, each batch collated once for all of them."""
        if not members:
            return {}
        self.model.eval()
        slots = [self.active.index(k) for k in members]
        results: dict[int, dict[str, tuple[dict[str, float], np.ndarray]]] = {k: {} for k in members}
        splits = {"dev": self.members[0].inputs.dev, "test": self.members[0].inputs.test}
        for split, data in splits.items():
            if data is None:
                continue
            K = len(self.active)
            predictions = np.empty((K, len(data)), dtype=np.float32 if self.task.is_regression else np.int64)
            loss = np.zeros(K)
            for indices in length_sorted_batches(data, self.config.eval_batch_size):
                one = collate(data, indices, self.pad_token_id, self.task.is_regression)
                batch = {name: tensor.to(self.device).expand(K, *tensor.shape) for name, tensor in one.items()}
                with bf16_autocast(self.device, self.config.eval_precision == "bf16"):
                    out = self.model(**batch)
                loss += out.loss.double().cpu().numpy() * len(indices)
                logits = out.logits.float()
                predictions[:, indices] = (logits.squeeze(-1) if self.task.is_regression
                                           else logits.argmax(-1)).cpu().numpy()
            for i, k in zip(slots, members):
                metrics = compute_metrics(self.task, predictions[i], data.labels)
                metrics["loss"] = float(loss[i] / len(data))
                results[k][split] = (metrics, predictions[i])
        self.model.train()
        return {k: self.members[k].record_evaluation(by_split) for k, by_split in results.items()}

    def _leave(self, finished: list[int]) -> None:
        """Take finished members out of the pack: their slices of the parameters and optimizer state go."""
        keep = [i for i, k in enumerate(self.active) if k not in finished]
        self.active = [self.active[i] for i in keep]
        if not self.active:
            return
        index = torch.tensor(keep, device=self.device)
        state = self.optimizer.state_dict()
        schedule = self.scheduler.state_dict()
        self.model.keep_seeds(index)
        self.optimizer, self.scheduler = self._optimizer()
        for saved in state["state"].values():
            for key, value in saved.items():
                if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == len(keep) + len(finished):
                    saved[key] = value[index.to(value.device)].clone()
        self.optimizer.load_state_dict(state)
        self.scheduler.load_state_dict(schedule)


def _stacked(batches: list[dict[str, torch.Tensor]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Batches of different shapes as [K, B, L] tensors: padded rows and tokens are unattended, labels -100."""
    rows = max(b["input_ids"].shape[0] for b in batches)
    length = max(b["input_ids"].shape[1] for b in batches)
    fill = {"input_ids": pad_token_id, "attention_mask": 0, "token_type_ids": 0}
    out = {}
    for name, pad in fill.items():
        if name not in batches[0]:
            continue
        tensor = torch.full((len(batches), rows, length), pad, dtype=batches[0][name].dtype)
        for k, b in enumerate(batches):
            tensor[k, :b[name].shape[0], :b[name].shape[1]] = b[name]
        out[name] = tensor
    labels = torch.full((len(batches), rows), -100, dtype=batches[0]["labels"].dtype)
    for k, b in enumerate(batches):
        labels[k, :len(b["labels"])] = b["labels"]
    out["labels"] = labels
    return out
