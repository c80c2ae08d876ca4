"""`python -m steadytune` runs the command line, like the `steadytune` script."""
from .cli import app

app(prog_name="steadytune")
