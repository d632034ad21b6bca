"""A corpus of real public text for the at-scale kNN bench (``es_bench.py --scale``), not in
``../shared``: three Debian documentation packages, versions pinned, fetched with
``apt-get download`` and unpacked with ``dpkg-deb -x`` into the cache folder.

| package | version | text used | licence (debian/copyright) |
|---|---|---|---|
| python3.11-doc | 3.11.2-6+deb12u9 | reStructuredText sources (``_sources/*.rst.txt``) | PSF-2.0 |
| postgresql-doc-15 | 15.20-0+deb12u1 | HTML manual, text of its block elements | PostgreSQL |
| linux-doc-6.1 | 6.1.192-3 | reStructuredText sources, without ``translations/`` | GPL-2.0 |

Each file is one document (rst section titles turned into Markdown headings, HTML headings
likewise), cleaned (``text.clean.clean_text``) and chunked by the project's ``Chunker`` with
the default settings (windows of 96 word pieces), then embedded by the project's default
encoder (int8 ONNX, windows only: ``encoders.embed_units``), exactly as a run embeds. Every
``HOLD_OUT``-th document is held out (not embedded): its sentences are the queries.

The vectors are cached as ``.npy`` under ``<cache>/scale/<key>/``, the key a hash of the package
pins, the encoder id, the chunk settings and PIPELINE_VERSION; encoding is checkpointed in parts,
so a killed run resumes. Usage: ``python bench/scale_corpus.py [--cache DIR]`` (prints counts).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genai_ingest.config import CleanSettings, Settings
from genai_ingest.embed.encoders import EmbedUnit, embed_units
from genai_ingest.models import Chunk, document_id, sha256_hex
from genai_ingest.run.runtime import PIPELINE_VERSION, Runtime
from genai_ingest.text.clean import clean_text

CACHE = Path("/var/cache/genai-ingest") if Path("/var/cache/genai-ingest").is_dir() else None
HOLD_OUT = 25  # every 25th document: query sentences only
PART = 2000  # chunks per checkpointed encoding part


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    licence: str
    pattern: str  # glob under the unpacked package
    kind: str  # "rst" or "html"
    exclude: str = ""


PACKAGES = (
    Package(
        "python3.11-doc",
        "3.11.2-6+deb12u9",
        "PSF-2.0",
        "usr/share/doc/python3.11/html/_sources/**/*.rst.txt",
        "rst",
    ),
    Package(
        "postgresql-doc-15",
        "15.20-0+deb12u1",
        "PostgreSQL",
        "usr/share/doc/postgresql-doc-15/html/*.html",
        "html",
    ),
    Package(
        "linux-doc-6.1",
        "6.1.192-3",
        "GPL-2.0",
        "usr/share/doc/linux-doc-6.1/html/_sources/**/*.rst.txt",
        "rst",
        exclude="/translations/",
    ),
)

_RST_UNDERLINE = re.compile(r"^([=\-~^\"'`#*+:.])\1{2,}\s*$")
_SENTENCE = re.compile(r"(?<=[.?!])\s+(?=[A-Z])")


def default_cache() -> Path:
    if CACHE is not None:
        return CACHE / "bench-scale"
    return Path.home() / ".cache" / "genai-ingest" / "bench-scale"


def fetch(cache: Path) -> dict[str, Path]:
    """Each package unpacked under ``cache/x/<name>_<version>`` (downloaded once)."""
    roots = {}
    for pkg in PACKAGES:
        root = cache / "x" / f"{pkg.name}_{pkg.version}"
        if not (root / "usr").is_dir():
            debs = cache / "debs"
            debs.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                ["apt-get", "download", f"{pkg.name}={pkg.version}"], cwd=debs, check=True
            )
            deb = next(debs.glob(f"{pkg.name}_*{pkg.version.split(':')[-1]}*_all.deb"))
            root.mkdir(parents=True, exist_ok=True)
            subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        roots[pkg.name] = root
    return roots


def rst_markdown(text: str) -> str:
    """reStructuredText with its section titles (a line over a punctuation underline) as
    Markdown headings, so that the chunker sees the sections."""
    lines = text.splitlines()
    out: list[str] = []
    levels: list[str] = []
    for line in lines:
        match = _RST_UNDERLINE.match(line)
        if match and out and out[-1].strip() and len(line.rstrip()) >= len(out[-1].rstrip()):
            if match.group(1) not in levels:
                levels.append(match.group(1))
            out[-1] = "#" * min(len(levels), 6) + " " + out[-1].strip()
        elif not (match and not (out and out[-1].strip())):  # overlines dropped
            out.append(line)
    return "\n".join(out)


def html_markdown(data: bytes) -> str:
    """The text of an HTML page's headings (as Markdown) and block elements."""
    import lxml.html

    tree = lxml.html.fromstring(data)
    for junk in tree.xpath("//script|//style|//div[@class='navheader']|//div[@class='navfooter']"):
        junk.drop_tree()
    tags = ("h1", "h2", "h3", "h4", "p", "pre", "li", "dt", "td")
    blocks = []
    for el in tree.iter(*tags):
        if any(a.tag in tags for a in el.iterancestors()):  # its text is in its ancestor's
            continue
        text = " ".join(el.text_content().split()) if el.tag != "pre" else el.text_content()
        if text.strip():
            level = int(el.tag[1]) if el.tag[0] == "h" and el.tag[1:].isdigit() else 0
            blocks.append(("#" * level + " " if level else "") + text.strip())
    return "\n\n".join(blocks)


def documents(roots: dict[str, Path]) -> list[tuple[str, str, str]]:
    """(uri, licence, cleaned Markdown) of every document, in a fixed order."""
    clean = CleanSettings()
    docs = []
    for pkg in PACKAGES:
        root = roots[pkg.name]
        for path in sorted(root.glob(pkg.pattern)):
            if pkg.exclude and pkg.exclude in str(path):
                continue
            raw = path.read_bytes()
            if pkg.kind == "html":
                text = html_markdown(raw)
            else:
                text = rst_markdown(raw.decode("utf-8", errors="replace"))
            text = clean_text(text, clean)
            if len(text.split()) >= 20:
                uri = f"deb://{pkg.name}/{path.relative_to(root)}"
                docs.append((uri, pkg.licence, text))
    return docs


def corpus_key(settings: Settings, encoder_id: str) -> str:
    pins = [(p.name, p.version, p.pattern, p.exclude) for p in PACKAGES]
    blob = json.dumps(
        [pins, encoder_id, settings.chunk.model_dump(), PIPELINE_VERSION, HOLD_OUT, 2]
    )
    return sha256_hex(blob)[:16]


def query_sentences(texts: list[str], count: int, seed: int = 5) -> list[str]:
    """Prose sentences (8 to 40 words, mostly letters) of held-out documents, sampled."""
    sentences = []
    for text in texts:
        for para in text.split("\n\n"):
            if para.startswith(("#", "    ", "\t", "..", "::", ">>>", "$")):
                continue
            for s in _SENTENCE.split(" ".join(para.split())):
                words = s.split()
                letters = sum(c.isalpha() or c.isspace() for c in s)
                if 8 <= len(words) <= 40 and letters >= 0.85 * len(s):
                    sentences.append(s)
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(sentences), size=min(count, len(sentences)), replace=False)
    return [sentences[i] for i in sorted(picked)]


@dataclass
class ScaleCorpus:
    """Chunks (``chunks.jsonl``), their vectors (``vectors.npy``: each chunk's rows, chunk
    vector first, then its windows'; ``offsets.npy``: chunk i's rows are
    ``offsets[i]:offsets[i + 1]``), and the query sentences with their vectors."""

    folder: Path
    chunks: list[Chunk]
    vectors: np.ndarray
    offsets: np.ndarray
    queries: list[str]
    query_vectors: np.ndarray
    encoder_id: str
    documents: int


def prepare(cache: Path, settings: Settings | None = None, queries: int = 500) -> ScaleCorpus:
    """Fetch, chunk and embed the corpus (each step cached under ``cache``)."""
    settings = settings or Settings(data_dir=cache / "state")
    rt = Runtime(settings)
    folder = cache / "scale" / corpus_key(settings, rt.encoder.id)
    folder.mkdir(parents=True, exist_ok=True)
    chunks_file = folder / "chunks.jsonl"
    if not chunks_file.is_file():
        write_chunks(rt, fetch(cache), folder)
    chunks = [Chunk(**json.loads(line)) for line in chunks_file.open()]
    meta = json.loads((folder / "meta.json").read_text())
    if not (folder / "vectors.npy").is_file():
        embed_parts(rt, chunks, folder)
    if not (folder / "queries.npy").is_file():
        held = (folder / "held_out.txt").read_text().split("\n\x1e\n")
        sentences = query_sentences(held, queries)
        (folder / "queries.json").write_text(json.dumps(sentences, indent=0))
        np.save(folder / "queries.npy", rt.query_embedder.embed(sentences).astype(np.float32))
    return ScaleCorpus(
        folder,
        chunks,
        np.load(folder / "vectors.npy", mmap_mode="r"),
        np.load(folder / "offsets.npy"),
        json.loads((folder / "queries.json").read_text()),
        np.load(folder / "queries.npy"),
        rt.encoder.id,
        meta["documents"],
    )


def write_chunks(rt: Runtime, roots: dict[str, Path], folder: Path) -> None:
    started = time.perf_counter()
    docs = documents(roots)
    held, count, licences = [], 0, {}
    with (folder / "chunks.jsonl.tmp").open("w") as out:
        for n, (uri, licence, text) in enumerate(docs):
            if n % HOLD_OUT == HOLD_OUT - 1:
                held.append(text)
                continue
            meta = {"source": uri, "language": "en", "licence": licence}
            for chunk in rt.chunker.split(document_id(uri), text, meta):
                out.write(json.dumps(chunk.__dict__, default=str) + "\n")
                count += 1
            licences[licence] = licences.get(licence, 0) + 1
    (folder / "held_out.txt").write_text("\n\x1e\n".join(held))
    meta = {"documents": len(docs) - len(held), "held_out": len(held), "chunks": count}
    (folder / "meta.json").write_text(json.dumps({**meta, "licences": licences}))
    (folder / "chunks.jsonl.tmp").rename(folder / "chunks.jsonl")
    print(f"chunked {meta} in {time.perf_counter() - started:.0f} s", flush=True)


def embed_parts(rt: Runtime, chunks: list[Chunk], folder: Path) -> None:
    """Encode in parts of ``PART`` chunks, each saved as it is done (a killed run resumes)."""
    parts = folder / "parts"
    parts.mkdir(exist_ok=True)
    started = time.perf_counter()
    for start in range(0, len(chunks), PART):
        part = parts / f"{start:08d}.npy"
        if part.is_file():
            continue
        units = [
            EmbedUnit(c.embed_text, tuple(c.window_texts)) for c in chunks[start : start + PART]
        ]
        rows = embed_units(rt.embedder, units, rt.encoder.windows)
        np.save(parts / "tmp.npy", np.concatenate(rows).astype(np.float32))
        np.save(parts / f"{start:08d}.counts.npy", np.array([len(r) for r in rows]))
        (parts / "tmp.npy").rename(part)
        print(
            f"  embedded {min(start + PART, len(chunks))}/{len(chunks)} chunks "
            f"({time.perf_counter() - started:.0f} s)",
            flush=True,
        )
    starts = range(0, len(chunks), PART)
    vectors = np.concatenate([np.load(parts / f"{s:08d}.npy") for s in starts])
    counts = np.concatenate([np.load(parts / f"{s:08d}.counts.npy") for s in starts])
    np.save(folder / "offsets.npy", np.concatenate([[0], np.cumsum(counts)]))
    np.save(folder / "vectors.npy", vectors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=default_cache())
    args = parser.parse_args()
    corpus = prepare(args.cache)
    windows = len(corpus.vectors) - len(corpus.chunks)
    print(
        f"{corpus.folder}: {corpus.documents} documents, {len(corpus.chunks)} chunks, "
        f"{len(corpus.vectors)} vectors ({windows} windows), {len(corpus.queries)} queries, "
        f"encoder {corpus.encoder_id}"
    )


if __name__ == "__main__":
    main()
