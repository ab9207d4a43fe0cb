"""edgeeval: measure small local GGUF models and rank them by capability per gigabyte."""

__version__ = "0.1.0"
