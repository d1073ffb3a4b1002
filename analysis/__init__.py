"""Measurements on checkpoints and models, returned as tidy pandas tables (clipfit-analyze)."""
