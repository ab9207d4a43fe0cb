"""Verified model files on disk: Hub, PyPI, local paths, the bounded GGUF check, quantize."""
