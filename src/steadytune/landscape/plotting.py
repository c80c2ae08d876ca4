"""Landscape figures: 1-D lines, contour and 3-D surfaces with the trajectory, layer-group curves.

Like steadytune.reporting.plots, every function returns a matplotlib Figure built with the object-oriented API.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .analyses import Surface

_PANEL = (4.6, 3.6)


def line_figure(lines: dict[str, pd.DataFrame], metric: str) -> Figure:
    """Loss (train and dev) and dev metric along start -> end, one line style per trial."""
    figure = Figure(figsize=(_PANEL[0] * 2, _PANEL[1]), layout="constrained")
    loss_axis, metric_axis = figure.subplots(1, 2)
    for label, frame in lines.items():
        loss, = loss_axis.plot(frame["a"], frame["train_loss"], label=f"{label} (train)")
        loss_axis.plot(frame["a"], frame["dev_loss"], linestyle="--", color=loss.get_color(), label=f"{label} (dev)")
        metric_axis.plot(frame["a"], frame["dev_metric"], color=loss.get_color(), label=label)
    for axis in (loss_axis, metric_axis):
        for position in (0.0, 1.0):
            axis.axvline(position, color="grey", linewidth=0.6, linestyle=":")
        axis.set_xlabel("a  (0 = start, 1 = end of training)")
        axis.grid(alpha=0.3)
    loss_axis.set(ylabel="loss", title="loss along θ0 + a(θ1 − θ0)")
    metric_axis.set(ylabel=f"dev {metric}", title=f"dev {metric}")
    loss_axis.legend(fontsize="x-small")
    return figure


def _grid(cells: pd.DataFrame, value: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    table = cells.pivot_table(index="b", columns="a", values=value)
    a, b = np.meshgrid(table.columns.to_numpy(), table.index.to_numpy())
    return a, b, table.to_numpy()


def _levels(values: np.ndarray) -> np.ndarray:
    """Contour levels up to the 90th percentile, so a few exploding corners do not flatten the basin."""
    low, high = np.nanmin(values), np.nanquantile(values, 0.9)
    return np.linspace(low, high if high > low else low + 1e-6, 25)


def surface_figure(surfaces: dict[str, Surface], metric: str) -> Figure:
    """Contours of the training loss and the dev error, one row per trial, with its trajectory on top."""
    figure = Figure(figsize=(_PANEL[0] * 2, _PANEL[1] * len(surfaces)), layout="constrained")
    axes = np.atleast_2d(figure.subplots(len(surfaces), 2, squeeze=False))
    for row, (label, found) in zip(axes, surfaces.items()):
        for axis, value, title in ((row[0], "train_loss", "training loss"), (row[1], "dev_error", f"dev error (1 − {metric})")):
            a, b, z = _grid(found.cells, value)
            filled = axis.contourf(a, b, np.minimum(z, _levels(z)[-1]), levels=_levels(z), cmap="viridis")
            axis.contour(a, b, z, levels=_levels(z)[::4], colors="white", linewidths=0.4)
            figure.colorbar(filled, ax=axis, shrink=0.9)
            path = found.trajectory
            axis.plot(path["a"], path["b"], color="red", marker="o", markersize=3, linewidth=1.2, label="trajectory")
            axis.plot([0], [0], marker="s", color="white", markeredgecolor="black", linestyle="none", label="start")
            axis.plot(path["a"].iloc[-1:], path["b"].iloc[-1:], marker="*", color="red", markersize=11,
                      markeredgecolor="black", linestyle="none", label="end")
            axis.set(title=f"{label}\n{title}", xlabel=f"a: {found.label1}", ylabel=f"b: {found.label2}")
        row[0].legend(fontsize="x-small", loc="lower left")
    return figure


def surface_3d_figure(surfaces: dict[str, Surface]) -> Figure:
    """The training-loss surfaces in 3-D, side by side, on one shared loss axis."""
    figure = Figure(figsize=(_PANEL[0] * len(surfaces), _PANEL[1] * 1.3), layout="constrained")
    top = max(np.nanquantile(s.cells["train_loss"], 0.9) for s in surfaces.values())
    for k, (label, found) in enumerate(surfaces.items()):
        axis = figure.add_subplot(1, len(surfaces), k + 1, projection="3d")
        a, b, z = _grid(found.cells, "train_loss")
        axis.plot_surface(a, b, np.minimum(z, top), cmap="viridis", linewidth=0, antialiased=True)
        axis.set(title=label, xlabel="a", ylabel="b", zlabel="training loss", zlim=(np.nanmin(z), top))
        axis.set_box_aspect(None, zoom=0.85)  # room for the z label inside the panel
    return figure


def layer_figure(curves: pd.DataFrame, metric: str, title: str) -> Figure:
    """Training loss and dev metric as each layer group alone moves from its start (0) to fine-tuned (1)."""
    figure = Figure(figsize=(_PANEL[0] * 2, _PANEL[1]), layout="constrained")
    loss_axis, metric_axis = figure.subplots(1, 2)
    for group, frame in curves.groupby("group", sort=False):
        loss_axis.plot(frame["a"], frame["train_loss"], marker=".", label=group)
        metric_axis.plot(frame["a"], frame["dev_metric"], marker=".", label=group)
    loss_axis.set(xlabel="a (0 = group rolled back, 1 = fine-tuned)", ylabel="training loss", title=title)
    metric_axis.set(xlabel="a (0 = group rolled back, 1 = fine-tuned)", ylabel=f"dev {metric}")
    for axis in (loss_axis, metric_axis):
        axis.grid(alpha=0.3)
    loss_axis.legend(fontsize="x-small", title="group moved")
    return figure
