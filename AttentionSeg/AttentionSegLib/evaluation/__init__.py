"""Evaluation: per-label metrics, file and dataset evaluation, model comparison, reports."""
