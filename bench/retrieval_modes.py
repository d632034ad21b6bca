"""Search modes and a hybrid peer for ``retrieval_bench.py``.

- ``ours [dense|lexical|hybrid]``: our chunks and their vector rows (the chunk's and its
  windows', as the bench computed them) written into a real ``SQLiteVectorStore`` in a
  temporary file and searched with ``store.search(mode=...)``: the shipped FTS5 BM25 and the
  shipped fusion (``genai_ingest.stores.fusion``), nothing re-implemented here.
- ``llamaindex-sentence+bm25``: what a LlamaIndex user builds for hybrid search: the
  ``SentenceSplitter(256, 32)`` nodes in a ``VectorStoreIndex`` (same model, same vectors) and
  a ``BM25Retriever`` (``llama-index-retrievers-bm25``: English stemmer and stop words), fused
  by ``QueryFusionRetriever(mode="reciprocal_rerank", num_queries=1)``; each retriever returns
  ``depth`` candidates (the bench runs it as deep as our fusion, and 50).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from genai_ingest.config import FusionSettings, SearchMode
from genai_ingest.models import Chunk, EmbeddedChunk, sha256_hex
from genai_ingest.search.evaluate import EvalReport, Retrieved, evaluate
from genai_ingest.stores.sqlite import SQLiteVectorStore


def _embedded(index: int, source: str, text: str, rows: np.ndarray) -> EmbeddedChunk:
    chunk = Chunk(
        chunk_id=f"c{index:06d}",
        doc_id=source,
        index=index,
        text=text,
        text_hash=sha256_hex(text),
        token_count=0,
        metadata={"source": source},
    )
    return EmbeddedChunk(chunk, rows[0], rows[1:] if len(rows) > 1 else None)


def store_reports(
    sources: Sequence[str],
    stored: Sequence[str],
    matrix: np.ndarray,
    starts: np.ndarray,
    qa_sets: Sequence[Any],
    k: int,
    modes: Sequence[SearchMode],
    fusion: FusionSettings,
) -> dict[SearchMode, dict[str, EvalReport]]:
    """Per mode, per QA set: the evaluation of the chunks searched in a real SQLite store."""
    ends = [*starts[1:], len(matrix)]
    items = [
        _embedded(i, source, text, matrix[start:end])
        for i, (source, text, start, end) in enumerate(
            zip(sources, stored, starts, ends, strict=True)
        )
    ]
    with tempfile.TemporaryDirectory() as folder:
        store = SQLiteVectorStore(Path(folder) / "bench.db")
        store.ensure_index("bench", matrix.shape[1])
        for begin in range(0, len(items), 500):
            store.upsert_chunks(items[begin : begin + 500])
        try:
            return {
                mode: {
                    qa.name: evaluate(qa.items, _store_search(store, qa, mode, fusion), k)
                    for qa in qa_sets
                }
                for mode in modes
            }
        finally:
            store.close()


def _store_search(
    store: SQLiteVectorStore, qa: Any, mode: SearchMode, fusion: FusionSettings
) -> Callable[[list[str], int], list[list[Retrieved]]]:
    def search(questions: list[str], top: int) -> list[list[Retrieved]]:
        results = []
        for question, vector in zip(questions, qa.vectors, strict=True):
            hits = store.search(vector, top, text=question, mode=mode, fusion=fusion)
            results.append([Retrieved(h.source, h.text) for h in hits])
        return results

    return search


# --- the LlamaIndex hybrid peer -------------------------------------------------------------


def llamaindex_bm25_fusion(
    docs: Sequence[Any],
    qa_sets: Sequence[Any],
    vectors: Any,
    splitter: Any,
    k: int,
    depth: int,
) -> tuple[list[str], dict[str, EvalReport]]:
    """(node texts, reports per QA set) of LlamaIndex's dense + BM25 fusion over ``splitter``'s
    nodes; ``vectors`` embeds (and caches) texts with the bench's model."""
    from llama_index.core import Document, Settings, VectorStoreIndex
    from llama_index.core.retrievers import QueryFusionRetriever
    from llama_index.retrievers.bm25 import BM25Retriever

    Settings.llm = None  # num_queries=1: no query generation, no LLM
    documents = [
        Document(
            text=doc.text,
            metadata={"source": doc.source},
            excluded_embed_metadata_keys=["source"],
            excluded_llm_metadata_keys=["source"],
        )
        for doc in docs
    ]
    nodes = splitter.get_nodes_from_documents(documents)
    embedding = _cached_embedding(vectors)
    index = VectorStoreIndex(nodes, embed_model=embedding, show_progress=False)
    retriever = QueryFusionRetriever(
        [
            index.as_retriever(similarity_top_k=depth),
            BM25Retriever.from_defaults(nodes=nodes, similarity_top_k=depth),
        ],
        mode="reciprocal_rerank",
        num_queries=1,
        similarity_top_k=k,
        use_async=False,
    )

    def searcher(qa: Any) -> Callable[[list[str], int], list[list[Retrieved]]]:
        def search(questions: list[str], top: int) -> list[list[Retrieved]]:
            embedding.queries = dict(zip(questions, qa.vectors, strict=True))
            return [
                [Retrieved(n.node.metadata["source"], n.node.get_content()) for n in hits[:top]]
                for hits in map(retriever.retrieve, questions)
            ]

        return search

    texts = [node.get_content() for node in nodes]
    return texts, {qa.name: evaluate(qa.items, searcher(qa), k) for qa in qa_sets}


def _cached_embedding(vectors: Any) -> Any:
    """A LlamaIndex embedding model answering from the bench's vector cache (same model, same
    normalised vectors as every other row) and from the QA set's query vectors."""
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from pydantic import Field, PrivateAttr

    class CachedEmbedding(BaseEmbedding):
        _vectors: Any = PrivateAttr()
        queries: dict[str, Any] = Field(default_factory=dict)  # question -> its vector

        def __init__(self, cache: Any) -> None:
            super().__init__(model_name="all-MiniLM-L6-v2", embed_batch_size=2048)
            self._vectors = cache

        def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
            return self._vectors.of(list(texts)).tolist()

        def _get_text_embedding(self, text: str) -> list[float]:
            return self._get_text_embeddings([text])[0]

        def _get_query_embedding(self, query: str) -> list[float]:
            return np.asarray(self.queries[query]).tolist()

        async def _aget_query_embedding(self, query: str) -> list[float]:
            return self._get_query_embedding(query)

    return CachedEmbedding(vectors)
