"""The models: where a flag points, GGUF conversion, devices, the three roles, checkpoint adapters."""
