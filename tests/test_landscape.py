"""Loss landscapes: exact end points, least-squares trajectories, filter normalization, layer rollback, resume."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from steadytune.cli import app
from steadytune.landscape.analyses import layer_curves, line, surface
from steadytune.landscape.compute import compute, grid_cells
from steadytune.landscape.directions import difference, filter_normalized, hao_plane, norm, random_plane
from steadytune.landscape.layers import layer_groups, move_group
from steadytune.landscape.projection import project
from steadytune.landscape.sources import EvaluationSettings, TrialSnapshots, build_evaluator
from steadytune.storage.store import Store
from steadytune.studies.single import run_stored
from steadytune.training.evaluation import evaluate


@pytest.fixture(scope="module")
def trained(tiny_bert_dir, glue_dir, tmp_path_factory):
    """A store with two tiny trials that kept snapshots (3 each) and one that kept none."""
    from steadytune.config import RunOptions, TrialConfig

    root = tmp_path_factory.mktemp("landscape")
    options = RunOptions(device="cpu", cache_dir=root / "cache")
    store = Store(root / "runs.db")

    def config(**overrides) -> TrialConfig:
        return TrialConfig(task="rte", model=str(tiny_bert_dir), glue_dir=str(glue_dir), batch_size=8, max_length=48,
                           epochs=1, evals_per_epoch=0, lr=1e-3, **overrides)
    with_snapshots = options.model_copy(update={"save_checkpoints": 3})
    ids = [run_stored(config(max_train=48, do_seed=seed), with_snapshots, store)[0] for seed in (1, 2)]
    ids.append(run_stored(config(max_train=16, do_seed=3), options, store)[0])
    yield store, ids
    store.close()


def _settings(options, **overrides) -> EvaluationSettings:
    values = dict(train_examples=24, dev_examples=20, batch_size=8, options=options)
    values.update(overrides)
    return EvaluationSettings(**values)


def _model_loss(evaluator, params, split):
    """The split's loss of a model that holds `params`, through the trainer's own evaluation."""
    evaluator.model.load_state_dict(params, strict=False)
    return evaluate(evaluator.model, evaluator.data[split], evaluator.task, 8, torch.device("cpu"), 0)["loss"]


def test_origin_and_unit_point_are_the_start_and_end_models_exactly(trained, options):
    store, (first, second, _) = trained
    this, other = TrialSnapshots.load(store, first), TrialSnapshots.load(store, second)
    plane = hao_plane(this.start(), this.end(), other.end())
    evaluator = build_evaluator(this.config, _settings(options))
    at_origin, at_end = evaluator([plane.point(0.0, 0.0), plane.point(1.0, 0.0)])
    for split in ("train", "dev"):
        assert at_origin[f"{split}_loss"] == _model_loss(evaluator, this.start(), split)
        assert at_end[f"{split}_loss"] == _model_loss(evaluator, this.end(), split)
    assert at_origin["train_loss"] != at_end["train_loss"]


def test_several_points_per_pass_match_one_at_a_time(trained, options):
    store, (first, _, _) = trained
    this = TrialSnapshots.load(store, first)
    plane = random_plane(this.end(), seed=3)
    points = [plane.point(a, b) for a, b in ((0.0, 0.0), (0.5, -0.5), (-1.0, 1.0))]
    one = build_evaluator(this.config, _settings(options))(points)
    batched = build_evaluator(this.config, _settings(options, points_per_pass=3))(points)
    for single, together in zip(one, batched):
        assert together["train_loss"] == pytest.approx(single["train_loss"], rel=1e-5)
        assert together["dev_metric"] == single["dev_metric"]


def _random_params(seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(6, 5, generator=generator), "b": torch.randn(6, generator=generator),
            "e": torch.randn(4, 3, 2, generator=generator)}


def test_least_squares_projection_recovers_known_coordinates():
    origin, d1, noise = _random_params(0), _random_params(1), _random_params(3)
    d2 = {n: 0.6 * d1[n] + t for n, t in _random_params(2).items()}  # correlated: cosine projection would be wrong
    known = [(0.0, 0.0), (1.0, 0.0), (0.3, -1.2), (-0.7, 2.5)]
    points = [{n: origin[n] + a * d1[n] + b * d2[n] for n in origin} for a, b in known]
    found = project(points, origin, d1, d2)
    assert found[:, :2] == pytest.approx(np.array(known), abs=1e-5)
    assert found[:, 2] == pytest.approx(0.0, abs=1e-5)
    off_plane = project([{n: points[2][n] + noise[n] for n in origin}], origin, d1, d2)
    assert off_plane[0, 2] > 0.1


def test_filter_normalization_gives_each_filter_the_weights_norm():
    center = _random_params(0)
    direction = filter_normalized(center, torch.Generator().manual_seed(5))
    for name in ("w", "e"):
        assert direction[name].flatten(1).norm(dim=1) == pytest.approx(center[name].flatten(1).norm(dim=1), rel=1e-5)
        assert not torch.allclose(direction[name], center[name])
    assert torch.count_nonzero(direction["b"]) == 0  # biases and LayerNorm stay put
    again = filter_normalized(center, torch.Generator().manual_seed(5))
    assert all(torch.equal(direction[n], again[n]) for n in center)


def test_hao_plane_scales_the_other_direction_and_ignores_mismatched_heads():
    start, end, other = _random_params(0), _random_params(1), _random_params(2)
    other["w"] = torch.randn(7, 5)  # another task's head: another shape
    plane = hao_plane(start, end, other)
    assert norm(plane.d2) == pytest.approx(norm(difference(end, start)), rel=1e-6)
    assert torch.count_nonzero(plane.d2["w"]) == 0
    assert all(torch.equal(plane.point(1.0, 0.0)[n], end[n]) for n in end)
    assert all(torch.equal(plane.point(0.0, 0.0)[n], start[n]) for n in start)


def test_rolling_back_every_group_gives_the_start_model(trained, options):
    store, (first, _, _) = trained
    this = TrialSnapshots.load(store, first)
    evaluator = build_evaluator(this.config, _settings(options))
    groups = layer_groups(evaluator.model)
    assert list(groups) == ["embeddings", "low", "middle", "high", "top"]
    assert all(name.startswith("bert.encoder.layer.0.") for name in groups["low"])
    assert all(name.startswith("bert.encoder.layer.2.") for name in groups["high"])
    names = [n for group in groups.values() for n in group]
    assert sorted(names) == sorted(this.end())
    start, end = this.start(), this.end()
    rolled = move_group(end, start, names, 0.0)
    assert all(torch.equal(rolled[n], start[n]) for n in start)
    assert evaluator([rolled])[0]["train_loss"] == _model_loss(evaluator, start, "train")
    high_only = move_group(end, start, groups["high"], 0.0)
    assert all(torch.equal(high_only[n], start[n]) for n in groups["high"])
    assert all(torch.equal(high_only[n], end[n]) for n in groups["low"])

    curves, table = layer_curves(store, this, np.array([0.0, 0.5, 1.0]), _settings(options))
    table = table.set_index("group")
    assert table.loc["all", "train_loss"] == _model_loss(evaluator, start, "train")
    assert table.loc["none", "train_loss"] == _model_loss(evaluator, end, "train")
    at_one = curves[curves["a"] == 1.0]
    assert at_one["train_loss"].nunique() == 1  # every group at a = 1 is the fine-tuned model


def test_an_interrupted_surface_resumes_with_the_missing_cells_only(trained, options):
    store, (first, _, _) = trained
    this = TrialSnapshots.load(store, first)
    evaluator = build_evaluator(this.config, _settings(options))
    plane = random_plane(this.end(), seed=0)
    cells = grid_cells(np.array([-1.0, 0.0, 1.0]), np.array([-1.0, 0.0, 1.0]))
    evaluated, interrupt_at = [], [4]

    class Interrupted(Exception):
        pass

    def counting(points):
        evaluated.append(len(points))
        if len(evaluated) == interrupt_at[0]:
            raise Interrupted
        return evaluator(points)
    counting.points_per_pass = 1
    with pytest.raises(Interrupted):
        compute(store, "surface", {"test": 1}, cells, lambda c: plane.point(c.a, c.b), counting)
    evaluated.clear()
    interrupt_at[0] = None
    finished = compute(store, "surface", {"test": 1}, cells, lambda c: plane.point(c.a, c.b), counting)
    assert len(evaluated) == 6 and len(finished) == 9
    full = compute(store, "surface", {"test": 2}, cells, lambda c: plane.point(c.a, c.b), evaluator)
    assert finished["train_loss"].tolist() == full["train_loss"].tolist()


def test_surface_projects_the_trajectory_onto_the_plane(trained, options):
    store, (first, second, _) = trained
    this, other = TrialSnapshots.load(store, first), TrialSnapshots.load(store, second)
    found = surface(store, this, "hao", other, 0, np.array([0.0, 1.0]), np.array([0.0, 1.0]), _settings(options))
    assert len(found.cells) == 4
    trajectory = found.trajectory.set_index("step")
    assert list(trajectory.index) == sorted(this.steps)
    assert trajectory.loc[0, ["a", "b"]].tolist() == pytest.approx([0.0, 0.0], abs=1e-9)
    assert trajectory.loc[this.last_step, ["a", "b"]].tolist() == pytest.approx([1.0, 0.0], abs=1e-6)
    start_cell = found.cells[(found.cells["a"] == 0) & (found.cells["b"] == 0)].iloc[0]
    line_cells = line(store, this, np.array([0.0, 1.0]), _settings(options))
    assert line_cells.iloc[0]["train_loss"] == start_cell["train_loss"]


def test_landscape_commands_write_figures_and_tables(trained, tmp_path):
    store, (first, second, bare) = trained
    runner, out = CliRunner(), tmp_path / "out"
    common = [str(store.path), "--out", str(out), "--train-examples", "8", "--dev-examples", "8", "--device", "cpu"]
    result = runner.invoke(app, ["landscape", "line", *common, str(first), str(second), "--points", "3"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["landscape", "surface", *common, str(first), str(second), "--other",
                                 f"{second},{first}", "--grid", "3", "--range", "-0.5", "1.5"])
    assert result.exit_code == 0, result.output
    assert "off the plane" in result.output
    result = runner.invoke(app, ["landscape", "layers", *common, str(first), "--points", "2"])
    assert result.exit_code == 0, result.output
    assert "high" in result.output
    for name in ("line.png", "surface-hao.png", "surface-hao-3d.png", f"layers-trial-{first}.png",
                 f"rollback-trial-{first}.csv", f"surface-hao-trial-{first}.csv", f"trajectory-hao-trial-{first}.csv"):
        assert (out / name).stat().st_size > 0
    result = runner.invoke(app, ["landscape", "line", *common, str(bare)])
    assert result.exit_code == 2 and "--save-checkpoints" in result.output
    result = runner.invoke(app, ["landscape", "surface", *common, str(first)])
    assert result.exit_code == 2 and "--other" in result.output
    result = runner.invoke(app, ["landscape", "surface", *common, str(first), str(second), "--other", f"{second},x"])
    assert result.exit_code == 2 and "--other takes trial ids" in result.output
