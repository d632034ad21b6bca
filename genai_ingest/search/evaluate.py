"""Retrieval evaluation: how often top-k search finds the document and the passage that answer
a question.

A QA file holds (question, expected source, expected answer snippet) rows, as JSONL
(``{"question", "source", "answer"}``) or TSV with that header. A hit finds the *document* if
its source ends with the expected source (a path suffix such as ``pdf/report.pdf``), and the
*passage* if, in addition, its text contains the answer snippet once case and whitespace are
normalised. ``MRR`` is the mean reciprocal rank of the first passage hit (0 beyond k).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

QA_FIELDS = ("question", "source", "answer")


@dataclass(frozen=True)
class QAItem:
    question: str
    source: str
    answer: str


@dataclass(frozen=True)
class Retrieved:
    """The part of a search hit the evaluation looks at."""

    source: str
    text: str


@dataclass(frozen=True)
class Outcome:
    """Ranks (1-based) of the first hit from the right document and with the passage."""

    item: QAItem
    doc_rank: int | None
    passage_rank: int | None
    top_sources: tuple[str, ...]


@dataclass(frozen=True)
class EvalReport:
    k: int
    outcomes: tuple[Outcome, ...]

    @property
    def questions(self) -> int:
        return len(self.outcomes)

    @property
    def doc_at_k(self) -> float:
        return _share(o.doc_rank is not None for o in self.outcomes)

    @property
    def passage_at_k(self) -> float:
        return _share(o.passage_rank is not None for o in self.outcomes)

    @property
    def mrr(self) -> float:
        ranks = [1 / o.passage_rank if o.passage_rank else 0.0 for o in self.outcomes]
        return sum(ranks) / len(ranks) if ranks else 0.0

    @property
    def misses(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.passage_rank is None]

    def as_dict(self) -> dict:
        return {
            "k": self.k,
            "questions": self.questions,
            "doc_at_k": round(self.doc_at_k, 4),
            "passage_at_k": round(self.passage_at_k, 4),
            "mrr": round(self.mrr, 4),
            "misses": [
                {
                    "question": o.item.question,
                    "source": o.item.source,
                    "answer": o.item.answer,
                    "doc_rank": o.doc_rank,
                    "top_sources": list(o.top_sources),
                }
                for o in self.misses
            ],
        }


def load_qa(path: Path) -> list[QAItem]:
    """QA rows from a ``.jsonl`` file or a TSV file with a ``question source answer`` header."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    else:
        rows = list(csv.DictReader(text.splitlines(), delimiter="\t", quoting=csv.QUOTE_NONE))
    items = []
    for number, row in enumerate(rows, 1):
        missing = [f for f in QA_FIELDS if not str(row.get(f) or "").strip()]
        if missing:
            raise ValueError(f"{path}: row {number} lacks {', '.join(missing)}")
        items.append(QAItem(*(str(row[f]).strip() for f in QA_FIELDS)))
    if not items:
        raise ValueError(f"{path}: no questions")
    return items


def normalise(text: str) -> str:
    """Case-folded text with whitespace runs collapsed: what snippet matching compares."""
    return " ".join(text.casefold().split())


def source_matches(hit_source: str, expected: str) -> bool:
    """True if the hit's source (a URI or path) is, or ends with, the expected path."""
    source = unquote(hit_source).rstrip("/")
    expected = expected.strip("/")
    return source == expected or source.endswith("/" + expected)


def judge(item: QAItem, hits: Sequence[Retrieved]) -> Outcome:
    """Where in ``hits`` the expected document and passage first appear."""
    answer = normalise(item.answer)
    doc_rank = passage_rank = None
    for rank, hit in enumerate(hits, 1):
        if source_matches(hit.source, item.source):
            doc_rank = doc_rank or rank
            if passage_rank is None and answer in normalise(hit.text):
                passage_rank = rank
    return Outcome(item, doc_rank, passage_rank, tuple(h.source for h in hits))


def evaluate(
    items: Sequence[QAItem], search: Callable[[list[str], int], list[list[Retrieved]]], k: int
) -> EvalReport:
    """Run every question through ``search`` (all questions at once: one batched embedding)
    and judge its top ``k`` hits."""
    results = search([item.question for item in items], k)
    return EvalReport(
        k, tuple(judge(item, hits[:k]) for item, hits in zip(items, results, strict=True))
    )


def _share(flags: Iterable[bool]) -> float:
    values = list(flags)
    return sum(values) / len(values) if values else 0.0
