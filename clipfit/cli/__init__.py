"""Command-line entry points: ``clipfit-train`` and ``clipfit-eval`` (``main(argv) -> int``)."""
