"""Distillation of the decomposer (see README)."""
