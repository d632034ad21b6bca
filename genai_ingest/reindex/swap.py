"""Which generation is live: ``swap`` finishes the build, evaluates both generations on a QA
file (``search.evaluate``) and makes the new one live only if its passage@k reaches the
threshold; ``rollback`` makes the previous generation live again; ``drop_previous`` deletes
the generations older than the live one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from genai_ingest.config import SearchMode, Settings
from genai_ingest.embed.encoders import EncoderSpec
from genai_ingest.reindex.build import build_next, with_model
from genai_ingest.reindex.report import GateRefused, ReindexReport
from genai_ingest.run.runtime import Runtime
from genai_ingest.search.evaluate import EvalReport, Retrieved, evaluate, load_qa
from genai_ingest.stores import open_store


def encoder_settings(settings: Settings, encoder_id: str) -> Settings:
    """``settings`` configured for the encoder an index records (to query that index)."""
    spec = EncoderSpec.parse(encoder_id)
    embed = {"model": spec.model, "precision": "int8" if spec.int8 else "fp32"}
    embed |= {"window_pooling": spec.windows} if spec.windows != "separate" else {}
    embed |= {"backend": "onnx"} if spec.int8 else {}
    configured = settings.model_copy(
        update={"embed": settings.embed.model_copy(update=embed)}, deep=True
    )
    if EncoderSpec.of(configured).id != encoder_id:
        raise ValueError(f"cannot configure encoder {encoder_id} from these settings")
    return configured


def evaluate_generation(settings: Settings, store: Any, qa_file: Path, k: int) -> EvalReport:
    """``eval`` of ``qa_file`` on the generation ``store`` reads, its queries embedded by the
    encoder ``settings`` configure (the one that generation records)."""
    mode = settings.search.mode
    embed: Callable[[list[str]], Any] = lambda qs: [None] * len(qs)  # noqa: E731
    if mode is not SearchMode.LEXICAL:
        embed = Runtime(settings).query_embedder.embed

    def search(questions: list[str], top: int) -> list[list[Retrieved]]:
        results = [
            store.search(v, k=top, text=q, mode=mode, fusion=settings.search.fusion)
            for q, v in zip(questions, embed(questions), strict=True)
        ]
        return [[Retrieved(h.source, h.text) for h in hits] for hits in results]

    return evaluate(load_qa(qa_file), search, k)


def swap(
    settings: Settings,
    qa_file: Path,
    min_passage_at_k: float,
    model: str | None = None,
    k: int = 5,
) -> ReindexReport:
    """Finish the build, evaluate both generations on ``qa_file`` and make the new one live
    if its passage@k is at least ``min_passage_at_k``; else raise ``GateRefused``."""
    report = build_next(settings, model)
    target = with_model(settings, model)
    live, building = open_store(target), open_store(target)
    identity = live.index_identity()
    building.begin_reindex(report.model_id or "", report.dimension or 0)
    before = evaluate_generation(encoder_settings(target, identity[0]), live, qa_file, k)
    after = evaluate_generation(target, building, qa_file, k)
    report.gate = {
        "k": k,
        "min_passage_at_k": min_passage_at_k,
        "live": {"generation": report.live, **_figures(before)},
        "new": {"generation": report.generation, **_figures(after)},
    }
    try:
        if after.passage_at_k < min_passage_at_k:
            report.refused = (
                f"passage@{k} of {report.generation} is {after.passage_at_k:.3f}, below "
                f"--min-passage-at-k {min_passage_at_k} (live {report.live}: "
                f"{before.passage_at_k:.3f}): the alias stays on {report.live}"
            )
            raise GateRefused(report)
        building.swap_alias()
        report.swapped, report.previous, report.live = True, report.live, building.live_index()
    finally:
        live.close()
        building.close()
    return report


def _figures(report: EvalReport) -> dict[str, Any]:
    return {
        "questions": report.questions,
        "doc_at_k": round(report.doc_at_k, 4),
        "passage_at_k": round(report.passage_at_k, 4),
        "mrr": round(report.mrr, 4),
    }


def rollback(settings: Settings) -> ReindexReport:
    """Make the previous generation live again (the one rolled back from is kept)."""
    store = open_store(settings)
    try:
        rolled_from = store.live_index()
        generation = store.rollback()
        identity = store.index_identity()
    finally:
        store.close()
    return ReindexReport(
        generation,
        generation,
        identity[0] if identity else None,
        identity[1] if identity else None,
        previous=rolled_from,
        rolled_back=True,
    )


def drop_previous(settings: Settings) -> ReindexReport:
    """Delete the generations older than the live one."""
    store = open_store(settings)
    try:
        dropped = store.drop_previous()
        live = store.live_index()
        identity = store.index_identity()
    finally:
        store.close()
    model_id, dimension = identity if identity else (None, None)
    return ReindexReport(live, live, model_id, dimension, dropped=dropped)
