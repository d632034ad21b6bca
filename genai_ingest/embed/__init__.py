"""Embed: the encoders that turn chunks into vectors (local model, remote endpoint) and queries
into vectors (ONNX)."""
