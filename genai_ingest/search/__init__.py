"""Search: query the index with the encoder it was built with, and evaluate retrieval."""
