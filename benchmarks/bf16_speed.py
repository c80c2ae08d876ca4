"""Whole trials in fp32 and under --train-precision bf16, seed by seed in one process: wall time and final dev score.

Each seed s (WI, DO and dropout seed s) trains the same trial twice, fp32 then bf16, so that both arms share the
machine's state: --train examples of --task, --epochs at batch 16, --lr, one dev evaluation at the end, model
loading included. It prints each pair, the mean wall time of each arm, and whether the two sets of final dev
scores differ beyond seed noise (Welch t-test, Mann-Whitney U): bf16 changes every result, and must not change
what training reaches. The defaults are a setting where MiniLM-L6 learns (SST-2 at lr 5e-5, as reproduce's lr
check chose). The last line is machine-readable (R: bf16 wall time / fp32 wall time, summed over the seeds):

    bf16_ratio=R device=NAME

Usage: python benchmarks/bf16_speed.py --glue-dir ../shared/data/glue [--seeds 3] [--task sst2] [--device auto]
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from trial_speed import benchmark_parser, same_within_noise

from steadytune.config import RunOptions, TrialConfig
from steadytune.training.trial import Trial, pick_device


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.set_defaults(task="sst2")
    parser.add_argument("--seeds", type=int, default=3, help="Seeds 1..N, each trained in both arms.")
    parser.add_argument("--train", type=int, default=1000, help="Training examples.")
    parser.add_argument("--epochs", type=float, default=3, help="Epochs of each trial.")
    parser.add_argument("--lr", type=float, default=5e-5, help="Learning rate (MiniLM-L6 learns SST-2 at 5e-5).")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto.")
    args = parser.parse_args()
    if args.seeds < 2:
        parser.error("--seeds must be at least 2 (the noise test needs two per arm)")

    device = pick_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu-{os.cpu_count()}-cores"
    options = RunOptions(device=args.device, cache_dir=Path(tempfile.mkdtemp(prefix="bf16-speed-")), log_grads_every=0)
    base = dict(task=args.task, model=args.model, glue_dir=args.glue_dir, max_train=args.train, epochs=args.epochs,
                lr=args.lr, evals_per_epoch=0)
    Trial(TrialConfig(**base), options)  # fills the tokenization cache, so neither arm pays for it
    print(f"device {name}; {args.model} on {args.task}: {args.train} examples, {args.epochs:g} epochs at batch 16, "
          f"lr {args.lr:g}, one dev evaluation, model loading included; seed s = WI, DO and dropout seed")
    print(f"{'seed':>4} {'fp32 s':>8} {'bf16 s':>8} {'fp32 dev':>9} {'bf16 dev':>9}")
    walls: dict[str, list[float]] = {"fp32": [], "bf16": []}
    scores: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for seed in range(1, args.seeds + 1):
        for precision in ("fp32", "bf16"):
            config = TrialConfig(**base, wi_seed=seed, do_seed=seed, train_precision=precision)
            start = time.perf_counter()
            trial = Trial(config, options)
            outcome, _ = trial.run(lambda points: None)
            if outcome.status != "complete":
                raise SystemExit(f"seed {seed} {precision}: the trial ended {outcome.status}: {outcome.error}")
            walls[precision].append(time.perf_counter() - start)
            scores[precision].append(outcome.final_metrics[trial.task.metric])
        print(f"{seed:>4} {walls['fp32'][-1]:>8.1f} {walls['bf16'][-1]:>8.1f} {scores['fp32'][-1]:>9.4f} "
              f"{scores['bf16'][-1]:>9.4f}")
    ratio = sum(walls["bf16"]) / sum(walls["fp32"])
    print(f"mean {np.mean(walls['fp32']):>8.1f} {np.mean(walls['bf16']):>8.1f} {np.mean(scores['fp32']):>9.4f} "
          f"{np.mean(scores['bf16']):>9.4f}")
    print(f"final dev scores, fp32 against bf16: {same_within_noise(scores['fp32'], scores['bf16'])}")
    print(f"bf16_ratio={ratio:.3f} device={name.replace(' ', '_')}")


if __name__ == "__main__":
    main()
