"""mkdocs hook: the reference pages are generated from the code at build time, never copied by hand.

A page holds a marker such as `<!-- generated: cli -->`; the build replaces it with:
- `cli`: every command of the typer app, its help and its options (names, defaults, help), from click's view of it;
- `trial-config`: TrialConfig's and RunOptions' fields (the keys of a YAML/TOML config, the flags of `train`);
- `recipes`: every named preset, with its values;
- `store-schema`: the store's tables, as SQLite creates them.
A stale marker or an unknown one fails the build (`mkdocs build --strict` runs in the test suite).
"""
from __future__ import annotations

import html
import re

MARKER = re.compile(r"<!-- generated: ([a-z-]+) -->")


def on_page_markdown(markdown: str, page, config, files) -> str:
    return MARKER.sub(lambda match: GENERATORS[match.group(1)](), markdown)


def _cell(text: object) -> str:
    """Table-cell text: one line, pipes escaped, HTML escaped (help texts hold <, > and |)."""
    return html.escape(" ".join(str(text).split())).replace("|", "\\|")


def _cli() -> str:
    import typer

    from steadytune.cli import app

    sections = []

    def walk(command, path: list[str]) -> None:
        # Duck-typed: typer builds on its own copy of click, so click's classes are not its classes.
        if hasattr(command, "commands"):
            for name in sorted(command.commands):
                walk(command.commands[name], [*path, name])
            return
        arguments = [p for p in command.params if p.param_type_name == "argument"]
        usage = " ".join(["steadytune", *path, *(p.name.upper() for p in arguments)])
        rows = []
        for param in command.params:
            if param.param_type_name == "argument":
                rows.append(f"| `{param.name.upper()}` | argument | {_cell(param.help or '')} |")
                continue
            names = " / ".join(f"`{name}`" for name in (*param.opts, *param.secondary_opts))
            default = param.default if param.show_default is not False else None
            unset = default in (None, "", (), [], False) or callable(default)
            shown = "" if unset else f" (default: `{_cell(default)}`)"
            rows.append(f"| {names} | {_cell(_type_name(param))} | {_cell(param.help or '')}{shown} |")
        help_text = (command.help or "").split("\f")[0].strip()
        sections.append(f"### `{' '.join(['steadytune', *path])}`\n\n{help_text}\n\n```\n{usage} [OPTIONS]\n```\n\n"
                        "| option | type | what |\n| --- | --- | --- |\n" + "\n".join(rows) + "\n")

    walk(typer.main.get_command(app), [])
    return "\n".join(sections)


def _type_name(param) -> str:
    """A parameter's type as its annotation says: a class's name, a Literal's choices, an Optional's inner type."""
    import typing

    annotation = param.type_descriptor.annotation
    if typing.get_origin(annotation) is typing.Literal:
        return "|".join(map(str, typing.get_args(annotation)))
    inner = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, getattr(__import__("types"), "UnionType")) and len(inner) == 1:
        annotation = inner[0]
    return getattr(annotation, "__name__", str(annotation))


def _fields(model) -> str:
    rows = []
    for name, field in model.model_fields.items():
        default = field.get_default(call_default_factory=True)
        rows.append(f"| `{name}` | `{_cell(default)}` | {_cell(field.description or '')} |")
    return "| key | default | what |\n| --- | --- | --- |\n" + "\n".join(rows) + "\n"


def _trial_config() -> str:
    from steadytune.config import RunOptions, TrialConfig

    return ("### TrialConfig: what a trial is (its trial key is a hash of these)\n\n" + _fields(TrialConfig)
            + "\n### RunOptions: how it runs (not part of the trial key)\n\n" + _fields(RunOptions))


def _recipes() -> str:
    from steadytune.recipes import RECIPES

    rows = [f"| `{name}` | {_cell(text)} | {_cell(', '.join(f'{k}={v}' for k, v in values.items()))} |"
            for name, (text, values) in RECIPES.items()]
    return "| recipe | what | values |\n| --- | --- | --- |\n" + "\n".join(rows) + "\n"


def _store_schema() -> str:
    from steadytune.storage.store import schema_sql

    return f"```sql\n{schema_sql('sqlite').strip()}\n```\n"


GENERATORS = {"cli": _cli, "trial-config": _trial_config, "recipes": _recipes, "store-schema": _store_schema}
