"""The machine: the one llama_cpp importer, child processes, memory probes, host facts."""
