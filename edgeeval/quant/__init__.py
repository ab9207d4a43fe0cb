"""Building derived variants: recipes (what to quantize how) and the build that runs llama.cpp's
quantizer in a child."""
