"""Kubernetes scale benchmark: the GPU pool's embed Jobs at scale on the local control plane
(deploy/kubernetes/: real etcd, API server, scheduler, controller-manager; kwok nodes).

Sharded runs (``--shards`` Prefect flows in threads, each the real fan-out ``embed_remote``
over its share of ``--batches`` payloads) submit ``embed-gpu`` runs; the worker
(``flows/k8s_worker.py``) creates their Jobs on ``--gpu-nodes`` simulated GPU nodes under the
pool's concurrency limit (``--pool-limit``). kwok runs no container, so this bench plays the
pod (``k8s_pods.py``): ``--hold-s`` after a pod is Running it writes the batch's vectors
(random, tiny payloads: ``TEXTS_PER_RUN`` is set to ``--texts``), moves the flow run Running ->
Completed as the engine would, and ends the container. When half the batches are done it
deletes 10% of the GPU nodes (``--kill``); pods there never complete, and the fan-out must redo
their batches.

Prints, side by side: run creation and Job creation throughput, Pending -> bound times (p50,
p95, max, from the API server's watch), the most embed pods alive at once against the limit,
and per batch: Completed runs (1 each: nothing lost, none twice), runs redone after the kill.

Usage: ``nice -n 10 python bench/k8s_scale_bench.py [--batches 2000] [--gpu-nodes 200]
[--postgres]`` (the control plane is started, nodes registered, and stopped again if it was not
running; ``--postgres``: the Prefect server on a throwaway PostgreSQL, ``prefect_postgres.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from k8s_pods import DIMENSION, MODEL_ID, NAMESPACE, Tracker, play_pods
from prefect_postgres import start_postgres, stop_postgres

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
K8S_SH = REPO / "deploy" / "kubernetes" / "k8s.sh"
POOL = "genai-ingest-gpu"
DEPLOYMENT = "embed/embed-gpu"
PREFECT_PORT = 4297
POSTGRES_PORT = 5439


class BenchModel:
    """The model id and dimension the fan-out checks vectors against (nothing is embedded)."""

    model_id = MODEL_ID
    dimension = DIMENSION


def sh(*args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(args, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    if done.returncode:
        raise SystemExit(f"{' '.join(args)}: {done.stderr[-2000:]}")
    return done.stdout


def kubectl(kubeconfig: str, *args: str) -> str:
    return sh("kubectl", f"--kubeconfig={kubeconfig}", *args)


# --- the sharded runs (the real fan-out) ---------------------------------------------------


def run_shards(shards: int, batches: int, texts: int, parallelism: int, store: Path) -> list:
    """``shards`` flows in threads, each ``embed_remote`` over its payloads; per shard the
    number of vectors back, or the exception it raised."""
    from prefect import flow

    from flows import fanout
    from genai_ingest.config import Settings

    fanout.TEXTS_PER_RUN = texts
    settings = Settings(
        embed_deployment=DEPLOYMENT,
        batch_store_url=str(store),
        embed_parallelism=parallelism,
        embed_timeout_s=900,
        embed_fallback="dlq",  # a batch given up is lost here, never embedded aside
    )

    @flow(name="bench-shard")
    def shard(index: int, count: int) -> int:
        missing = {f"{index:03d}-{i:07d}": f"s{index} t{i}" for i in range(count * texts)}
        return len(fanout.embed_remote(missing, settings, BenchModel()))  # type: ignore[arg-type]

    results: list[Any] = [None] * shards

    def one(i: int) -> None:
        try:
            results[i] = shard(i, batches // shards + (i < batches % shards))
        except Exception as exc:  # reported, not raised: the others go on
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(shards)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


# --- setup -----------------------------------------------------------------------------


def start_prefect(home: Path, database_url: str | None) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # SQLite on a loaded machine: wait for the lock rather than answer 503
        "PREFECT_SERVER_DATABASE_TIMEOUT": "60",
        "PREFECT_SERVER_DATABASE_CONNECTION_TIMEOUT": "30",
    }
    if database_url:
        env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = database_url
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
         "--port", str(PREFECT_PORT)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    for _ in range(240):
        try:
            urllib.request.urlopen(f"{os.environ['PREFECT_API_URL']}/health", timeout=2)
            return server
        except OSError:
            time.sleep(0.5)
    raise SystemExit("the Prefect server did not start")


def set_up_pool(env: dict[str, str], limit: int) -> None:
    prefect = [sys.executable, "-m", "prefect", "--no-prompt"]
    sh(*prefect, "work-pool", "create", POOL, "--type", "kubernetes",
       "--base-job-template", "deploy/k8s-gpu-pool.json", "--overwrite", env=env)  # fmt: skip
    sh(*prefect, "work-pool", "set-concurrency-limit", POOL, str(limit), env=env)
    sh(*prefect, "deploy", "--name", "embed-gpu", env=env)


def embed_runs() -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    runs: list[Any] = []
    with get_client(sync_client=True) as client:
        while page := client.read_flow_runs(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["embed-gpu"])),
            limit=200,
            offset=len(runs),
        ):
            runs += page
    return runs


def pool_busy() -> int:
    """Embed runs holding a pool slot (Pending or Running)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    busy = FlowRunFilter(
        state=FlowRunFilterState(
            type=FlowRunFilterStateType(any_=[StateType.PENDING, StateType.RUNNING])
        )
    )
    with get_client(sync_client=True) as client:
        return client.count_flow_runs(
            flow_run_filter=busy,
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["embed-gpu"])),
        )


def prepare_cluster(gpu_nodes: int) -> tuple[str, bool]:
    """The control plane (started unless running), ``gpu_nodes`` GPU nodes, the namespace."""
    was_running = subprocess.run([str(K8S_SH), "status"], capture_output=True).returncode == 0
    kubeconfig = sh(str(K8S_SH), "start").strip()
    sh(str(K8S_SH), "nodes", env={**os.environ, "K8S_GPU_NODES": str(gpu_nodes)})
    for create in (
        ["create", "namespace", NAMESPACE],
        ["-n", NAMESPACE, "create", "serviceaccount", "genai-ingest"],
    ):
        manifest = kubectl(kubeconfig, *create, "--dry-run=client", "-o", "yaml")
        subprocess.run(
            ["kubectl", f"--kubeconfig={kubeconfig}", "apply", "-f", "-"],
            input=manifest, text=True, capture_output=True, check=True,
        )  # fmt: skip
    kubectl(kubeconfig, "-n", NAMESPACE, "delete", "jobs,pods", "--all", "--wait=true")
    return kubeconfig, was_running


def restore_cluster(kubeconfig: str, was_running: bool) -> None:
    """Jobs gone, the default kwok nodes back (the tests count them), stopped if it was."""
    kubectl(kubeconfig, "-n", NAMESPACE, "delete", "jobs,pods", "--all", "--wait=false")
    kubectl(kubeconfig, "delete", "nodes", "-l", "genai-ingest/pool=gpu", "--wait=false")
    sh(str(K8S_SH), "nodes")
    if not was_running:
        sh(str(K8S_SH), "stop")


def kill_nodes(kubeconfig: str, tracker: Tracker, count: int) -> list[str]:
    """``count`` GPU nodes, those running embed pods first."""
    busy = Counter(tracker.node_of[p] for p in tracker.alive if p in tracker.node_of)
    names = kubectl(kubeconfig, "get", "nodes", "-l", "genai-ingest/pool=gpu", "-o", "name")
    every = [n.removeprefix("node/") for n in names.split()]
    victims = sorted(every, key=lambda n: -busy[n])[:count]
    tracker.killed_nodes.update(victims)
    kubectl(kubeconfig, "delete", "nodes", *victims, "--wait=false")
    return victims


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


def report(args: argparse.Namespace, tracker: Tracker, figures: dict[str, Any]) -> None:
    runs, results = figures["runs"], figures["results"]
    created = sorted(run.created.timestamp() for run in runs)
    pods_added = sorted(tracker.added.values())
    waits = [tracker.bound[p] - tracker.added[p] for p in tracker.bound]
    by_batch: dict[str, Counter[str]] = {}
    for run in runs:
        by_batch.setdefault(run.parameters["batch"], Counter())[run.state.type.value] += 1
    completed = Counter(c["COMPLETED"] for c in by_batch.values())
    lost = [r for r in results if not isinstance(r, int)]
    pods_per_s = len(pods_added) / max(pods_added[-1] - pods_added[0], 1e-9)
    wait_ms = [percentile(waits, q) * 1000 for q in (50, 95)] + [max(waits) * 1000]
    twice = sum(n for times, n in completed.items() if times > 1)
    rows = [
        ("GPU nodes / killed", f"{args.gpu_nodes} / {len(figures['killed'])}"),
        ("batches (payloads) / shards", f"{args.batches} / {args.shards}"),
        ("Prefect database", "PostgreSQL" if args.postgres else "SQLite"),
        ("embed runs created", f"{len(runs)} ({len(runs) - len(by_batch)} redone)"),
        ("wall time", f"{figures['wall_s']:.0f} s"),
        ("runs created / s", f"{len(runs) / max(created[-1] - created[0], 1e-9):.2f}"),
        ("Jobs (pods) created / s", f"{pods_per_s:.2f}"),
        ("batches completed / s", f"{(len(by_batch) - completed[0]) / figures['wall_s']:.2f}"),
        ("Pending -> bound p50 / p95 / max", " / ".join(f"{ms:.0f} ms" for ms in wait_ms)),
        ("pool limit / most runs Pending+Running", f"{args.pool_limit} / {figures['most_busy']}"),
        ("most embed pods alive at once", str(tracker.most_alive)),
        ("pods lost with their node / pods in all", f"{len(tracker.lost)} / {len(pods_added)}"),
        ("batches with 1 Completed run", f"{completed[1]} of {len(by_batch)}"),
        ("batches with 0 / 2+ Completed runs", f"{completed[0]} / {twice}"),
        ("shards failed (a batch lost)", f"{len(lost)} {lost[:1]}"),
        ("load average (1 min) at the end", f"{os.getloadavg()[0]:.1f}"),
    ]  # fmt: skip
    width = max(len(k) for k, _ in rows)
    print("\nk8s scale bench (kwok nodes, real control plane, real worker and fan-out)")
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--parallelism", type=int, default=16, help="embed_parallelism")
    parser.add_argument("--gpu-nodes", type=int, default=200)
    parser.add_argument("--pool-limit", type=int, default=50)
    parser.add_argument("--hold-s", type=float, default=3.0, help="a pod's simulated work")
    parser.add_argument("--texts", type=int, default=4, help="texts per payload")
    parser.add_argument("--kill", type=float, default=0.1, help="share of GPU nodes deleted")
    parser.add_argument("--postgres", action="store_true", help="Prefect on PostgreSQL, not SQLite")
    args = parser.parse_args()
    os.environ["PREFECT_API_URL"] = f"http://127.0.0.1:{PREFECT_PORT}/api"
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    kubeconfig, was_running = prepare_cluster(args.gpu_nodes)
    tmp = Path(tempfile.mkdtemp(prefix="k8s-scale-"))
    postgres, database_url = start_postgres(POSTGRES_PORT) if args.postgres else (None, None)
    server = start_prefect(tmp / "prefect", database_url)
    env = {
        **os.environ,
        "KUBECONFIG": kubeconfig,
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_PREFETCH_SECONDS": "5",
        "GENAI_INGEST_GIT_URL": "https://git.example.com/genai-ingest.git",
        "GENAI_INGEST_GIT_BRANCH": "main",
        "GENAI_INGEST_IMAGE": "registry.example.com/genai-ingest-gpu:bench",
    }
    worker = None
    try:
        set_up_pool(env, args.pool_limit)
        worker = subprocess.Popen(
            [sys.executable, "-m", "flows.k8s_worker", "--pool", POOL],
            cwd=REPO, env=env, stdout=(tmp / "worker.log").open("w"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        figures = measure(args, kubeconfig, tmp)
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(60)
        server.terminate()
        server.wait(60)
        if postgres:
            stop_postgres(postgres)
        restore_cluster(kubeconfig, was_running)
    report(args, figures.pop("tracker"), figures)


def measure(args: argparse.Namespace, kubeconfig: str, tmp: Path) -> dict[str, Any]:
    # imported here, once: threads importing Prefect at the same time deadlock on its modules
    import prefect.client.orchestration
    import prefect.states

    import flows.fanout

    del prefect, flows

    tracker, stop = Tracker(), threading.Event()
    player = threading.Thread(
        target=lambda: asyncio.run(play_pods(kubeconfig, tracker, args.hold_s, stop))
    )
    player.start()
    results: list[Any] = []
    shards = threading.Thread(
        target=lambda: results.extend(
            run_shards(args.shards, args.batches, args.texts, args.parallelism, tmp / "batches")
        )
    )
    started = time.monotonic()
    shards.start()
    most_busy, killed = 0, []
    while shards.is_alive():
        most_busy = max(most_busy, pool_busy())
        if not killed and args.kill and tracker.completed >= args.batches // 2:
            killed = kill_nodes(kubeconfig, tracker, max(1, int(args.gpu_nodes * args.kill)))
            print(f"killed {len(killed)} GPU nodes after {tracker.completed} batches", flush=True)
        time.sleep(1)
    wall_s = time.monotonic() - started
    stop.set()
    player.join()
    return {
        "tracker": tracker,
        "runs": embed_runs(),
        "results": results,
        "wall_s": wall_s,
        "most_busy": most_busy,
        "killed": killed,
    }


if __name__ == "__main__":
    main()
