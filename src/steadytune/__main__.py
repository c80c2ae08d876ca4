"""`python -m steadytune` is the `steadytune` command."""
from steadytune.cli import app

app(prog_name="steadytune")
