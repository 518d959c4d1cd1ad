"""Reusable Keras layers shared by zoo families."""
