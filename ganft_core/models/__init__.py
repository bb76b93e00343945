"""ganft's networks: the architecture registry, weights I/O (safetensors + model.json), torch.export."""
