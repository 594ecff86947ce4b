"""Deterministic orchestration: the run workflow and its models."""
