"""Fan-out of embedding to the GPU deployment (``Settings.embed_deployment``).

Only cache misses leave the process. They are cut into payloads of ``TEXTS_PER_RUN`` texts,
each written to ``Settings.batch_store_url`` under its content key and embedded by one run of
the ``embed`` deployment (at most ``embed_parallelism`` at once). A payload whose vectors are
already there (an earlier run) is not sent again.

Idempotency key per payload: content key + this flow run + attempt, so a retried task does not
start a second pod for the same batch, while a later ingest run may try a failed batch again.
A run that is Failed/Crashed/Cancelled, or not Completed within ``embed_timeout_s`` (a pod
stuck Pending, a lost node), is cancelled and retried once with a new run. After a second
failure, ``embed_fallback`` decides: ``local`` embeds the batch in this process with the same
model (the vector space the payload names; vectors a late pod wrote meanwhile are used
instead), ``dlq`` raises ``EndpointUnavailable`` (transient), so the documents go to the DLQ for
a replay. Either way the index is written once, by this run: a pod only writes the batch's
``vectors.npz``, under its content key, and the worker (``flows/k8s_worker.py``) deletes a
cancelled run's Job, so its pod does not start late (Prefect itself would let it run)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import numpy as np
from prefect import Task, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.objects import StateType
from prefect.deployments import run_deployment
from prefect.runtime import flow_run
from prefect.states import Cancelling

from flows.embed import BATCH_FILE, decode_vectors, encode_payload, vectors_key
from genai_ingest.config import Settings
from genai_ingest.embed.local import Embedder, check_vectors
from genai_ingest.failures.errors import EmbeddingRejected, EndpointUnavailable, Stage
from genai_ingest.models import sha256_hex
from genai_ingest.run.batch import Embedded, from_cache, texts_to_embed
from genai_ingest.run.prepare import Prepared
from genai_ingest.run.runtime import runtime_for
from genai_ingest.run.summary import RunSummary
from genai_ingest.stores.object_store import ObjectStore, open_store_url
from tasks.ingest import embed_documents

TEXTS_PER_RUN = 1024
MAX_ATTEMPTS = 2
POLL_S = 1.0
_FAILED = {StateType.FAILED, StateType.CRASHED, StateType.CANCELLED, StateType.CANCELLING}


def embed_task(settings: Settings) -> Task[..., Embedded]:
    """The embedding task for ``settings``: GPU fan-out, or in-process without a deployment."""
    return embed_documents_remote if settings.embed_deployment else embed_documents


@task(name="embed-documents-gpu", cache_policy=NO_CACHE, persist_result=False)
def embed_documents_remote(
    docs: Sequence[Prepared], settings: Settings, summary: RunSummary
) -> Embedded:
    """Like ``embed-documents``, with the cache misses embedded by the GPU deployment."""
    rt = runtime_for(settings)
    model_id = rt.embedder.model_id
    wanted = texts_to_embed(docs)
    cached = rt.cache.get_many(model_id, list(wanted))
    missing = {h: t for h, t in wanted.items() if h not in cached}
    if missing:
        with summary.timed(Stage.EMBED):
            fresh = embed_remote(missing, settings, rt.embedder)
        rt.cache.put_many(model_id, fresh)
        summary.add("embeddings_computed", len(fresh))
    return from_cache(docs, rt, {})


# --- payloads --------------------------------------------------------------------------------


@dataclass
class Payload:
    """One batch of texts, stored under its content key."""

    key: str
    store_key: str
    hashes: list[str]
    attempt: int = 0
    flow_run_id: UUID | None = None
    deadline: float = 0.0


def write_payloads(
    missing: dict[str, str], store: ObjectStore, embedder: Embedder
) -> list[Payload]:
    """Cut ``missing`` (text hash → text) into payloads and write each once."""
    items = sorted(missing.items())
    payloads = []
    for start in range(0, len(items), TEXTS_PER_RUN):
        part = items[start : start + TEXTS_PER_RUN]
        hashes = [h for h, _ in part]
        key = sha256_hex(embedder.model_id + "\n" + "\n".join(hashes))[:32]
        store_key = f"embed/{key}/{BATCH_FILE}"
        if store.read(vectors_key(store_key)) is None:
            texts = [t for _, t in part]
            store.write(
                store_key, encode_payload(embedder.model_id, embedder.dimension, texts, hashes)
            )
        payloads.append(Payload(key, store_key, hashes))
    return payloads


def read_result(payload: Payload, store: ObjectStore, embedder: Embedder) -> dict[str, np.ndarray]:
    """The payload's vectors, checked (hashes, model, shape, finite, non-zero)."""
    data = store.read(vectors_key(payload.store_key))
    if data is None:
        raise EmbeddingRejected(f"no vectors for batch {payload.key}", stage=Stage.EMBED)
    vectors, hashes, model = decode_vectors(data)
    if hashes != payload.hashes or model != embedder.model_id:
        raise EmbeddingRejected(f"vectors of batch {payload.key} do not match", stage=Stage.EMBED)
    checked = check_vectors(vectors, len(hashes), embedder.dimension)
    return dict(zip(hashes, checked, strict=True))


# --- runs ------------------------------------------------------------------------------------


def embed_remote(
    missing: dict[str, str], settings: Settings, embedder: Embedder
) -> dict[str, np.ndarray]:
    """Vectors for ``missing`` (text hash → text) from the embed deployment."""
    if not settings.batch_store_url:
        raise ValueError("embed_deployment needs batch_store_url (storage the pods can read)")
    store = open_store_url(settings.batch_store_url)
    queue = deque(write_payloads(missing, store, embedder))
    results: dict[str, np.ndarray] = {}
    active: list[Payload] = []
    with get_client(sync_client=True) as client:
        while queue or active:
            while queue and len(active) < settings.embed_parallelism:
                payload = queue.popleft()
                if store.read(vectors_key(payload.store_key)) is not None:
                    results.update(read_result(payload, store, embedder))
                else:
                    active.append(submit(payload, store, settings))
            completed, given_up = _finished(active, client, settings, store)
            for payload in completed:
                results.update(read_result(payload, store, embedder))
            for payload in given_up:
                results.update(embed_here(payload, missing, store, embedder))
            if active:
                time.sleep(POLL_S)
    return results


def submit(payload: Payload, store: ObjectStore, settings: Settings) -> Payload:
    """Start (or find, by idempotency key) the embed run for one payload."""
    assert settings.embed_deployment is not None
    payload.attempt += 1
    run = run_deployment(
        name=settings.embed_deployment,
        parameters={"batch": store.uri(payload.store_key)},
        timeout=0,
        idempotency_key=f"{payload.key}:{flow_run.get_id() or 'local'}:{payload.attempt}",
        flow_run_name=f"embed-{payload.key[:12]}-a{payload.attempt}",
    )
    payload.flow_run_id = run.id
    payload.deadline = time.monotonic() + settings.embed_timeout_s
    return payload


def embed_here(
    payload: Payload, missing: dict[str, str], store: ObjectStore, embedder: Embedder
) -> dict[str, np.ndarray]:
    """The fallback: the payload's vectors from a pod that finished late, else embedded by
    ``embedder``, the model the payload was written for."""
    if store.read(vectors_key(payload.store_key)) is not None:
        return read_result(payload, store, embedder)
    vectors = embedder.embed([missing[h] for h in payload.hashes])
    checked = check_vectors(vectors, len(payload.hashes), embedder.dimension)
    return dict(zip(payload.hashes, checked, strict=True))


def _finished(
    active: list[Payload], client: SyncPrefectClient, settings: Settings, store: ObjectStore
) -> tuple[list[Payload], list[Payload]]:
    """Payloads whose run completed, and payloads given up on GPU (both removed from
    ``active``); a failed or overdue run is cancelled and resubmitted once; after the second
    one a batch is given up (``embed_fallback = "local"``) or raises."""
    done, given_up = [], []
    for payload in list(active):
        assert payload.flow_run_id is not None
        state = client.read_flow_run(payload.flow_run_id).state
        state_type = state.type if state else StateType.SCHEDULED
        if state_type is StateType.COMPLETED:
            active.remove(payload)
            done.append(payload)
        elif state_type in _FAILED or time.monotonic() > payload.deadline:
            reason = _describe(state_type, state, settings)
            _cancel(client, payload.flow_run_id, state_type)
            if payload.attempt < MAX_ATTEMPTS:
                get_run_logger().warning("embed batch %s %s; retrying", payload.key, reason)
                submit(payload, store, settings)
                continue
            if settings.embed_fallback != "local":
                raise EndpointUnavailable(
                    f"embed batch {payload.key}: {reason} after {payload.attempt} runs",
                    stage=Stage.EMBED,
                )
            get_run_logger().warning(
                "embed batch %s %s twice; embedding it here", payload.key, reason
            )
            active.remove(payload)
            given_up.append(payload)
    return done, given_up


def _describe(state_type: StateType, state: Any, settings: Settings) -> str:
    if state_type in _FAILED:
        return f"run {state_type.value.lower()}: {state.message or ''}".strip()
    return f"not completed within {settings.embed_timeout_s:.0f} s (state {state_type.value})"


def _cancel(client: SyncPrefectClient, flow_run_id: UUID, state_type: StateType) -> None:
    """Cancel an overdue run so its worker tears the pod down."""
    if state_type not in _FAILED:
        client.set_flow_run_state(flow_run_id, Cancelling(), force=True)
