"""Errors of clipfit-analyze a user can act on (printed without a traceback, exit status 2)."""

from __future__ import annotations

from clipfit.errors import ClipfitError


class AnalysisError(ClipfitError, RuntimeError):
    """Nothing to analyse, or inputs that do not go together; the message says what to pass instead."""
