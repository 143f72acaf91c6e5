"""Generators of the built-in datasets (deterministic, cached)."""
