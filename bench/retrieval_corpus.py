"""Parse a corpus once and cache it for ``retrieval_bench.py``.

Each document is parsed by ``parse_document`` (the pipeline's own parser); the cache keeps the
parsed text (before cleaning) and, when docling produced it, the ``DoclingDocument`` as JSON
(docling's ``HybridChunker`` needs it). Entries are keyed by the file's sha256, so an unchanged
file is never parsed twice. Parsing the whole ``good/`` corpus takes minutes on two cores.

Usage: ``python bench/retrieval_corpus.py [CORPUS] [--cache DIR]``
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = REPO.parent / "shared" / "corpus" / "good"
DEFAULT_CACHE = REPO / "bench" / ".cache" / "parsed"
# Scans need OCR (minutes) and the QA set asks nothing about them.
SKIPPED_FOLDERS = {"scan"}


def corpus_files(corpus: Path) -> list[Path]:
    return sorted(
        path
        for path in corpus.rglob("*")
        if path.is_file() and path.relative_to(corpus).parts[0] not in SKIPPED_FOLDERS
    )


def _cache_path(cache: Path, data: bytes) -> Path:
    return cache / f"{hashlib.sha256(data).hexdigest()}.json"


def parse_one(path: Path, corpus: Path) -> dict[str, Any]:
    """Parse ``path`` with the pipeline's parser, capturing docling's document on the way."""
    from genai_ingest.config import ParseSettings
    from genai_ingest.parse import docling_engine
    from genai_ingest.parse import document as parse

    captured: list[Any] = []
    convert = docling_engine.docling_convert

    def capturing(*args: Any, **kwargs: Any) -> Any:
        document = convert(*args, **kwargs)
        captured.append(document)
        return document

    docling_engine.docling_convert = capturing
    try:
        parsed = parse.parse_document(path.read_bytes(), path.name, ParseSettings())
    finally:
        docling_engine.docling_convert = convert
    docling = captured[-1].export_to_dict() if captured and parsed.parser == "docling" else None
    return {
        "source": str(path.relative_to(corpus)),
        "format": parsed.format,
        "parser": parsed.parser,
        "text": parsed.text,
        "docling": docling,
    }


def load_corpus(corpus: Path = DEFAULT_CORPUS, cache: Path = DEFAULT_CACHE) -> list[dict]:
    """Every parseable document of ``corpus``, parsed once and cached."""
    cache.mkdir(parents=True, exist_ok=True)
    documents = []
    for path in corpus_files(corpus):
        cached = _cache_path(cache, path.read_bytes())
        if not cached.exists():
            try:
                entry = parse_one(path, corpus)
            except Exception as exc:  # a document the pipeline rejects is not in the bench
                entry = {"source": str(path.relative_to(corpus)), "error": repr(exc)[:300]}
            cached.write_text(json.dumps(entry))
            print(f"parsed {entry['source']}", flush=True)
        entry = json.loads(cached.read_text())
        if "error" not in entry:
            documents.append(entry)
    return documents


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("corpus", nargs="?", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args()
    documents = load_corpus(args.corpus, args.cache)
    print(f"{len(documents)} documents cached in {args.cache}")


if __name__ == "__main__":
    main()
