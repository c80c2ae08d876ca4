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
Mann-Whitney U).

Users pay for whole trials, and Dodge et al. evaluate 10 times per epoch. With --whole-train N (default
1,000; 0 skips it) it then times whole trials end to end, model loading included: --whole-epochs
epochs (default 1) on N training examples with --whole-evals evaluations per epoch (default 10), as
`steadytune train` runs it (into a store, with its default diagnostics and stored predictions), against
the HF Trainer (dynamic padding, eval_strategy="steps") evaluating the dev set after the very same
steps. Each whole trial runs in a fresh process, the two alternating --whole-repeats times, so that
neither inherits the other's state. It also evaluates steadytune's final model in another fresh
process, to check that evaluation inside a trial is no slower than outside one. The last line is
machine-readable (T: the ratio of the median wall times of the whole trials):

    ratio_vs_hf_dynamic=R peak_share=S trial_ratio=T

R is steadytune's training time per real token over the HF Trainer's (dynamic padding).

With --train-precision bf16 both sides train and evaluate under bfloat16 autocast (steadytune's --train-precision
bf16 and --eval-precision bf16, the HF Trainer's bf16=True), the dev evaluation is also timed in bf16, and the peak
is measured in bf16.

Usage: python benchmarks/trial_speed.py --glue-dir ../shared/data/glue [--steps 30] [--seeds 3] [--whole-train 1000]
       [--train-precision bf16]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch

from steadytune.config import RunOptions, TrialConfig
from steadytune.data.encoding import EncodedDataset
from steadytune.data.metrics import compute_metrics
from steadytune.models.loading import load_tokenizer
from steadytune.models.quantization import Int8Twin
from steadytune.storage.store import Store
from steadytune.training import ordering
from steadytune.training.evaluation import evaluate
from steadytune.training.inputs import prepare_inputs
from steadytune.training.trial import Trial, bf16_autocast, run_stored

WARMUP_STEPS = 3  # excluded from timing: first steps pay for allocation and kernel selection


def matmul_peak_gflops(dtype: torch.dtype = torch.float32, size: int = 2048, repeats: int = 10,
                       device: torch.device = torch.device("cpu")) -> float:
    """The best of `repeats` square matrix products of `size` in `dtype` on `device`, in GFLOP/s."""
    a, b = (torch.randn(size, size, dtype=dtype, device=device) for _ in range(2))

    def product() -> None:
        torch.mm(a, b)
        if device.type == "cuda":  # kernels run asynchronously: wait for this one
            torch.cuda.synchronize(device)

    product()
    best = min(_timed(product) for _ in range(repeats))
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
        """The mean, not the median: steps of long batches are real work, and length-grouped batches vary."""
        timed = np.diff(self.stamps[WARMUP_STEPS - 1:])
        return float(np.mean(timed))


def hf_dataset(data: EncodedDataset):
    """The encoded examples as a Hugging Face Dataset (what run_glue.py's tokenization produces)."""
    from datasets import Dataset

    rows = {"input_ids": [ids.tolist() for ids in data.input_ids], "labels": data.labels.tolist()}
    if data.token_type_ids is not None:
        rows["token_type_ids"] = [t.tolist() for t in data.token_type_ids]
    rows["attention_mask"] = [[1] * len(ids) for ids in rows["input_ids"]]
    return Dataset.from_dict(rows)


def hf_trainer(config: TrialConfig, trial: Trial, steps: int, pad_to_max: bool, callbacks=(), eval_at=()):
    """An HF Trainer for `steps` steps on the trial's encoded training examples, with the trial's hyperparameters
    (AdamW, linear warmup and decay, weight decay off biases and LayerNorm, clipping); seeded with wi_seed.

    With `eval_at` (1-based steps) it evaluates the dev set after exactly those steps, with the task's metrics."""
    from transformers import (
        AutoModelForSequenceClassification,
        DataCollatorWithPadding,
        PrinterCallback,
        Trainer,
        TrainerCallback,
        TrainingArguments,
        set_seed,
    )

    class EvaluateAtSteps(TrainerCallback):
        """eval_strategy="steps" evaluates every k steps; this moves those evaluations to `eval_at`, after the
        default flow has decided (callbacks run in order)."""

        def on_step_end(self, args, state, control, **kwargs):
            control.should_evaluate = state.global_step in eval_at

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
                             bf16=config.train_precision == "bf16",
                             save_strategy="no", eval_strategy="steps" if eval_at else "no", eval_steps=steps,
                             logging_strategy="no", disable_tqdm=True, seed=config.wi_seed)
    if eval_at:
        callbacks = [EvaluateAtSteps(), *callbacks]

    def metrics(prediction) -> dict[str, float]:
        logits = prediction.predictions
        return compute_metrics(trial.task, logits.squeeze(-1) if trial.task.is_regression else logits.argmax(-1),
                               prediction.label_ids)

    trainer = Trainer(model=model, args=args, train_dataset=hf_dataset(trial.inputs.train), data_collator=collator,
                      eval_dataset=hf_dataset(trial.inputs.dev) if eval_at else None,
                      compute_metrics=metrics if eval_at else None, callbacks=list(callbacks))
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
    # One step more than timed: a trial evaluates after its last step, before that step's progress call.
    trial = Trial(config.model_copy(update={"max_steps": steps + 1, "evals_per_epoch": 0}), options)
    clock = StepClock()
    trial.run(flush=lambda points: None, progress=lambda step, total, values: clock.tick())
    clock.stamps.pop()
    return clock.seconds_per_step(), trial


def timed_batches(trial: Trial, steps: int) -> list[np.ndarray]:
    """The example indices of the batches steadytune trained on in its timed steps (after the warm-up ones)."""
    c, batches, epoch = trial.config, [], 0
    while len(batches) < steps:
        batches += ordering.epoch_batches(trial.inputs.train.lengths, c.batch_size, c.do_seed, epoch,
                                          c.group_by_length)
        epoch += 1
    return batches[WARMUP_STEPS:steps]


def dev_eval(trial: Trial, model, batch_size: int) -> dict[str, float]:
    return evaluate(model, trial.inputs.dev, trial.task, batch_size, torch.device("cpu"), trial.pad_token_id)


def timed_dev_eval(trial: Trial, batch_size: int, precision: str, repeats: int) -> tuple[float, dict[str, float]]:
    """Median seconds of `repeats` whole dev evaluations, and the metrics.

    int8 builds the twin once, as a trial does, and each timed evaluation refreshes it from the model first; bf16
    evaluates under bfloat16 autocast.
    """
    twin = Int8Twin(trial.model) if precision == "int8" else None
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        with bf16_autocast(trial.device, precision == "bf16"):
            metrics = dev_eval(trial, twin.refresh() if twin else trial.model, batch_size)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), metrics


def check_dev_distributions(config: TrialConfig, options: RunOptions, seeds: int, train_examples: int,
                            steps: int) -> None:
    """Final dev metric of `seeds` seeds through the HF Trainer (dynamic padding) and steadytune: same within noise?"""
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
    print(f"dev metric distributions: {same_within_noise(hf, ours)}, steadytune - hf = "
          f"{np.mean(ours) - np.mean(hf):+.4f}, n={seeds} seeds each")


def same_within_noise(first: list[float], second: list[float]) -> str:
    """Whether two samples of final dev scores differ beyond seed noise: Welch's t-test and Mann-Whitney U."""
    from scipy import stats

    if len(set(first) | set(second)) == 1:  # no variance at all: the tests are undefined, the values equal
        welch = mann_whitney = 1.0
    else:
        welch = stats.ttest_ind(first, second, equal_var=False).pvalue
        welch = float(welch) if np.isfinite(welch) else 0.0  # each side constant but different from the other
        mann_whitney = float(stats.mannwhitneyu(first, second, alternative="two-sided").pvalue)
    verdict = "same within noise" if welch >= 0.05 else "DIFFERENT"
    return f"{verdict} (Welch p={welch:.3f}, Mann-Whitney U p={mann_whitney:.3f})"


def in_fresh_process(function, *args):
    """`function(*args)` run in a new Python process (spawned, so nothing of this one carries over)."""
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as fresh:
        return fresh.submit(function, *args).result()


def fresh_process_eval_seconds(folder: str, config_json: str, repeats: int) -> float:
    """Median seconds of a dev evaluation of the classifier saved in `folder`."""
    trial = Trial(TrialConfig.model_validate_json(config_json).model_copy(update={"model": folder}),
                  RunOptions(device="cpu"))
    return timed_dev_eval(trial, trial.config.eval_batch_size, trial.config.eval_precision, repeats)[0]


def steadytune_whole_trial(config_json: str, folder: str) -> dict:
    """Wall seconds of a whole trial as `steadytune train` runs it (preparation from the tokenization cache, model
    loading, training, every evaluation, the store), the seconds of each evaluation inside it, and its final
    metric; the final classifier is saved in `folder`."""
    config = TrialConfig.model_validate_json(config_json)
    evaluations: list[float] = []
    prepared: list[Trial] = []

    def time_evaluations(trial: Trial) -> None:
        evaluate_all = trial._evaluate_all

        def timed(step: int):
            start = time.perf_counter()
            points = evaluate_all(step)
            evaluations.append(time.perf_counter() - start)
            return points

        trial._evaluate_all = timed
        prepared.append(trial)

    with Store(Path(folder) / "whole.db") as store:
        start = time.perf_counter()
        _, outcome, _ = run_stored(config, RunOptions(device="cpu"), store, on_prepared=time_evaluations)
        wall = time.perf_counter() - start
    trial = prepared[0]
    trial.model.save_pretrained(Path(folder) / "final")
    trial.tokenizer.save_pretrained(Path(folder) / "final")
    return {"wall": wall, "evaluations": evaluations, "final": outcome.final_metrics[trial.task.metric],
            "steps": trial.total_steps, "eval_at": sorted(trial.eval_at), "train": len(trial.inputs.train),
            "dev": len(trial.inputs.dev), "metric": trial.task.metric}


def hf_whole_trial(config_json: str, eval_at: list[int]) -> dict:
    """Wall seconds of an HF Trainer run from model loading to the end of training, evaluating the dev set after
    the steps `eval_at`; the seconds of each evaluation (the Trainer's eval_runtime) and the final metric."""
    from transformers import TrainerCallback

    config = TrialConfig.model_validate_json(config_json)
    trial = Trial(config, RunOptions(device="cpu"))  # the encoded examples; not timed
    evaluations: list[dict[str, float]] = []

    class EvalClock(TrainerCallback):
        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            evaluations.append(metrics)

    start = time.perf_counter()
    hf_trainer(config, trial, trial.total_steps, pad_to_max=False, callbacks=[EvalClock()],
               eval_at=set(eval_at)).train()
    return {"wall": time.perf_counter() - start, "evaluations": [metrics["eval_runtime"] for metrics in evaluations],
            "final": evaluations[-1]["eval_" + trial.task.metric]}


def whole_trial(config: TrialConfig, repeats: int, eval_repeats: int) -> float:
    """Whole trials through steadytune and the HF Trainer with the same evaluation schedule, each in a fresh
    process, alternating, `repeats` times; prints them and the fresh-process evaluation check, and returns the
    ratio of the median wall times, steadytune / HF."""
    prepare_inputs(config, load_tokenizer(config.model), None)  # into the tokenization cache: no timed run pays it
    ours, hf = [], []
    with tempfile.TemporaryDirectory() as folder:
        for repeat in range(repeats):
            run_folder = Path(folder) / f"run-{repeat}"
            run_folder.mkdir()
            ours.append(in_fresh_process(steadytune_whole_trial, config.model_dump_json(), str(run_folder)))
            hf.append(in_fresh_process(hf_whole_trial, config.model_dump_json(), ours[-1]["eval_at"]))
        fresh_seconds = in_fresh_process(fresh_process_eval_seconds, str(Path(folder) / "run-0" / "final"),
                                         config.model_dump_json(), eval_repeats)
    first = ours[0]
    print(f"\nwhole trial: {config.task} {config.model}, {first['train']} training examples, {config.epochs:g} "
          f"epoch(s) = {first['steps']} steps at batch {config.batch_size}, {len(first['eval_at'])} dev evaluations "
          f"({first['dev']} examples, batch {config.eval_batch_size}) after the same steps; model loading included; "
          f"each run in a fresh process, alternating")
    print(f"{'run':<12} {'wall s':>8} {'evaluations s':>14} {'median eval s':>14} {'final dev ' + first['metric']:>22}")
    for repeat in range(repeats):
        for name, run in (("hf-dynamic", hf[repeat]), ("steadytune", ours[repeat])):
            print(f"{name:<12} {run['wall']:>8.1f} {sum(run['evaluations']):>14.1f} "
                  f"{statistics.median(run['evaluations']):>14.2f} {run['final']:>22.4f}")
    in_trial = statistics.median(first["evaluations"])
    print(f"evaluation inside the trial {in_trial:.2f} s against {fresh_seconds:.2f} s in a fresh process on the same "
          f"final model (medians of {len(first['evaluations'])} and {eval_repeats}; ratio {in_trial / fresh_seconds:.2f})")
    return statistics.median(run["wall"] for run in ours) / statistics.median(run["wall"] for run in hf)


def benchmark_parser(doc: str, model_help: str = "Model (as steadytune train --model).") -> argparse.ArgumentParser:
    """The options every benchmark here takes: the data, the task and the model; its help is the script's doc."""
    class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
        pass

    parser = argparse.ArgumentParser(description=doc.rsplit("\n\nUsage:", 1)[0], formatter_class=Formatter)
    parser.add_argument("--glue-dir", required=True, help="GLUE data in the download_glue_data.py layout.")
    parser.add_argument("--task", default="rte", help="GLUE task.")
    parser.add_argument("--model", default="minilm-l6", help=model_help)
    return parser


def main() -> None:
    parser = benchmark_parser(__doc__)
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
    parser.add_argument("--whole-train", type=int, default=1000,
                        help="Training examples (--max-train) of the whole-trial comparison; 0 skips it.")
    parser.add_argument("--whole-epochs", type=float, default=1, help="Epochs of the whole-trial comparison.")
    parser.add_argument("--whole-evals", type=int, default=10,
                        help="Dev evaluations per epoch in the whole-trial comparison (Dodge et al.: 10).")
    parser.add_argument("--whole-repeats", type=int, default=1,
                        help="Whole trials per side (the ratio is of the median wall times).")
    parser.add_argument("--train-precision", choices=("fp32", "bf16"), default="fp32",
                        help="Numerics of training on both sides (steadytune's --train-precision; the HF Trainer's "
                        "bf16=True).")
    args = parser.parse_args()
    if args.steps <= WARMUP_STEPS:
        parser.error(f"--steps must be at least {WARMUP_STEPS + 1}")
    if args.seeds == 1:
        parser.error("--seeds: a comparison of distributions needs at least 2 seeds (or 0 to skip it)")
    if args.whole_train and (args.whole_evals < 1 or args.whole_repeats < 1):
        parser.error("--whole-evals and --whole-repeats: the whole-trial comparison needs at least 1 of each")

    config = TrialConfig(task=args.task, model=args.model, glue_dir=args.glue_dir, batch_size=args.batch_size,
                         eval_batch_size=args.eval_batch_size, train_precision=args.train_precision,
                         eval_precision="bf16" if args.train_precision == "bf16" else "fp32")
    options = RunOptions(device="cpu")
    peak = matmul_peak_gflops(torch.bfloat16 if args.train_precision == "bf16" else torch.float32)
    print(f"threads={torch.get_num_threads()} {args.train_precision} matmul peak {peak:.1f} GFLOP/s")

    ours, trial = run_steadytune(config, options, args.steps)
    non_embedding, layers, hidden = model_shape(trial.model)
    lengths = trial.inputs.train.lengths

    # Evaluation is timed right after training, as in a trial's own process: timed after the HF runs below,
    # which leave their allocations behind, the same evaluations ran 10-20% slower.
    eval_seconds, fp32 = timed_dev_eval(trial, config.eval_batch_size, "fp32", args.eval_repeats)
    int8_seconds, int8 = timed_dev_eval(trial, config.eval_batch_size, "int8", args.eval_repeats)
    # Compared with HF's evaluation in the precision both sides evaluate in (HF's bf16=True evaluates under autocast).
    peer_seconds = (eval_seconds if config.eval_precision == "fp32" else
                    timed_dev_eval(trial, config.eval_batch_size, config.eval_precision, args.eval_repeats)[0])
    twin = Int8Twin(trial.model)
    refresh_seconds = min(_timed(twin.refresh) for _ in range(args.eval_repeats))

    results = {name: run_hf_trainer(config, trial, args.steps, pad)
               for name, pad in (("hf-pad128", True), ("hf-dynamic", False))}
    hf_eval_seconds = time_hf_evaluation(config, trial, args.eval_repeats)

    # Real tokens and FLOPs per step: the HF Trainer draws random batches, so those of a mean batch; steadytune
    # groups batches by length, so those of the very batches it trained on in its timed steps.
    flops = {int(n): flops_per_example(int(n), non_embedding, layers, hidden) for n in np.unique(lengths)}
    hf_tokens = lengths.mean() * args.batch_size
    hf_flops = np.mean([flops[int(n)] for n in lengths]) * args.batch_size
    ours_batches = timed_batches(trial, args.steps)
    ours_tokens = np.mean([lengths[batch].sum() for batch in ours_batches])
    ours_flops = np.mean([sum(flops[int(n)] for n in lengths[batch]) for batch in ours_batches])

    print(f"\n{args.task} {args.model} batch {args.batch_size}, {args.steps} steps ({WARMUP_STEPS} warm-up excluded), "
          f"mean real length {lengths.mean():.1f} tokens; s/step is the mean of the timed steps")
    print(f"{'run':<12} {'s/step':>8} {'real tok/s':>11} {'peak share':>11}")
    rows = [(name, seconds, hf_tokens, hf_flops) for name, seconds in results.items()]
    rows.append(("steadytune", ours, ours_tokens, ours_flops))
    for name, seconds, tokens, step_flops in rows:
        print(f"{name:<12} {seconds:>8.3f} {tokens / seconds:>11.0f} {step_flops / seconds / 1e9 / peak:>11.1%}")
    print(f"dev evaluation ({len(trial.inputs.dev)} examples, batch {config.eval_batch_size}, median of "
          f"{args.eval_repeats}): fp32 {eval_seconds:.2f} s, int8 {int8_seconds:.2f} s "
          f"(includes re-quantizing the weights: {refresh_seconds:.3f} s)"
          f"{f', bf16 {peer_seconds:.2f} s' if config.eval_precision == 'bf16' else ''}; HF Trainer.evaluate "
          f"{hf_eval_seconds:.2f} s ({config.eval_precision}, ratio {config.eval_precision}/HF "
          f"{peer_seconds / hf_eval_seconds:.2f})")
    print("int8 - fp32 on the steadytune model above: "
          + ", ".join(f"{name} {int8[name] - fp32[name]:+.4f} ({fp32[name]:.4f} -> {int8[name]:.4f})" for name in fp32))
    if args.seeds:
        check_dev_distributions(config, options, args.seeds, args.check_train, args.check_steps)
    trial_ratio = ""
    if args.whole_train:
        whole = config.model_copy(update={"max_train": args.whole_train, "epochs": args.whole_epochs,
                                          "evals_per_epoch": args.whole_evals})
        trial_ratio = f" trial_ratio={whole_trial(whole, args.whole_repeats, args.eval_repeats):.3f}"
    # Seconds per real token, as the two train on batches of different lengths.
    ratio = (ours / ours_tokens) / (results["hf-dynamic"] / hf_tokens)
    print(f"ratio_vs_hf_dynamic={ratio:.3f} peak_share={ours_flops / ours / 1e9 / peak:.3f}{trial_ratio}")


if __name__ == "__main__":
    main()
