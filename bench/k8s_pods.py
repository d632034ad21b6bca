"""The pods' side of bench/k8s_scale_bench.py: kwok runs no container, so this plays each embed
pod. It watches the namespace's pods (when each was added, bound, where, how many alive at once)
and, ``hold_s`` after a pod is Running, does what its container would: writes the batch's
vectors (random), moves the flow run Running -> Completed as the engine would, and ends the
container; nothing for a pod whose node was killed meanwhile."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

NAMESPACE = "genai-ingest"
DIMENSION = 8
MODEL_ID = "bench-model"


@dataclass
class Tracker:
    """What the API server's pod watch showed, by pod name."""

    added: dict[str, float] = field(default_factory=dict)
    bound: dict[str, float] = field(default_factory=dict)
    alive: set[str] = field(default_factory=set)
    most_alive: int = 0
    run_of: dict[str, str] = field(default_factory=dict)
    node_of: dict[str, str] = field(default_factory=dict)
    started: set[str] = field(default_factory=set)
    completed: int = 0
    killed_nodes: set[str] = field(default_factory=set)
    lost: set[str] = field(default_factory=set)


async def play_pods(kubeconfig: str, tracker: Tracker, hold_s: float, stop: threading.Event):
    """Watch the namespace's pods; complete each ``hold_s`` after it runs."""
    from kubernetes_asyncio import config, watch
    from kubernetes_asyncio.client import ApiException, CoreV1Api
    from prefect.client.orchestration import get_client

    api = await config.new_client_from_config(config_file=kubeconfig)
    core = CoreV1Api(api)
    finishing: list[asyncio.Task[None]] = []
    version = None  # where the last watch ended: the next one gets only what changed since
    async with get_client() as prefect:
        while not stop.is_set():
            pods = watch.Watch()
            since = {"resource_version": version} if version else {}
            try:
                async for event in pods.stream(
                    core.list_namespaced_pod, NAMESPACE, timeout_seconds=5, **since
                ):
                    if track(tracker, event["type"], event["object"]):
                        name = event["object"].metadata.name
                        finishing.append(
                            asyncio.create_task(finish(core, prefect, tracker, name, hold_s))
                        )
            except ApiException as exc:
                if exc.status != 410:
                    raise
                pods.resource_version = None  # too old: list again
            version = pods.resource_version
        await asyncio.gather(*finishing, return_exceptions=True)
    await api.close()


def track(tracker: Tracker, event_type: str, pod: Any) -> bool:
    """Record one watch event; True when the pod has just started running."""
    name, now = pod.metadata.name, time.monotonic()
    if event_type == "DELETED" or pod.status.phase in ("Succeeded", "Failed"):
        tracker.alive.discard(name)
        return False
    tracker.added.setdefault(name, now)
    tracker.alive.add(name)
    tracker.most_alive = max(tracker.most_alive, len(tracker.alive))
    tracker.run_of[name] = pod.metadata.labels["prefect.io/flow-run-id"]
    if pod.spec.node_name and name not in tracker.bound:
        tracker.bound[name] = now
        tracker.node_of[name] = pod.spec.node_name
    if pod.status.phase == "Running" and name not in tracker.started:
        tracker.started.add(name)
        return True
    return False


async def finish(core: Any, prefect: Any, tracker: Tracker, pod: str, hold_s: float) -> None:
    """What the pod's container would do: embed (random vectors), report, exit 0; nothing
    when its node was killed meanwhile."""
    from prefect.states import Completed, Running

    from flows.embed import encode_vectors, vectors_key
    from genai_ingest.stores.object_store import open_object

    await asyncio.sleep(hold_s)
    if tracker.node_of.get(pod) in tracker.killed_nodes:
        tracker.lost.add(pod)
        return
    run = await prefect.read_flow_run(tracker.run_of[pod])
    if run.state is None or not run.state.is_pending():
        return  # cancelled or crashed meanwhile
    store, key = open_object(run.parameters["batch"])
    hashes = json.loads(store.read(key))["text_hashes"]
    vectors = np.asarray([[random.gauss(0, 1) for _ in range(DIMENSION)] for _ in hashes])
    store.write(vectors_key(key), encode_vectors(vectors.astype(np.float32), hashes, MODEL_ID))
    await prefect.set_flow_run_state(run.id, Running())
    await prefect.set_flow_run_state(run.id, Completed())
    tracker.completed += 1
    patch = {"metadata": {"annotations": {"kwok.genai-ingest/exit-code": "0"}}}
    await core.patch_namespaced_pod(pod, NAMESPACE, patch)
