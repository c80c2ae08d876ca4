"""One fine-tuning trial: the training loop, periodic evaluation, best-so-far tracking.

Randomness has exactly three sources, each with its own seed: the head (and re-initialized
layers) come from a torch.Generator seeded with wi_seed, the data order from (do_seed, epoch)
(see training/ordering.py), and dropout/Mixout masks from the global torch RNG, seeded with dropout_seed
only after the model is built, so nothing else draws from it.
"""
from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import get_scheduler

from ..config import ConfigError, RunOptions, TrialConfig
from ..data.encoding import collate
from ..errors import StoreError
from ..models.loading import ModelError, load_classifier, load_tokenizer, save_encoder
from ..models.quantization import Int8Twin
from ..stabilizers import active_stabilizers
from ..stabilizers.bias_correction import build_optimizer
from ..stabilizers.llrd import parameter_groups
from ..tagging.encoding import collate_tags
from ..tagging.heads import tag_share, tagging_forward
from . import ordering
from .checkpoints import checkpoint_steps, save_checkpoint
from .diagnostics import PoolerProbe, gradient_norms, part_parameters, prediction_summary
from .evaluation import evaluate_with_predictions
from .inputs import TrialInputs, prepare_inputs
from .layout import StoreFiles, file_sha256
from .records import CurvePoint, Predictions, TrialOutcome, TrialStatus
from .state_file import StateFileError, load_state_file, save_state_file

# (step, total steps, latest values to show) -> None; called after every optimizer step.
ProgressCallback = Callable[[int, int, dict[str, float]], None]
# Receives curve points as they accumulate (at every evaluation), so an interrupted trial keeps its partial curve.
FlushCallback = Callable[[list[CurvePoint]], None]


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name}: not a device; use cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = "this PyTorch build has no CUDA support" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ConfigError(f"--device {name}: {build}; use --device cpu (or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) visible")
    elif device.type != "cpu":
        raise ConfigError(f"--device {name}: steadytune runs on cpu or cuda")
    return device


def optimizer_and_schedule(config: TrialConfig, groups: list[dict], total_steps: int):
    """The config's optimizer over these parameter groups, and its lr schedule with warmup."""
    c = config
    optimizer = build_optimizer(c.optimizer, groups, c.lr, (c.adam_beta1, c.adam_beta2), c.adam_eps)
    warmup = round(c.warmup * total_steps) if c.warmup < 1 else int(c.warmup)
    schedule = {"linear": "linear", "constant": "constant_with_warmup", "cosine": "cosine"}[c.lr_schedule]
    return optimizer, get_scheduler(schedule, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)


def bf16_autocast(device: torch.device, enabled: bool) -> torch.autocast:
    """bfloat16 autocast on this device (--train-precision / --eval-precision bf16), or plain fp32 when not enabled.
    A training backward runs outside it, as autocast wants, and follows the forward's dtypes."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def configure_torch(options: RunOptions) -> None:
    if options.threads:
        torch.set_num_threads(options.threads)
    # Bit-identical reruns: refuse kernels that are nondeterministic on the chosen device.
    torch.use_deterministic_algorithms(True, warn_only=True)


@dataclass
class TrialState:
    """Best-so-far tracking across evaluations, with the per-example predictions (by split) of the last and the
    best evaluation."""

    metric: str
    best_value: float = -math.inf
    best_step: int | None = None
    best_metrics: dict[str, float] = field(default_factory=dict)
    last_metrics: dict[str, float] = field(default_factory=dict)
    last_step: int | None = None
    best_predictions: dict[str, np.ndarray] = field(default_factory=dict)
    last_predictions: dict[str, np.ndarray] = field(default_factory=dict)

    def observe(self, step: int, metrics: dict[str, float], predictions: dict[str, np.ndarray]) -> None:
        self.last_metrics, self.last_step, self.last_predictions = metrics, step, predictions
        if metrics[self.metric] > self.best_value:
            self.best_value, self.best_step, self.best_metrics = metrics[self.metric], step, metrics
            self.best_predictions = predictions


class Trial:
    """A prepared trial: data encoded and model built, ready to `run`.

    Preparation raises DataError/ModelError for bad input before anything is written to a store.
    """

    def __init__(self, config: TrialConfig, options: RunOptions, store_path: Path | None = None,
                 cache_records: Mapping[str, str] | None = None):
        """`store_path` resolves --init-from given as a trial id (its saved encoder lives beside the store);
        `cache_records`: the tokenization cache checksums the trial's store recorded (encoding.encode)."""
        configure_torch(options)
        self.config, self.options = config, options
        wants_gpu = options.device.startswith("cuda") or (options.device == "auto" and torch.cuda.is_available())
        if config.eval_precision == "int8" and wants_gpu:
            raise ConfigError(f"--eval-precision int8 runs on CPU only (PyTorch dynamic quantization); "
                              f"this trial's device is {options.device}: use --eval-precision fp32 or --device cpu")
        if options.save_model and config.adapter != "none":
            raise ConfigError("--save-model keeps a fine-tuned encoder for --init-from; an adapter trial leaves the "
                              "encoder as it was: keep its adapters with --keep-weights")
        self.device = pick_device(options.device)
        self.tokenizer = load_tokenizer(config.model)
        self.inputs: TrialInputs = prepare_inputs(config, self.tokenizer, options.cache_dir, cache_records)
        self.task = self.inputs.task
        wi_generator = torch.Generator().manual_seed(config.wi_seed)
        source = resolve_init_from(config.init_from, store_path) or config.model
        self.model = load_classifier(source, self.task, wi_generator, config.from_scratch, config.head,
                                     config.bio_constraints)
        self.stabilizers = active_stabilizers(config)
        for method in self.stabilizers:
            method.change_model(self.model, wi_generator)
        self.model.to(self.device)
        # Evaluated instead of the model under --eval-precision int8 (see models/quantization.py).
        self.int8_twin = Int8Twin(self.model) if config.eval_precision == "int8" else None
        self.pad_token_id = self.tokenizer.pad_token_id or 0
        self.per_epoch = ordering.steps_per_epoch(len(self.inputs.train), config.batch_size)
        self.total_steps = ordering.total_steps(len(self.inputs.train), config.batch_size, config.epochs,
                                                config.max_steps)
        self.eval_at = set(ordering.eval_steps(self.per_epoch, self.total_steps, config.evals_per_epoch))
        self.snapshot_at = set(checkpoint_steps(self.total_steps, options.save_checkpoints))
        self.checkpoint_at = self.snapshot_at | ({self.total_steps} if options.keep_weights else set())
        if self.checkpoint_at and store_path is None:
            raise StoreError("snapshots (--save-checkpoints, --keep-weights) live beside the store, so a trial that "
                             "keeps them needs one")
        self.checkpoint_folder = StoreFiles(store_path).snapshots(config.trial_key()) if self.checkpoint_at else None
        for method in self.stabilizers:
            method.begin(self.model, self.total_steps)
        self.diagnosed_parts = part_parameters(self.model) if options.log_grads_every else {}
        self.pooler_probe = PoolerProbe(self.model)
        # Built now so that options the model cannot take (e.g. LLRD on ALBERT) fail before anything is stored.
        self._start()

    @property
    def baseline_metric(self) -> float:
        return self.inputs.baseline[self.task.metric]

    def _optimizer(self):
        c = self.config
        groups = parameter_groups(self.model, c.lr, c.weight_decay)
        for method in self.stabilizers:
            groups = method.change_groups(self.model, groups)
        return optimizer_and_schedule(c, groups, self.total_steps)

    def _evaluate_all(self) -> list[CurvePoint]:
        """Evaluate dev (and the test half, if any); best-so-far is decided on dev alone."""
        c = self.config
        model = self.int8_twin.refresh() if self.int8_twin else self.model
        with bf16_autocast(self.device, c.eval_precision == "bf16"):
            scores = {"dev": evaluate_with_predictions(model, self.inputs.dev, self.task, c.eval_batch_size,
                                                       self.device, self.pad_token_id)}
            extra = []
            for method in self.stabilizers:
                for suffix, extra_model in method.evaluated_models().items():
                    metrics, _ = evaluate_with_predictions(extra_model, self.inputs.dev, self.task, c.eval_batch_size,
                                                           self.device, self.pad_token_id)
                    extra += [CurvePoint(self.step, self.step / self.per_epoch, "dev", f"{name}.{suffix}", value)
                              for name, value in metrics.items()]
            if self.inputs.test is not None:
                scores["test"] = evaluate_with_predictions(model, self.inputs.test, self.task, c.eval_batch_size,
                                                           self.device, self.pad_token_id)
        return self.record_evaluation(scores, extra)

    def record_evaluation(self, scores: dict[str, tuple[dict[str, float], np.ndarray]],
                          extra: list[CurvePoint] = ()) -> list[CurvePoint]:
        """An evaluation at the current step, by this trial or by a pack it trains in: per split (dev, and test if
        any), its metrics and per-example predictions. Returns its curve points (`extra`, other models' dev scores,
        after dev's) and updates the best-so-far, which dev alone decides."""
        epoch = self.step / self.per_epoch
        dev, dev_predictions = scores["dev"]
        points = [CurvePoint(self.step, epoch, "dev", name, value) for name, value in dev.items()] + list(extra)
        tracked, predictions = dict(dev), {"dev": dev_predictions}
        if "test" in scores:
            test, predictions["test"] = scores["test"]
            points += [CurvePoint(self.step, epoch, "test", name, value) for name, value in test.items()]
            tracked.update({f"test_{name}": value for name, value in test.items()})
        self.state.observe(self.step, tracked, predictions)
        return points

    def predictions(self, status: TrialStatus) -> tuple[Predictions, ...]:
        """Per-example predictions of the final evaluation (none for a diverged trial) and of the best one, with
        the gold labels, for every evaluated split."""
        splits = {"dev": self.inputs.dev, "test": self.inputs.test}
        found = []
        for split, data in splits.items():
            if data is None or split not in self.state.best_predictions:
                continue
            found.append(Predictions(split, "gold", None, np.asarray(data.labels)))
            found.append(Predictions(split, "best", self.state.best_step, self.state.best_predictions[split]))
            if status != TrialStatus.DIVERGED and split in self.state.last_predictions:
                found.append(Predictions(split, "final", self.state.last_step, self.state.last_predictions[split]))
        return tuple(found)

    def _start(self) -> None:
        """Build optimizer, schedule and loop state, and this trial's own dropout RNG stream."""
        self.optimizer, self.scheduler = self._optimizer()
        self.state = TrialState(metric=self.task.metric)
        self.step, self.diverged, self.elapsed = 0, False, 0.0
        self.flushed: list[CurvePoint] = []  # the points this process produced, for an autosave
        self.restored_points: list[CurvePoint] = []  # points a restored state carried, not yet recorded
        self.autosave: tuple[Path, float, float] | None = None
        self.on_autosaved: Callable[[Path, str], None] = lambda path, sha256: None  # the store records the hash
        self.files_written: list[tuple[str, str]] = []  # (path, sha256) of snapshots, recorded with the outcome
        with torch.random.fork_rng(devices=self._rng_devices()):
            torch.manual_seed(self.config.effective_dropout_seed)
            self.dropout_rng = self._get_rng()

    def _rng_devices(self) -> list[int]:
        return [self.device.index or 0] if self.device.type == "cuda" else []

    def _get_rng(self) -> dict[str, torch.Tensor]:
        state = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def _set_rng(self, state: dict[str, torch.Tensor]) -> None:
        torch.set_rng_state(state["cpu"])
        if "cuda" in state:
            torch.cuda.set_rng_state(state["cuda"], self.device)

    @property
    def finished(self) -> bool:
        return self.diverged or self.step >= self.total_steps

    def run(self, flush: FlushCallback, progress: ProgressCallback | None = None,
            stop_at: int | None = None) -> tuple[TrialOutcome, list[CurvePoint]]:
        """Train from where the trial stands to step `stop_at` (default: the end), or until the loss diverges.

        Returns the outcome and the points not yet flushed. A trial paused by `stop_at` reports status
        'stopped'; calling `run` again (here, or after `save_state`/`restore_state` elsewhere) continues
        it exactly as if it had never paused.
        """
        started = time.perf_counter()
        self.run_started = started
        limit = self.total_steps if stop_at is None else min(stop_at, self.total_steps)
        self.model.train()

        def recording(points: list[CurvePoint]) -> None:
            if self.autosave is not None:  # an autosave must carry every point the store has not seen
                self.flushed.extend(points)
            flush(points)

        # Dropout and Mixout draw from the global RNG; the trial's own stream is swapped in for the run, so
        # nothing else in the process (other trials, evaluation, user code) can shift its masks.
        with torch.random.fork_rng(devices=self._rng_devices()):
            self._set_rng(self.dropout_rng)
            try:
                pending = self._train_until(limit, recording, progress)
            finally:
                self.dropout_rng = self._get_rng()
        self.elapsed += time.perf_counter() - started
        return self.outcome(), pending

    def outcome(self) -> TrialOutcome:
        """Where the trial stands: diverged, complete, or stopped before its end."""
        status = (TrialStatus.DIVERGED if self.diverged else TrialStatus.COMPLETE if self.finished
                  else TrialStatus.STOPPED)
        return TrialOutcome(
            status=status, steps_done=self.step, total_steps=self.total_steps, metric=self.task.metric,
            final_metrics=self.state.last_metrics if status != TrialStatus.DIVERGED else {},
            best_metrics=self.state.best_metrics, best_step=self.state.best_step,
            baseline_metric=self.baseline_metric, wall_seconds=self.elapsed, predictions=self.predictions(status),
            **self.provenance())

    def provenance(self) -> dict:
        """Where and on what the trial ran: the outcome fields that are not results."""
        threads = torch.get_num_threads() if self.device.type == "cpu" else None
        return {"threads": threads, "device": str(self.device), "data_hash": self.inputs.data_hash,
                "files": tuple(self.files_written), "cache_entries": self.inputs.cache_entries,
                "host": socket.gethostname(), "slurm_job": slurm_job()}

    def failed_outcome(self, error: BaseException | str) -> TrialOutcome:
        """A `failed` outcome at the step the trial reached."""
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        return TrialOutcome.failed(text, self.task.metric, self.step, self.total_steps, self.baseline_metric,
                                   self.elapsed, **self.provenance())

    def _train_until(self, limit: int, flush: FlushCallback, progress: ProgressCallback | None) -> list[CurvePoint]:
        c, lengths, pending = self.config, self.inputs.train.lengths, []
        self._checkpoint()
        while self.step < limit and not self.diverged:
            epoch, done_in_epoch = divmod(self.step, self.per_epoch)
            batches = ordering.epoch_batches(lengths, c.batch_size, c.do_seed, epoch, c.group_by_length)
            for indices in batches[done_in_epoch:]:
                pending += self._train_step(indices)
                if self.diverged:
                    break
                self._checkpoint()
                if self.step in self.eval_at:
                    pending += self._evaluate_all()
                    flush(pending)
                    pending = []
                if progress is not None:
                    progress(self.step, self.total_steps, {"loss": self.last_loss, "best": self.state.best_value})
                self._autosave(pending)
                if self.step >= limit:
                    break
        return pending

    def autosave_to(self, path: Path, minutes: float, on_saved: Callable[[Path, str], None] | None = None) -> None:
        """Save the full state to `path` every `minutes` while training (preemption: see study.execute); `on_saved`
        gets the path and sha256 of each save, for the store to record."""
        self.autosave = (path, minutes * 60.0, time.monotonic())
        if on_saved is not None:
            self.on_autosaved = on_saved

    def _autosave(self, pending: list[CurvePoint]) -> None:
        if self.autosave is None or self.step >= self.total_steps:
            return
        path, every, last = self.autosave
        if time.monotonic() - last < every:
            return
        # Inside run(): the trial's dropout stream is the global RNG now, and the time of this run not yet counted.
        self.dropout_rng = self._get_rng()
        elapsed, self.elapsed = self.elapsed, self.elapsed + time.perf_counter() - self.run_started
        try:
            self.save_state(path, self.flushed + pending)
        finally:
            self.elapsed = elapsed
        self.on_autosaved(path, file_sha256(path))
        self.autosave = (path, every, time.monotonic())

    def _checkpoint(self) -> None:
        if self.step in self.checkpoint_at:
            # A landscape needs every parameter; a soup of adapter trials only what trained.
            trainable_only = self.config.adapter != "none" and self.step not in self.snapshot_at
            path = save_checkpoint(self.model, self.checkpoint_folder, self.step, self.config.trial_key(),
                                   trainable_only)
            self.files_written.append((str(path), file_sha256(path)))

    def _train_step(self, indices: np.ndarray) -> list[CurvePoint]:
        """One optimizer step; sets `diverged` when the loss or the gradient norm is not finite."""
        c = self.config
        every = self.options.log_grads_every
        diagnose = every > 0 and self.step % every == 0  # steps 1, K+1, 2K+1, ...: the first step is always seen
        self.pooler_probe.armed = diagnose
        with bf16_autocast(self.device, c.train_precision == "bf16"):
            if self.task.tagging:
                batch = {k: v.to(self.device)
                         for k, v in collate_tags(self.inputs.train, indices, self.pad_token_id).items()}
                loss, logits = tagging_forward(self.model, batch)
            else:
                collated = collate(self.inputs.train, indices, self.pad_token_id, self.task.is_regression)
                batch = {k: v.to(self.device) for k, v in collated.items()}
                out = self.model(**batch)
                loss, logits = out.loss, out.logits
            task_loss = loss.item()  # the task's loss; a stabilizer may add terms to what is minimized
            for method in self.stabilizers:
                loss = method.change_loss(self.model, batch, loss, logits)
        if not math.isfinite(task_loss):
            return self.record_step(task_loss)
        loss.backward()
        diagnostics = gradient_norms(self.diagnosed_parts) if diagnose else {}
        grad_norm = torch.nn.utils.clip_grad_norm_(
            self.model.parameters(), c.max_grad_norm if c.max_grad_norm else math.inf).item()
        if diagnose:
            clipped = [p.grad for p in self.model.parameters() if p.grad is not None]
            diagnostics.update({"grad.total": grad_norm,
                                "grad.total_clipped": torch.nn.utils.get_total_norm(clipped).item(),
                                **self.pooler_probe.saturation(),
                                **(tag_share(logits, batch["labels"]) if self.task.tagging
                                   else prediction_summary(logits, self.task.is_regression))})
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        for method in self.stabilizers:
            method.after_step(self.optimizer)
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return self.record_step(task_loss, grad_norm, lr, diagnostics)

    def record_step(self, loss: float, grad_norm: float = math.nan, lr: float = math.nan,
                    diagnostics: Mapping[str, float] | None = None) -> list[CurvePoint]:
        """An optimizer step taken, by this trial or by a pack it trains in: the step count, divergence (a loss or
        gradient norm that is not finite) and the step's curve points. A non-finite loss ends the trial before its
        backward pass, so it has no gradient norm."""
        self.step += 1
        self.last_loss = loss
        epoch = self.step / self.per_epoch
        if not math.isfinite(loss):
            self.diverged = True
            return [CurvePoint(self.step, epoch, "train", "loss", loss)]
        self.diverged = not math.isfinite(grad_norm)
        return [CurvePoint(self.step, epoch, "train", "loss", loss),
                CurvePoint(self.step, epoch, "train", "grad_norm", grad_norm),
                CurvePoint(self.step, epoch, "train", "lr", lr),
                *(CurvePoint(self.step, epoch, "diag", name, value) for name, value in (diagnostics or {}).items())]

    def hand_over(self) -> None:
        """Give the model, optimizer and schedule up to a pack that trains this trial's weights as a slice of its own
        (packed/): every reference to the single ones goes, so their memory is freed."""
        self.model = self.optimizer = self.scheduler = self.pooler_probe = None
        self.diagnosed_parts = {}

    def handed_back(self, elapsed: float, dropout_state: torch.Tensor) -> None:
        """What a pack reports of this trial when it leaves (or saves it): its wall time and its dropout stream."""
        self.elapsed = elapsed
        self.dropout_rng = {"cuda" if self.device.type == "cuda" else "cpu": dropout_state}

    def save_state(self, path: Path, points: list[CurvePoint] | None = None, trained: dict | None = None) -> None:
        """Everything a paused trial needs to continue bit-identically in another process (see state_file.py).
        `points`: curve points not recorded anywhere yet, which the continuation must report (preemption).
        `trained`: the model, optimizer and scheduler states, where they live elsewhere (a packed trial's slice)."""
        tracked = self.state
        trained = trained or {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                              "scheduler": self.scheduler.state_dict()}
        save_state_file(path, {
            "points": [[p.step, p.epoch, p.split, p.metric, p.value] for p in points or []],
            "trial_key": self.config.trial_key(), "step": self.step, "diverged": self.diverged,
            "elapsed": self.elapsed, "rng": self.dropout_rng, **trained,
            "stabilizers": {type(method).__name__: method.state() for method in self.stabilizers},
            "tracked": {"metric": tracked.metric, "best_value": tracked.best_value, "best_step": tracked.best_step,
                        "best_metrics": tracked.best_metrics, "last_metrics": tracked.last_metrics,
                        "last_step": tracked.last_step,
                        "best_predictions": {k: torch.from_numpy(v) for k, v in tracked.best_predictions.items()},
                        "last_predictions": {k: torch.from_numpy(v) for k, v in tracked.last_predictions.items()}}})

    def restore_state(self, path: Path) -> None:
        """Continue a trial saved by `save_state`, on a freshly constructed Trial of the same config: its
        optimizer and pretrained-WD anchor were built from the initial model, as at the original start.

        Raises StateFileError for a file that is damaged or holds another trial's state. The trial may be
        half-restored then: the caller builds a fresh one and runs it from the start (same result).
        """
        if self.step != 0:
            raise ValueError("restore_state needs a freshly constructed trial")
        saved = load_state_file(path)
        if saved.get("trial_key") != self.config.trial_key():
            raise StateFileError(f"{path} holds the state of another trial ({saved.get('trial_key')})")
        try:
            model_state = {**self.model.state_dict(), **saved["model"]}
            if set(saved["model"]) != set(self.model.state_dict()):
                raise StateFileError(f"{path}: its parameters do not match this trial's model")
            tracked = saved["tracked"]
            state = TrialState(tracked["metric"], float(tracked["best_value"]), tracked["best_step"],
                               dict(tracked["best_metrics"]), dict(tracked["last_metrics"]), tracked["last_step"],
                               _prediction_arrays(tracked["best_predictions"], self.inputs),
                               _prediction_arrays(tracked["last_predictions"], self.inputs))
            step, diverged, elapsed = int(saved["step"]), bool(saved["diverged"]), float(saved["elapsed"])
            restored_points = [CurvePoint(int(a), float(b), str(c), str(d), float(e))
                               for a, b, c, d, e in saved.get("points", [])]
            if any(not 0 <= point.step <= step for point in restored_points):
                raise StateFileError(f"{path}: saved curve points lie beyond the saved step {step}")
            rng = {k: v for k, v in saved["rng"].items() if isinstance(v, torch.Tensor)}
            if "cpu" not in rng or not 0 < step <= self.total_steps:
                raise StateFileError(f"{path}: state of step {step} does not fit this trial")
            self.model.load_state_dict(model_state)
            self.optimizer.load_state_dict(saved["optimizer"])
            self.scheduler.load_state_dict(saved["scheduler"])
            methods = saved.get("stabilizers", {})
            for method in self.stabilizers:
                method.load_state(methods.get(type(method).__name__, {}))
        except StateFileError:
            raise
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise StateFileError(f"{path}: state does not fit this trial ({type(err).__name__}: {err})") from None
        self.dropout_rng = rng
        self.step, self.diverged, self.elapsed, self.state = step, diverged, elapsed, state
        # Still unrecorded: a later autosave carries them again, so a second preemption loses none.
        self.restored_points, self.flushed = restored_points, list(restored_points)

    def save_encoder(self, folder: Path) -> None:
        save_encoder(self.model, self.tokenizer, folder)


def _prediction_arrays(saved: dict, inputs: TrialInputs) -> dict[str, np.ndarray]:
    """Predictions read back from a state file: one tensor per evaluated split, as long as that split."""
    sizes = {"dev": len(inputs.dev.labels), "test": len(inputs.test.labels) if inputs.test is not None else None}
    arrays = {}
    for split, values in saved.items():
        fits = isinstance(values, torch.Tensor) and values.dim() == 1 and len(values) == sizes.get(split)
        if split not in sizes or not fits:
            raise StateFileError(f"saved predictions for {split!r} do not fit this trial's data")
        arrays[split] = values.numpy().copy()
    return arrays


def slurm_job() -> str | None:
    """The SLURM job this process runs in (an array's job_task), from SLURM's environment; None outside SLURM."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")


def resolve_init_from(init_from: str | None, store_path: Path | None) -> str | None:
    """--init-from takes a trial id of the store (saved with --save-model) or a model folder."""
    if init_from is None:
        return None
    if not init_from.isdigit():
        folder = Path(init_from).expanduser()
        if not (folder / "config.json").is_file():
            raise ModelError(f"--init-from {init_from}: not a trial id of the store nor a model folder (a folder "
                             "with config.json and weights, as --save-model or save_pretrained writes)")
        return str(folder)
    if store_path is None:
        raise StoreError(f"--init-from {init_from} names a trial, which needs the store it is in")
    folder = StoreFiles(store_path).model(int(init_from))
    if not (folder / "config.json").exists():
        raise StoreError(f"--init-from {init_from}: trial {init_from} of {store_path} has no saved encoder "
                         f"(run it with --save-model); looked in {folder}")
    return str(folder)
