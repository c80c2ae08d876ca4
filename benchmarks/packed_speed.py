"""Trials per hour: K seeds of one trial trained one after another, as worker processes sharing the device, and
as one pack (steadytune.packed), on the device at hand.

The trial: --model on --train examples of --task, --steps training steps at batch 16, and one evaluation of the
full dev set at the end, model loading and data preparation included (as a study pays them). Its K seeds are WI
seeds 1..K of one DO seed, a column of a WI x DO grid, as `study run --pack` groups them (--mixed-orders: each its
own DO seed too). For each K in --k it prints the wall time and trials per hour of each way, the pack's
speedup over separate trials and over workers, and the share of the device's matmul peak the pack's training
reached on real tokens (FLOPs: 6 x non-embedding parameters per token, plus attention). The pack trains as a
study on this device trains it by default: on a GPU all K seeds in one pass, on a CPU one seed at a time, since
every wider pass measured slower there. --pack-pass N trains passes of N seeds, one after another: --pack-pass 8
on a CPU measures what batching the seeds would bring.

Packing must not cost accuracy: with --check-seeds N (default 8 on a GPU, 0 on a CPU, where each seed's curve is
already tested to equal its single run's within float rounding) it trains N seeds for --check-steps steps alone
and as one pack, prints each seed's final dev score both ways and the largest difference, and tests whether the
two sets differ beyond seed noise (Welch t-test, Mann-Whitney U). On a GPU the dropout masks differ between the
two (CUDA's fused dropout draws them its own way), so there the check is about distributions, not seeds.
--train-precision bf16 trains every way under bf16 autocast (for GPUs with bf16 tensor cores), and the peak is
then measured in bf16. The last line is machine-readable (X: the pack of the largest K against separate trials):

    packed_speedup=X device=NAME

Usage: python benchmarks/packed_speed.py --glue-dir ../shared/data/glue [--k 1,4,8] [--steps 10] [--device auto]
       [--train-precision bf16]
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from trial_speed import benchmark_parser, flops_per_example, matmul_peak_gflops, model_shape, same_within_noise

from steadytune.config import RunOptions, TrialConfig
from steadytune.packed.trial import PackedTrial, seeds_per_pass
from steadytune.studies.executors import Executor
from steadytune.studies.jobs import Job
from steadytune.training import ordering
from steadytune.training.trial import Trial, pick_device


def configs(base: dict, k: int, one_order: bool = True) -> list[TrialConfig]:
    """K seeds: WI 1..K of one DO seed (a column of a WI x DO grid, as `--pack` groups them), or each with its own DO
    seed, whose batches differ in length at every step and are padded to the longest."""
    return [TrialConfig(**base, wi_seed=seed, do_seed=1 if one_order else seed) for seed in range(1, k + 1)]


def separate(trials: list[TrialConfig], options: RunOptions) -> float:
    start = time.perf_counter()
    for config in trials:
        Trial(config, options).run(lambda points: None)
    return time.perf_counter() - start


def workers(trials: list[TrialConfig], options: RunOptions, count: int) -> float:
    jobs = [Job(c.model_dump(mode="json"), options.model_copy(update={"threads": None}).model_dump(mode="json"))
            for c in trials]
    executor = Executor(count)
    start = time.perf_counter()
    queue = list(jobs)
    results = list(executor.run(lambda: (None, queue.pop(0)) if queue else None))
    seconds = time.perf_counter() - start
    failed = [r.outcome.error for _, r in results if r.outcome.status != "complete"]
    if failed:
        raise SystemExit(f"a worker's trial failed: {failed[0]}")
    return seconds


def packed(trials: list[TrialConfig], options: RunOptions, size: int | None = None) -> tuple[float, float]:
    """Wall time of the whole pack, and of its training steps alone, trained as a study trains it: in one pass of all
    its seeds, or in passes of `size` seeds, one after another, where a lone seed trains as a single trial."""
    if size and len(trials) > size:
        times = [packed(trials[start:start + size], options, size) for start in range(0, len(trials), size)]
        return sum(wall for wall, _ in times), sum(training for _, training in times)
    start = time.perf_counter()
    trial = Trial(trials[0], options) if size and len(trials) == 1 else PackedTrial.from_configs(trials, options)
    steps = trial._train_step
    trained = [0.0]

    def timed_step(*args):
        if trial.device.type == "cuda":
            torch.cuda.synchronize()
        begin = time.perf_counter()
        out = steps(*args)
        if trial.device.type == "cuda":
            torch.cuda.synchronize()
        trained[0] += time.perf_counter() - begin
        return out

    trial._train_step = timed_step
    trial.run(lambda *points: None)
    return time.perf_counter() - start, trained[0]


def training_flops(trials: list[TrialConfig], options: RunOptions) -> float:
    """Forward+backward FLOPs of every seed's real tokens over its steps."""
    probe = Trial(trials[0], options)
    params, layers, hidden = model_shape(probe.model)
    lengths = probe.inputs.train.lengths
    total = 0.0
    for config in trials:
        for step in range(probe.total_steps):
            epoch, done = divmod(step, probe.per_epoch)
            batch = ordering.epoch_batches(lengths, config.batch_size, config.do_seed, epoch, config.group_by_length)
            total += sum(flops_per_example(int(lengths[i]), params, layers, hidden) for i in batch[done])
    return total


def check_seeds(base: dict, options: RunOptions, seeds: int, steps: int) -> None:
    trials = [config.model_copy(update={"max_steps": steps}) for config in configs(base, seeds, one_order=False)]
    metric = Trial(trials[0], options).task.metric
    alone = [Trial(config, options).run(lambda points: None)[0].final_metrics[metric] for config in trials]
    results = PackedTrial.from_configs(trials, options).run(lambda k, points: None)
    packed = [outcome.final_metrics[metric] for outcome, _ in results]
    print(f"\nfinal dev {metric} over {seeds} seeds, {steps} steps each, alone and as one pack:")
    for seed, (a, b) in enumerate(zip(alone, packed), start=1):
        print(f"  seed {seed}: alone {a:.4f}, packed {b:.4f}")
    print(f"largest difference {max(abs(a - b) for a, b in zip(alone, packed)):.2e}; mean alone {np.mean(alone):.4f}, "
          f"packed {np.mean(packed):.4f}; distributions: {same_within_noise(alone, packed)}")


def main() -> None:
    parser = benchmark_parser(__doc__, "Model (as steadytune train --model); a BERT.")
    parser.add_argument("--k", default=None, help="Pack sizes to measure (default: 1,4,8 on a CPU, 1,4,8,16,32 on "
                        "a GPU).")
    parser.add_argument("--steps", type=int, default=10, help="Training steps of each trial.")
    parser.add_argument("--train", type=int, default=1000, help="Training examples (the DO order draws from them).")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto.")
    parser.add_argument("--workers", type=int, default=None, help="Worker processes of the 'workers' way (default: "
                        "the CPU cores, or 4 on a GPU).")
    parser.add_argument("--lr", type=float, default=1e-4, help="Learning rate (MiniLM-L6 learns RTE at 1e-4).")
    parser.add_argument("--mixed-orders", action="store_true", help="Give each seed its own DO seed (its own batch "
                        "order) instead of one DO seed for all (a grid column, as `study run --pack` groups them).")
    parser.add_argument("--check-seeds", type=int, default=None, help="Seeds of the accuracy check (default: 8 on a "
                        "GPU, 0 on a CPU).")
    parser.add_argument("--check-steps", type=int, default=150, help="Training steps of each seed in the check.")
    parser.add_argument("--train-precision", choices=("fp32", "bf16"), default="fp32", help="Numerics of training "
                        "(as steadytune train --train-precision); the peak is measured in the same dtype.")
    parser.add_argument("--pack-pass", type=int, default=None, help="Train each pack in passes of this many seeds, "
                        "one after another (default: as a study on this device does: on a CPU 1, on a GPU all K).")
    args = parser.parse_args()
    if args.pack_pass is not None and args.pack_pass < 1:
        parser.error("--pack-pass must be at least 1")

    device = pick_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu-{os.cpu_count()}-cores"
    sizes = [int(k) for k in (args.k or ("1,4,8" if device.type == "cpu" else "1,4,8,16,32")).split(",")]
    count = args.workers or (os.cpu_count() if device.type == "cpu" else 4)
    cache = Path(tempfile.mkdtemp(prefix="packed-speed-"))
    options = RunOptions(device=args.device, cache_dir=cache, log_grads_every=0)
    base = dict(task=args.task, model=args.model, glue_dir=args.glue_dir, max_train=args.train, max_steps=args.steps,
                evals_per_epoch=0, lr=args.lr, train_precision=args.train_precision)
    Trial(configs(base, 1)[0], options)  # fills the tokenization cache, so no way pays for it
    # 4096: a GPU needs products this large to reach its peak.
    peak = matmul_peak_gflops(torch.bfloat16 if args.train_precision == "bf16" else torch.float32, 4096, device=device)
    orders = "each seed its own DO seed" if args.mixed_orders else "WI seeds 1..K of DO seed 1"
    size = args.pack_pass or seeds_per_pass(device)
    passes = ("one pass of all K seeds" if not size else "one seed at a time, each as a single trial" if size == 1
              else f"passes of at most {size} seeds, one after another")
    if size == seeds_per_pass(device):
        passes += ", as a study on this device trains it by default"
    print(f"device {name}, {args.train_precision} matmul peak {peak:.0f} GFLOP/s; {args.model} on {args.task}: "
          f"{args.steps} steps at batch 16 per trial, one dev evaluation, model loading included; {orders}; "
          f"workers: {count} processes; a pack trains in {passes}")
    print(f"{'K':>3} {'separate s':>11} {'workers s':>10} {'packed s':>9} {'trials/h sep':>13} {'trials/h wrk':>13} "
          f"{'trials/h pack':>14} {'vs sep':>7} {'vs wrk':>7} {'pack peak share':>16}")
    speedup = float("nan")
    for k in sizes:
        trials = configs(base, k, not args.mixed_orders)
        alone = separate(trials, options)
        shared = workers(trials, options, min(count, k))
        pack_wall, pack_training = packed(trials, options, size)
        share = training_flops(trials, options) / pack_training / (peak * 1e9)
        per_hour = [k * 3600 / seconds for seconds in (alone, shared, pack_wall)]
        if k == max(sizes):
            speedup = alone / pack_wall
        print(f"{k:>3} {alone:>11.1f} {shared:>10.1f} {pack_wall:>9.1f} {per_hour[0]:>13.0f} {per_hour[1]:>13.0f} "
              f"{per_hour[2]:>14.0f} {alone / pack_wall:>6.2f}x {shared / pack_wall:>6.2f}x {share:>15.1%}")
    seeds = args.check_seeds if args.check_seeds is not None else (0 if device.type == "cpu" else 8)
    if seeds:
        check_seeds(base, options, seeds, args.check_steps)
    print(f"packed_speedup={speedup:.2f} device={name.replace(' ', '_')}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
