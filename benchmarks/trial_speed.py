"""Seconds per training step: the Hugging Face Trainer vs steadytune on the same trial, in one process.

Runs the same model, task, hyperparameters and number of steps three ways: the HF Trainer with
every example padded to max_length (as run_glue.py does), the HF Trainer with dynamic padding, and
steadytune. Prints s/step, real (non-padding) tokens per second, the share of this machine's fp32
matmul peak reached on real tokens (FLOPs: 6 x non-embedding parameters per token, plus attention),
and the dev-set evaluation time in fp32 and with --eval-precision int8 (re-quantizing the weights
included, as a trial does before each evaluation), with the int8 - fp32 difference of the dev metrics
of that same model.

Speed must not cost accuracy: with --seeds N (default 3; 0 skips it) it then trains N seeds, each
through the HF Trainer (dynamic padding) and steadytune, on --check-train examples for --check-steps
steps with the same hyperparameters, evaluates both final models with the same fp32 evaluation,
and tests whether the two sets of dev metrics differ beyond seed noise (Welch t-test and
Mann-Whitney U). The last line is machine-readable:

    ratio_vs_hf_dynamic=R peak_share=S

Usage: python benchmarks/trial_speed.py --glue-dir ../shared/data/glue [--steps 30] [--seeds 3]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from steadytune.config import RunOptions, TrialConfig
from steadytune.encoding import EncodedDataset
from steadytune.evaluation import evaluate
from steadytune.quantization import Int8Twin
from steadytune.trial import Trial

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


def hf_dataset(data: EncodedDataset):
    """The encoded examples as a Hugging Face Dataset (what run_glue.py's tokenization produces)."""
    from datasets import Dataset

    rows = {"input_ids": [ids.tolist() for ids in data.input_ids], "labels": data.labels.tolist()}
    if data.token_type_ids is not None:
        rows["token_type_ids"] = [t.tolist() for t in data.token_type_ids]
    rows["attention_mask"] = [[1] * len(ids) for ids in rows["input_ids"]]
    return Dataset.from_dict(rows)


def hf_trainer(config: TrialConfig, trial: Trial, steps: int, pad_to_max: bool, callbacks=()):
    """An HF Trainer for `steps` steps on the trial's encoded training examples, with the trial's hyperparameters
    (AdamW, linear warmup and decay, weight decay off biases and LayerNorm, clipping); seeded with wi_seed."""
    from transformers import (AutoModelForSequenceClassification, DataCollatorWithPadding, PrinterCallback, Trainer,
                              TrainingArguments, set_seed)

    collator = DataCollatorWithPadding(trial.tokenizer, padding="max_length" if pad_to_max else "longest",
                                       max_length=config.max_length)
    set_seed(config.wi_seed)  # the new head is drawn from the global RNG
    model = AutoModelForSequenceClassification.from_pretrained(trial.model.name_or_path, num_labels=trial.task.num_labels)
    args = TrainingArguments(output_dir="/tmp/steadytune-bench-hf", per_device_train_batch_size=config.batch_size,
                             per_device_eval_batch_size=config.eval_batch_size, learning_rate=config.lr,
                             max_steps=steps, warmup_steps=round(config.warmup * steps),
                             weight_decay=config.weight_decay, adam_epsilon=config.adam_eps,
                             adam_beta1=config.adam_beta1, adam_beta2=config.adam_beta2,
                             max_grad_norm=config.max_grad_norm, use_cpu=True, report_to="none",
                             save_strategy="no", eval_strategy="no", logging_strategy="no", disable_tqdm=True,
                             seed=config.wi_seed)
    trainer = Trainer(model=model, args=args, train_dataset=hf_dataset(trial.inputs.train), data_collator=collator,
                      callbacks=list(callbacks))
    trainer.remove_callback(PrinterCallback)  # its end-of-training dict would cut into our tables
    return trainer


def run_hf_trainer(config: TrialConfig, trial: Trial, steps: int, pad_to_max: bool) -> float:
    """HF Trainer on the same encoded examples (no evaluation); returns s/step."""
    from transformers import TrainerCallback

    clock = StepClock()

    class Clock(TrainerCallback):
        def on_step_end(self, *args, **kwargs):
            clock.tick()

    hf_trainer(config, trial, steps, pad_to_max, [Clock()]).train()
    return clock.seconds_per_step()


def time_hf_evaluation(config: TrialConfig, trial: Trial, repeats: int) -> float:
    """Median seconds of `trainer.evaluate()` on the dev set: dynamic padding, batch --eval-batch-size, dataset order."""
    trainer = hf_trainer(config, trial, 1, pad_to_max=False)
    dev = hf_dataset(trial.inputs.dev)
    return statistics.median(_timed(lambda: trainer.evaluate(dev)) for _ in range(repeats))


def run_steadytune(config: TrialConfig, options: RunOptions, steps: int) -> tuple[float, Trial]:
    trial = Trial(config.model_copy(update={"max_steps": steps, "evals_per_epoch": 0}), options)
    clock = StepClock()
    trial.run(flush=lambda points: None, progress=lambda step, total, values: clock.tick())
    return clock.seconds_per_step(), trial


def dev_eval(trial: Trial, model, batch_size: int) -> dict[str, float]:
    return evaluate(model, trial.inputs.dev, trial.task, batch_size, torch.device("cpu"), trial.pad_token_id)


def timed_dev_eval(trial: Trial, batch_size: int, precision: str, repeats: int) -> tuple[float, dict[str, float]]:
    """Median seconds of `repeats` whole dev evaluations, and the metrics.

    int8 builds the twin once, as a trial does, and each timed evaluation refreshes it from the model first.
    """
    twin = Int8Twin(trial.model) if precision == "int8" else None
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        metrics = dev_eval(trial, twin.refresh() if twin else trial.model, batch_size)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), metrics


def check_dev_distributions(config: TrialConfig, options: RunOptions, seeds: int, train_examples: int,
                            steps: int) -> None:
    """Final dev metric of `seeds` seeds through the HF Trainer (dynamic padding) and steadytune: same within noise?"""
    from scipy import stats

    print(f"\ndev metric over {seeds} seeds: {config.task} {config.model}, {train_examples} training examples "
          f"(--max-train), {steps} steps at batch {config.batch_size}, lr {config.lr:g}, warmup {config.warmup:g}; "
          f"seed s = wi/do/dropout seed of steadytune and the HF Trainer's seed; both final models evaluated "
          f"by steadytune's fp32 evaluation")
    hf, ours, ours_int8 = [], [], []
    for seed in range(1, seeds + 1):
        seeded = config.model_copy(update={"wi_seed": seed, "do_seed": seed, "max_train": train_examples,
                                           "max_steps": steps, "evals_per_epoch": 0})
        trial = Trial(seeded, options)
        outcome, _ = trial.run(flush=lambda points: None)
        metric = trial.task.metric
        ours.append(outcome.final_metrics[metric])
        ours_int8.append(dev_eval(trial, Int8Twin(trial.model).refresh(), seeded.eval_batch_size)[metric])
        trainer = hf_trainer(seeded, trial, steps, pad_to_max=False)
        trainer.train()
        hf.append(dev_eval(trial, trainer.model, seeded.eval_batch_size)[metric])
        if seed == 1:
            print(f"{'seed':<6} {'hf-dynamic':>11} {'steadytune':>11} {'steadytune int8':>16}   ({metric})")
        print(f"{seed:<6} {hf[-1]:>11.4f} {ours[-1]:>11.4f} {ours_int8[-1]:>16.4f}")
    spread = lambda values: statistics.stdev(values) if len(values) > 1 else 0.0  # noqa: E731
    print(f"{'mean':<6} {np.mean(hf):>11.4f} {np.mean(ours):>11.4f} {np.mean(ours_int8):>16.4f}")
    print(f"{'std':<6} {spread(hf):>11.4f} {spread(ours):>11.4f} {spread(ours_int8):>16.4f}")
    if len(set(hf) | set(ours)) == 1:  # no variance at all: the tests are undefined, the values equal
        welch = mann_whitney = 1.0
    else:
        welch = stats.ttest_ind(hf, ours, equal_var=False).pvalue
        welch = float(welch) if np.isfinite(welch) else 0.0  # each side constant but different from the other
        mann_whitney = float(stats.mannwhitneyu(hf, ours, alternative="two-sided").pvalue)
    verdict = "same within noise" if welch >= 0.05 else "DIFFERENT"
    print(f"dev metric distributions: {verdict} (Welch p={welch:.3f}, Mann-Whitney U p={mann_whitney:.3f}, "
          f"steadytune - hf = {np.mean(ours) - np.mean(hf):+.4f}, n={seeds} seeds each)")


def main() -> None:
    class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
        pass

    parser = argparse.ArgumentParser(description=__doc__.rsplit("\n\nUsage:", 1)[0], formatter_class=Formatter)
    parser.add_argument("--glue-dir", required=True, help="GLUE data in the download_glue_data.py layout.")
    parser.add_argument("--task", default="rte", help="GLUE task.")
    parser.add_argument("--model", default="minilm-l6", help="Model (as steadytune train --model).")
    parser.add_argument("--steps", type=int, default=30,
                        help=f"Timed training steps per run (>= {WARMUP_STEPS + 1}; the first {WARMUP_STEPS} are "
                        "warm-up and not timed).")
    parser.add_argument("--batch-size", type=int, default=16, help="Training batch size (timing and seed check).")
    parser.add_argument("--eval-batch-size", type=int, default=TrialConfig().eval_batch_size,
                        help="Evaluation batch size of the dev evaluation timing and the seed check.")
    parser.add_argument("--eval-repeats", type=int, default=5,
                        help="Dev evaluations timed per precision; the median is printed.")
    parser.add_argument("--seeds", type=int, default=3,
                        help="Seeds of the dev-metric check (HF Trainer vs steadytune), at least 2; 0 skips it.")
    parser.add_argument("--check-train", type=int, default=500,
                        help="Training examples (--max-train) of each seed-check run.")
    parser.add_argument("--check-steps", type=int, default=50, help="Training steps of each seed-check run.")
    args = parser.parse_args()
    if args.steps <= WARMUP_STEPS:
        parser.error(f"--steps must be at least {WARMUP_STEPS + 1}")
    if args.seeds == 1:
        parser.error("--seeds: a comparison of distributions needs at least 2 seeds (or 0 to skip it)")

    config = TrialConfig(task=args.task, model=args.model, glue_dir=args.glue_dir, batch_size=args.batch_size,
                         eval_batch_size=args.eval_batch_size)
    options = RunOptions(device="cpu")
    peak = matmul_peak_gflops()
    print(f"threads={torch.get_num_threads()} fp32 matmul peak {peak:.1f} GFLOP/s")

    ours, trial = run_steadytune(config, options, args.steps)
    non_embedding, layers, hidden = model_shape(trial.model)
    lengths = trial.inputs.train.lengths

    # Evaluation is timed right after training, as in a trial's own process: timed after the HF runs below,
    # which leave their allocations behind, the same evaluations ran 10-20% slower.
    eval_seconds, fp32 = timed_dev_eval(trial, config.eval_batch_size, "fp32", args.eval_repeats)
    int8_seconds, int8 = timed_dev_eval(trial, config.eval_batch_size, "int8", args.eval_repeats)
    twin = Int8Twin(trial.model)
    refresh_seconds = min(_timed(twin.refresh) for _ in range(args.eval_repeats))

    results = {name: run_hf_trainer(config, trial, args.steps, pad)
               for name, pad in (("hf-pad128", True), ("hf-dynamic", False))}
    hf_eval_seconds = time_hf_evaluation(config, trial, args.eval_repeats)

    # Real tokens per step: each run draws random batches from the same examples, so use their mean.
    mean_tokens = lengths.mean() * args.batch_size
    mean_flops = np.mean([flops_per_example(int(n), non_embedding, layers, hidden) for n in lengths]) * args.batch_size

    print(f"\n{args.task} {args.model} batch {args.batch_size}, {args.steps} steps ({WARMUP_STEPS} warm-up excluded), "
          f"mean real length {lengths.mean():.1f} tokens")
    print(f"{'run':<12} {'s/step':>8} {'real tok/s':>11} {'peak share':>11}")
    rows = [*results.items(), ("steadytune", ours)]
    for name, seconds in rows:
        print(f"{name:<12} {seconds:>8.3f} {mean_tokens / seconds:>11.0f} {mean_flops / seconds / 1e9 / peak:>11.1%}")
    print(f"dev evaluation ({len(trial.inputs.dev)} examples, batch {config.eval_batch_size}, median of "
          f"{args.eval_repeats}): fp32 {eval_seconds:.2f} s, int8 {int8_seconds:.2f} s "
          f"(includes re-quantizing the weights: {refresh_seconds:.3f} s); HF Trainer.evaluate {hf_eval_seconds:.2f} s "
          f"(fp32, ratio fp32/HF {eval_seconds / hf_eval_seconds:.2f})")
    print("int8 - fp32 on the steadytune model above: "
          + ", ".join(f"{name} {int8[name] - fp32[name]:+.4f} ({fp32[name]:.4f} -> {int8[name]:.4f})" for name in fp32))
    if args.seeds:
        check_dev_distributions(config, options, args.seeds, args.check_train, args.check_steps)
    ratio = ours / results["hf-dynamic"]
    print(f"ratio_vs_hf_dynamic={ratio:.3f} peak_share={mean_flops / ours / 1e9 / peak:.3f}")


if __name__ == "__main__":
    main()
