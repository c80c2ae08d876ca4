"""Config merging and validation; the data order and evaluation schedule."""
from __future__ import annotations

import math

import numpy as np
import pytest

from steadytune.config import ConfigError, TrialConfig, build_config, load_config_file
from steadytune.recipes import RECIPES, recipe_overrides, resolved_recipe
from steadytune.training import ordering
from steadytune.training.ordering import total_steps


def test_defaults_are_devlins():
    c = TrialConfig()
    assert (c.lr, c.batch_size, c.epochs, c.warmup, c.weight_decay, c.max_length) == (2e-5, 16, 3.0, 0.1, 0.01, 128)
    assert c.effective_dropout_seed == c.wi_seed
    assert TrialConfig(wi_seed=4, dropout_seed=9).effective_dropout_seed == 9


def test_layers_merge_in_order(tmp_path):
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("epochs: 5\nwi-seed: 3\nlr: 3.0e-5\n")
    toml_file = tmp_path / "c.toml"
    toml_file.write_text("epochs = 6\nreinit_layers = 2\n")
    assert load_config_file(toml_file) == {"epochs": 6, "reinit_layers": 2}
    config = build_config(recipe_overrides("mosbach2021"), load_config_file(yaml_file), {"lr": 1e-5, "do_seed": None})
    assert config.epochs == 5          # file beats recipe
    assert config.lr == 1e-5           # flag beats file
    assert config.evals_per_epoch == 3  # recipe beats default
    assert config.recipe == "mosbach2021" and config.wi_seed == 3 and config.do_seed == 1


def test_bad_values_name_the_flag(tmp_path):
    with pytest.raises(ConfigError, match="--lr"):
        build_config({"lr": -1})
    with pytest.raises(ConfigError, match="--optimizer"):
        build_config({"optimizer": "sgd"})
    with pytest.raises(ConfigError, match="--train-file and --dev-file"):
        build_config({"train_file": "x.csv"})
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1,\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config_file(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config_file(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="unknown recipe"):
        recipe_overrides("nope")


def test_trial_key_identifies_the_computation():
    assert TrialConfig(wi_seed=1).trial_key() == TrialConfig(wi_seed=1).trial_key()
    assert TrialConfig(wi_seed=1).trial_key() != TrialConfig(wi_seed=2).trial_key()


def test_recipes_resolve_to_the_papers_settings():
    assert set(RECIPES) == {"devlin2019", "mosbach2021", "zhang2021", "mixout", "llrd", "pretrained-wd", "noisytune",
                            "r3f", "ema", "swa"}
    assert (resolved_recipe("swa").average, resolved_recipe("swa").swa_start) == ("swa", 0.75)
    assert resolved_recipe("noisytune").noisytune == 0.15
    assert (resolved_recipe("r3f").r3f, resolved_recipe("r3f").r3f_eps, resolved_recipe("r3f").r3f_noise) == (
        1.0, 1e-5, "uniform")
    devlin, mosbach, zhang = (resolved_recipe(n) for n in ("devlin2019", "mosbach2021", "zhang2021"))
    assert (devlin.optimizer, devlin.epochs, devlin.warmup, devlin.weight_decay) == ("bertadam", 3.0, 0.1, 0.01)
    assert (mosbach.optimizer, mosbach.epochs, mosbach.adam_eps, mosbach.max_grad_norm, mosbach.evals_per_epoch) == (
        "adamw", 20.0, 1e-6, 1.0, 3)
    assert (zhang.optimizer, zhang.reinit_pooler, zhang.reinit_layers) == ("adamw", True, 5)
    assert resolved_recipe("mixout").mixout == 0.1
    assert resolved_recipe("llrd").llrd == 0.95
    assert resolved_recipe("pretrained-wd").pretrained_wd == 1e-3


@pytest.mark.parametrize("grouped", [False, True])
def test_epoch_batches_are_a_pure_function_of_do_seed_and_epoch(grouped):
    lengths = np.random.default_rng(0).integers(5, 128, size=50)
    batches = lambda seed, epoch: ordering.epoch_batches(lengths, 16, seed, epoch, grouped)
    a = batches(3, 1)
    assert all(np.array_equal(x, y) for x, y in zip(a, batches(3, 1)))
    assert sorted(len(x) for x in a) == [2, 16, 16, 16]
    assert sorted(np.concatenate(a).tolist()) == list(range(50))
    assert not np.array_equal(np.concatenate(a), np.concatenate(batches(3, 2)))
    assert not np.array_equal(np.concatenate(a), np.concatenate(batches(4, 1)))


def test_length_grouping_cuts_padding():
    lengths = np.random.default_rng(0).integers(10, 129, size=2490)

    def padded_tokens(grouped: bool) -> int:
        batches = ordering.epoch_batches(lengths, 16, 1, 0, grouped)
        return sum(len(b) * lengths[b].max() for b in batches)

    real = lengths.sum()
    assert padded_tokens(True) < 1.05 * real < 1.5 * real < padded_tokens(False)
    # Batches are shuffled after grouping: the longest batch is not always first.
    firsts = {int(lengths[ordering.epoch_batches(lengths, 16, seed, 0, True)[0]].max()) for seed in range(5)}
    assert len(firsts) > 1


def test_step_counts_and_eval_schedule():
    assert ordering.steps_per_epoch(2490, 16) == 156
    assert ordering.total_steps(2490, 16, 3, None) == 468
    assert ordering.total_steps(2490, 16, 3, 400) == 400
    assert ordering.eval_steps(156, 468, 1) == [156, 312, 468]
    assert ordering.eval_steps(10, 30, 2) == [5, 10, 15, 20, 25, 30]
    assert ordering.eval_steps(10, 25, 0) == [25]
    assert ordering.eval_steps(10, 25, 1) == [10, 20, 25]
    assert len(ordering.eval_steps(156, 468, 10)) == 30


def _numeric_fields() -> dict[str, type]:
    import typing

    found = {}
    for name, info in TrialConfig.model_fields.items():
        kinds = set(typing.get_args(info.annotation)) or {info.annotation}
        numeric = kinds & {int, float}
        if numeric and bool not in kinds:
            found[name] = float if float in numeric else int
    return found


def test_every_numeric_config_value_gives_a_valid_config_or_a_one_line_error():
    """Arbitrary numbers in every numeric field of TrialConfig (NaN, infinities, extremes, negatives, zero), as a
    config file could hold them: the config is valid and its schedule computes, or the error is one line naming
    the key."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from steadytune.training.ordering import steps_per_epoch

    fields = _numeric_fields()
    assert {"lr", "epochs", "batch_size", "max_length", "warmup", "weight_decay", "wi_seed"} <= set(fields)
    numbers = {float: st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, -1.0, 1e-300, 1e300]),
               int: st.integers(min_value=-2**70, max_value=2**70) | st.sampled_from([0, -1, 1, 2**63])}
    values = st.fixed_dictionaries({}, optional={name: numbers[kind] for name, kind in fields.items()})

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True,
              database=None)
    @given(values)
    def check(overrides):
        try:
            config = build_config({"task": "rte", "model": "m"}, overrides)
        except ConfigError as err:
            text = str(err)
            named = {name for name in overrides if name in text or "--" + name.replace("_", "-") in text}
            assert "\n" not in text and named, text
            return
        for name, value in config.model_dump().items():
            if isinstance(value, float):
                assert math.isfinite(value), (name, value)
        steps = total_steps(1000, config.batch_size, min(config.epochs, 1e6), config.max_steps)
        assert steps >= 1 and steps_per_epoch(1000, config.batch_size) >= 1
        assert len(config.trial_key()) == 16

    check()


def test_every_trial_field_has_one_help_panel_and_new_fields_keep_old_keys():
    from steadytune.config import FIRST_RELEASE_FIELDS, KEYED_ONLY_WHEN_CHANGED, SECTIONS

    panels = [field for fields in SECTIONS.values() for field in fields]
    assert sorted(panels) == sorted(TrialConfig.model_fields)  # each field in exactly one panel of --help
    assert FIRST_RELEASE_FIELDS <= set(TrialConfig.model_fields)
    assert set(KEYED_ONLY_WHEN_CHANGED) == set(TrialConfig.model_fields) - FIRST_RELEASE_FIELDS
