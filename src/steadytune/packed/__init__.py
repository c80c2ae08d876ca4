"""Packed trials: K seeds of one config trained together, their parameters stacked along a leading dimension."""
