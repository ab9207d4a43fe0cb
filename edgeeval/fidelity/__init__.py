"""Quantization fidelity: orchestration, the child passes, KLD maths."""
