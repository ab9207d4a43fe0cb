"""Quantization fidelity: orchestration, the child passes, KLD maths.

Only light constants live here, so the command line can show its defaults without importing
numpy.
"""

#: Tokens per chunk (llama-perplexity's default).
N_CTX = 512
#: Chunks scored by default (0 = the whole corpus).
MAX_CHUNKS = 32
