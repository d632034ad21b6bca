"""Hybrid search's fusion of a dense and a lexical (BM25) ranking, one function for every store
so that the embedded store and Elasticsearch rank the same hits the same way.

Weighted reciprocal rank fusion (Cormack et al., 2009; what Elasticsearch's ``rrf`` retriever
computes, with weights): a chunk scores ``sum(weight / (rrf_k + rank))`` over the rankings it
is in, ``rank`` 1-based. Only ranks count, so BM25 scores and similarities never need to be
put on one scale. Ties go to the chunk ranked higher by the earlier ranking (dense first), then
by chunk id: the order never depends on how a store happened to return equal scores."""

from __future__ import annotations

import math
from collections.abc import Sequence

from genai_ingest.config import FusionSettings


def fuse(
    rankings: Sequence[Sequence[str]], weights: Sequence[float], rrf_k: int
) -> list[tuple[str, float]]:
    """``(id, fused score)`` best first, from rankings of ids (best first, each id once)."""
    scores: dict[str, float] = {}
    ranks: dict[str, list[float]] = {}
    for number, (ranking, weight) in enumerate(zip(rankings, weights, strict=True)):
        for rank, item in enumerate(ranking, 1):
            scores[item] = scores.get(item, 0.0) + weight / (rrf_k + rank)
            ranks.setdefault(item, [math.inf] * len(rankings))[number] = rank
    return sorted(scores.items(), key=lambda pair: (-pair[1], *ranks[pair[0]], pair[0]))


def fuse_dense_lexical(
    dense: Sequence[str], lexical: Sequence[str], fusion: FusionSettings, k: int
) -> list[tuple[str, float]]:
    """The top ``k`` of the dense and the BM25 ranking fused as ``fusion`` says."""
    weights = (fusion.dense_weight, fusion.lexical_weight)
    return fuse((dense, lexical), weights, fusion.rrf_k)[:k]


def candidates(fusion: FusionSettings, k: int) -> int:
    """How many hits each ranking contributes: ``fusion.candidates``, at least ``k``."""
    return max(fusion.candidates, k)
