"""Experiment entry point, configuration, stage chaining and MLflow bookkeeping."""
