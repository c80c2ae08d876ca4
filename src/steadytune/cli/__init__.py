"""The `steadytune` command line: a thin layer over the library, one module per command."""
from __future__ import annotations

import typer

from .diagnose import diagnose
from .forecast import forecast_app
from .gc import gc
from .landscape import landscape_app
from .recipes import recipes
from .report import report
from .reproduce import reproduce
from .results import export, runs, studies
from .soup import soup
from .study import study_app
from .train import train

app = typer.Typer(no_args_is_help=True, add_completion=False, rich_markup_mode="rich",
                  help="Measurable, stable fine-tuning of pretrained encoders on small datasets.")
app.command()(train)
app.command()(runs)
app.command()(studies)
app.command()(export)
app.command()(recipes)
app.add_typer(study_app, name="study")
app.command()(report)
app.command()(diagnose)
app.add_typer(landscape_app, name="landscape")
app.command()(reproduce)
app.command()(soup)
app.add_typer(forecast_app, name="forecast")
app.command()(gc)
