"""The docs site builds with `mkdocs build --strict`: a broken link, a missing page or a stale API name fails."""
from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_the_site_builds_strictly_with_its_generated_reference(tmp_path):
    site = tmp_path / "site"
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)], cwd=ROOT,
                            capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    cli = (site / "reference" / "cli" / "index.html").read_text()
    # The reference is generated from the code: every command and the config's fields are there.
    for text in ("steadytune study run", "steadytune reproduce", "--wi-seeds", "--early-stop", "--checkpoint-every"):
        assert text in cli, text
    config = (site / "reference" / "config" / "index.html").read_text()
    assert "wi_seed" in config and "dropout_seed" in config and "checkpoint_every" in config
    schema = html.unescape(re.sub(r"<[^>]+>", "", (site / "reference" / "store" / "index.html").read_text()))
    assert "CREATE TABLE IF NOT EXISTS claims" in schema and "forecast-stopped" in schema
    assert "steadytune.open_store" in (site / "reference" / "api" / "index.html").read_text()


def test_the_readme_is_a_front_door_that_starts_with_the_two_commands():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200
    code = lines[lines.index("```") + 1:lines.index("```") + 3]
    assert code == ["make demo", "make test"] and lines.index("```") < 5
