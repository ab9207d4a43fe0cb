"""Rendering stored runs: summarize, markdown/csv/json, html, plots, speed tables, compare."""
