"""Accuracy tasks: task schema, datasets, formats, generators."""
