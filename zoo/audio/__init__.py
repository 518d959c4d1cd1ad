"""Audio model families."""
