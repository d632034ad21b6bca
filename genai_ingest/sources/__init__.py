"""Sources: discovering documents (folders, globs, URLs, S3) and fetching their bytes."""
