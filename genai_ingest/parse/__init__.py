"""Parse: sniff the format, convert bytes to a ParsedDocument (docling, PDF text layer, OCR,
converters) in isolated workers."""
