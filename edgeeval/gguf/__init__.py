"""Reading GGUF files: header checks, KV-cache layout, model facts. A leaf: it downloads nothing
and loads no model, so children read headers without fetch/ or huggingface_hub."""
