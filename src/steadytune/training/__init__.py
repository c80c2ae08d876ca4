"""Training: one trial (its loop, evaluation, data order, snapshots, saved states and diagnostics)."""
