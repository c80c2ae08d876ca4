"""`steadytune gc`: free the disk that files beside a store no trial can use take."""
from __future__ import annotations

from typing import Annotated

import typer

from ..storage.cleanup import collect
from ..storage.store import Store
from .common import console, reports_user_errors


@reports_user_errors
def gc(store: Annotated[str, typer.Argument(help="Result store: a SQLite file, or a postgresql:// URL.")],
       dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would go; remove nothing.")] = False) -> None:
    """Remove saved states of trials that ended for good and snapshots of attempts that left no result, reporting
    the bytes freed. Nothing a trial can still use goes: states of paused or interrupted trials, snapshots of
    trials with a result or running, saved encoders."""
    with Store(store, readonly=dry_run, create=False) as db:
        found = collect(db, dry_run)
        label = db.label
    for item in found:
        console.print(f"{'would remove' if dry_run else 'removed'} {item.path} ({item.size:,} bytes): {item.why}",
                      soft_wrap=True, markup=False, highlight=False)
    total = sum(item.size for item in found)
    console.print(f"{label}: {len(found)} file(s), {total:,} bytes ({total / 2**20:.1f} MiB) "
                  + ("would be freed (--dry-run)" if dry_run else "freed"), soft_wrap=True, markup=False)
