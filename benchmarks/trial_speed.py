"""Seconds per training step: the Hugging Face Trainer vs steadytune on the same trial, in one process.

Runs the same model, task, hyperparameters and number of steps three ways: the HF Trainer with
every example padded to max_length (as run_glue.py does), the HF Trainer with dynamic padding, and
steadytune. Prints s/step, real (non-padding) tokens per second, the share of this machine's fp32
matmul peak reached on real tokens (FLOPs: 6 x non-embedding parameters per token, plus attention),
and the dev-set evaluation time. The last line is machine-readable:

    ratio_vs_hf_dynamic=R peak_share=S

Usage: python benchmarks/trial_speed.py --glue-dir ../shared/data/glue [--steps 30] [--task rte]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from steadytune.config import RunOptions, TrialConfig
from steadytune.encoding import EncodedDataset
from steadytune.trial import Trial, evaluate

WARMUP_STEPS = 3  # excluded from timing: first steps pay for allocation and kernel selection


def matmul_peak_gflops(size: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def flops_per_example(length: int, non_embedding_params: int, layers: int, hidden: int) -> float:
    """Forward+backward FLOPs of one example of `length` real tokens."""
    return 6 * non_embedding_params * length + 12 * layers * hidden * length**2


def model_shape(model) -> tuple[int, int, int]:
    embedding_params = sum(p.numel() for n, p in model.named_parameters() if "embeddings" in n)
    total = sum(p.numel() for p in model.parameters())
    return total - embedding_params, model.config.num_hidden_layers, model.config.hidden_size


class StepClock:
    """Wall time of every training step after the warm-up ones."""

    def __init__(self):
        self.stamps: list[float] = []

    def tick(self) -> None:
        self.stamps.append(time.perf_counter())

    def seconds_per_step(self) -> float:
        timed = np.diff(self.stamps[WARMUP_STEPS - 1:])
        return float(np.median(timed))


def run_hf_trainer(config: TrialConfig, trial: Trial, steps: int, pad_to_max: bool) -> float:
    """HF Trainer on the same encoded examples (no evaluation); returns s/step."""
    from datasets import Dataset
    from transformers import (AutoModelForSequenceClassification, DataCollatorWithPadding, Trainer, TrainerCallback,
                              TrainingArguments)

    train: EncodedDataset = trial.inputs.train
    rows = {"input_ids": [ids.tolist() for ids in train.input_ids], "labels": train.labels.tolist()}
    if train.token_type_ids is not None:
        rows["token_type_ids"] = [t.tolist() for t in train.token_type_ids]
    rows["attention_mask"] = [[1] * len(ids) for ids in rows["input_ids"]]
    dataset = Dataset.from_dict(rows)
    collator = DataCollatorWithPadding(trial.tokenizer, padding="max_length" if pad_to_max else "longest",
                                       max_length=config.max_length)
    model = AutoModelForSequenceClassification.from_pretrained(trial.model.name_or_path, num_labels=trial.task.num_labels)
    clock = StepClock()

    class Clock(TrainerCallback):
        def on_step_end(self, *args, **kwargs):
            clock.tick()

    args = TrainingArguments(output_dir="/tmp/steadytune-bench-hf", per_device_train_batch_size=config.batch_size,
                             learning_rate=config.lr, max_steps=steps, warmup_steps=round(0.1 * steps),
                             weight_decay=config.weight_decay, adam_epsilon=config.adam_eps,
                             max_grad_norm=config.max_grad_norm, use_cpu=True, report_to="none",
                             save_strategy="no", eval_strategy="no", logging_strategy="no", disable_tqdm=True,
                             seed=config.wi_seed)
    Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator, callbacks=[Clock()]).train()
    return clock.seconds_per_step()


def run_steadytune(config: TrialConfig, options: RunOptions, steps: int) -> tuple[float, Trial]:
    trial = Trial(config.model_copy(update={"max_steps": steps, "evals_per_epoch": 0}), options)
    clock = StepClock()
    trial.run(flush=lambda points: None, progress=lambda step, total, values: clock.tick())
    return clock.seconds_per_step(), trial


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--glue-dir", required=True)
    parser.add_argument("--task", default="rte")
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    config = TrialConfig(task=args.task, model=args.model, glue_dir=args.glue_dir, batch_size=args.batch_size)
    options = RunOptions(device="cpu")
    peak = matmul_peak_gflops()
    print(f"threads={torch.get_num_threads()} fp32 matmul peak {peak:.1f} GFLOP/s")

    ours, trial = run_steadytune(config, options, args.steps)
    non_embedding, layers, hidden = model_shape(trial.model)
    lengths = trial.inputs.train.lengths

    results = {name: run_hf_trainer(config, trial, args.steps, pad)
               for name, pad in (("hf-pad128", True), ("hf-dynamic", False))}

    # Real tokens per step: each run draws random batches from the same examples, so use their mean.
    mean_tokens = lengths.mean() * args.batch_size
    mean_flops = np.mean([flops_per_example(int(n), non_embedding, layers, hidden) for n in lengths]) * args.batch_size

    eval_start = time.perf_counter()
    evaluate(trial.model, trial.inputs.dev, trial.task, config.eval_batch_size, torch.device("cpu"), trial.pad_token_id)
    eval_seconds = time.perf_counter() - eval_start

    print(f"\n{args.task} {args.model} batch {args.batch_size}, {args.steps} steps ({WARMUP_STEPS} warm-up excluded), "
          f"mean real length {lengths.mean():.1f} tokens")
    print(f"{'run':<12} {'s/step':>8} {'real tok/s':>11} {'peak share':>11}")
    rows = [*results.items(), ("steadytune", ours)]
    for name, seconds in rows:
        print(f"{name:<12} {seconds:>8.3f} {mean_tokens / seconds:>11.0f} {mean_flops / seconds / 1e9 / peak:>11.1%}")
    print(f"dev evaluation ({len(trial.inputs.dev)} examples): {eval_seconds:.2f} s")
    ratio = ours / results["hf-dynamic"]
    print(f"ratio_vs_hf_dynamic={ratio:.3f} peak_share={mean_flops / ours / 1e9 / peak:.3f}")


if __name__ == "__main__":
    main()
