"""`steadytune recipes`: the named presets, printed in full."""
from __future__ import annotations

import json
from typing import Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from ..config import SECTIONS, ConfigError
from ..recipes import RECIPES, resolved_recipe
from .common import console, print_table, reports_user_errors


@reports_user_errors
def recipes(name: Annotated[Optional[str], typer.Argument(help="Show only this recipe.")] = None) -> None:
    """The named presets and every value each one sets (flags override them one by one)."""
    if name is not None and name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; known: {', '.join(RECIPES)}")
    for recipe in [name] if name else list(RECIPES):
        summary, overrides = RECIPES[recipe]
        full = resolved_recipe(recipe).model_dump()
        console.print()
        table = Table(show_header=True)
        table.add_column("option")
        table.add_column("value")
        for section, fields in SECTIONS.items():
            if section in ("Data", "Seeds", "Model"):
                continue
            for field in fields:
                style = "bold" if field in overrides else "dim"
                table.add_row(Text(f"--{field.replace('_', '-')}", style), Text(json.dumps(full[field]), style))
        print_table(table, f"{recipe}: {summary}")
