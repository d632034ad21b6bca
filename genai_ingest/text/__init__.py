"""Text: clean, reflow, validate and redact parsed text, chunk it, and find duplicates."""
