"""What to measure: models.yaml, quantization recipes, bench profiles."""
