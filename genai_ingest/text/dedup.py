"""Exact and near-duplicate detection: normalised text hashes and MinHash/LSH signatures.

Signatures are datasketch MinHash values (``affine32`` scheme, seed 1, pinned: stored signatures
must stay comparable across versions) over word shingles of lower-cased, NFKC-normalised text
with punctuation dropped. LSH band keys are plain strings, so candidates can be looked up as
keywords in any store: two documents share a band key when all ``rows`` values of that band
are equal; bands/rows come from datasketch's optimum for the threshold (128 permutations:
0.9 -> 5 bands x 25 rows, 0.95 -> 3 x 42).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import Literal

import numpy as np

from genai_ingest.config import DedupSettings
from genai_ingest.models import sha256_hex

_SEED = 1
_SCHEME = "affine32"
_DTYPE = np.dtype("<u4")
_WORD_RE = re.compile(r"\w+")


def _words(text: str) -> list[str]:
    """Lower-cased words of NFKC text: case, whitespace and punctuation do not matter."""
    return _WORD_RE.findall(unicodedata.normalize("NFKC", text).casefold())


def normalized_text_hash(text: str) -> str:
    """Exact-duplicate key: sha256 of the text's words (case/space/punctuation-insensitive)."""
    return sha256_hex(" ".join(_words(text)))


@cache
def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) minimising false positives plus false negatives at ``threshold``."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    from datasketch.lsh import _optimal_param  # scipy: imported when first needed

    return _optimal_param(threshold, num_perm, 0.5, 0.5)


class MinHasher:
    """MinHash signatures and LSH band keys of texts."""

    def __init__(self, settings: DedupSettings) -> None:
        self._num_perm = settings.num_perm
        self._shingle_words = settings.shingle_words
        from datasketch import MinHash  # scipy: imported when first needed

        self._minhash = MinHash
        self._permutations = MinHash(
            num_perm=settings.num_perm, seed=_SEED, scheme=_SCHEME
        ).permutations

    def _shingles(self, text: str) -> list[bytes]:
        """Word k-grams; a text shorter than k words is one shingle (empty text: none)."""
        words = _words(text)
        k = min(self._shingle_words, len(words))
        if k == 0:
            return []
        return [" ".join(words[i : i + k]).encode() for i in range(len(words) - k + 1)]

    def signature(self, text: str) -> np.ndarray:
        """MinHash values (uint32, ``num_perm`` of them) of the text's shingles."""
        minhash = self._minhash(
            num_perm=self._num_perm, seed=_SEED, permutations=self._permutations, scheme=_SCHEME
        )
        minhash.update_batch(self._shingles(text))
        return minhash.hashvalues.astype(_DTYPE)

    def band_keys(self, signature: np.ndarray, threshold: float) -> list[str]:
        """LSH band keys ``"b{band}:{digest}"``: a shared key makes two texts candidates."""
        bands, rows = lsh_params(threshold, len(signature))
        values = np.asarray(signature, dtype=_DTYPE)
        keys = []
        for band in range(bands):
            chunk = values[band * rows : (band + 1) * rows].tobytes()
            digest = hashlib.blake2b(chunk, digest_size=8, person=b"r%d" % rows).hexdigest()
            keys.append(f"b{band}:{digest}")
        return keys


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard similarity estimated from two signatures: the share of equal MinHash values."""
    if len(a) != len(b) or len(a) == 0:
        raise ValueError(f"signatures of different or zero length: {len(a)} vs {len(b)}")
    return float(np.count_nonzero(np.asarray(a) == np.asarray(b))) / len(a)


def signature_to_bytes(signature: np.ndarray) -> bytes:
    """Little-endian uint32 bytes of a signature (4 bytes per permutation)."""
    return np.asarray(signature, dtype=_DTYPE).tobytes()


def signature_from_bytes(data: bytes) -> np.ndarray:
    """Inverse of ``signature_to_bytes``."""
    return np.frombuffer(data, dtype=_DTYPE).copy()


def canonical_rank(source: str, doc_id: str) -> tuple[str, str]:
    """Which copy of a duplicate is kept: the smallest source URI (then doc id) among the
    copies, whatever the order they arrive in. Sources are discovered and processed in URI
    order, so a clean run keeps exactly these copies and never has to re-point; the URI is
    also what a reader sees in a citation, so the rule is easy to predict."""
    return (source, doc_id)


@dataclass(frozen=True)
class Candidate:
    """An already indexed (or earlier in the batch) document or chunk that a new one may
    duplicate; ``doc_id`` and ``source`` are its document's."""

    id: str
    text_hash: str
    signature: np.ndarray
    doc_id: str = ""
    source: str = ""

    @property
    def rank(self) -> tuple[str, str]:
        return canonical_rank(self.source, self.doc_id)


@dataclass
class DuplicateDecision:
    duplicate_of: str
    kind: Literal["exact", "near"]
    similarity: float


def find_duplicate(
    text_hash: str, signature: np.ndarray, candidates: Iterable[Candidate], threshold: float
) -> DuplicateDecision | None:
    """The candidate this text duplicates, if any: an exact hash match wins, else the most
    similar candidate at or above ``threshold``. Ties go to the smallest id, so the decision
    does not depend on candidate order."""
    exact: list[str] = []
    best: tuple[float, str] | None = None
    for candidate in candidates:
        if candidate.text_hash == text_hash:
            exact.append(candidate.id)
            continue
        similarity = jaccard(signature, candidate.signature)
        if similarity >= threshold and (
            best is None or (-similarity, candidate.id) < (-best[0], best[1])
        ):
            best = (similarity, candidate.id)
    if exact:
        return DuplicateDecision(duplicate_of=min(exact), kind="exact", similarity=1.0)
    if best is not None:
        return DuplicateDecision(duplicate_of=best[1], kind="near", similarity=best[0])
    return None


def matching(
    text_hash: str, signature: np.ndarray, candidates: Iterable[Candidate], threshold: float
) -> list[Candidate]:
    """The candidates a text duplicates: the same normalised hash, or similarity at or above
    ``threshold`` (both symmetric: if A duplicates B, B duplicates A)."""
    return [
        c
        for c in candidates
        if c.text_hash == text_hash or jaccard(signature, c.signature) >= threshold
    ]
