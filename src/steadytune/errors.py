"""Errors that the trial, study and command-line layers share; each message is one line for the user."""
from __future__ import annotations


class Interrupted(Exception):
    """The user stopped the work (Ctrl-C); the message says what was kept and how to resume."""


class TrialError(RuntimeError):
    """A trial failed while training; it is recorded as `failed` and the message says what was kept."""
