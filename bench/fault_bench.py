"""Fault benchmark: the ``ingest`` flow against an embedding endpoint failing a share of requests.

A real OpenAI-compatible server on 127.0.0.1 (``tests/fault_server.py``, serving the local
all-MiniLM-L6-v2 vectors) answers ``--fault-share`` of the requests with a fault, split evenly
between 429 (with ``Retry-After``), 503 and dropped connections. Two phases, each in a fresh
interpreter (cold parser workers, model loaded before the clock starts):

1. ``clean``: the corpus through a fault-free server;
2. ``faulty``: the same corpus through the faulty server into a fresh data dir; documents the
   run dead-letters as transient (a breaker that opened, a spent budget) are then replayed with
   the ``dlq_replay`` flow against the same faulty server.

Prints: documents indexed, duplicate chunk ids (must be 0), whether the index equals the clean
run's, requests and faults by kind, retries made, time lost to backoff (``RetryStats.slept_s``)
and wall time against the fault-free run. Policies are the defaults, overridable with the usual
``GENAI_INGEST_POLICIES__...`` environment variables.

Usage: ``python bench/fault_bench.py [CORPUS ...] [--fault-share 0.3] [--max-batch 16]``
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = REPO.parent / "shared" / "corpus" / "good"
MODEL = "all-MiniLM-L6-v2"
FAULT_KINDS = ("rate_limited", "unavailable", "dropped")


def index_facts(db: Path) -> dict[str, Any]:
    """Chunk count, duplicate chunk ids (also: chunks listed by two ledger rows), digest."""
    from genai_ingest.stores.base import chunk_ids_digest

    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        ids = [r[0] for r in conn.execute("SELECT chunk_id FROM chunks")]
        listed = [
            cid
            for (record,) in conn.execute("SELECT record FROM documents")
            for cid in json.loads(record)["chunk_ids"]
        ]
    return {
        "chunks": len(ids),
        "duplicate_chunk_ids": (len(ids) - len(set(ids))) + (len(listed) - len(set(listed))),
        "digest": chunk_ids_digest(ids),
    }


def phase(corpus: list[str], data_dir: Path, faulty: bool, args: argparse.Namespace) -> dict:
    sys.path.insert(0, str(REPO / "tests"))
    from fault_server import Faults, FaultServer

    from flows.dlq_replay import dlq_replay
    from flows.ingest import ingest
    from genai_ingest.config import EmbedSettings, RemoteEmbedSettings, RemoteEndpoint, Settings
    from genai_ingest.embed.local import LocalEmbedder
    from genai_ingest.run.runtime import runtime_for

    share = args.fault_share / len(FAULT_KINDS) if faulty else 0.0
    faults = Faults(
        rate_limited=share,
        unavailable=share,
        dropped=share,
        retry_after=args.retry_after,
        seed=args.seed,
    )
    server = FaultServer(LocalEmbedder(EmbedSettings()), MODEL, faults).start()
    try:
        endpoint = RemoteEndpoint(
            url=server.url, model=MODEL, dimension=384, max_batch=args.max_batch
        )
        settings = Settings(data_dir=data_dir, remote_embed=RemoteEmbedSettings(primary=endpoint))
        rt = runtime_for(settings)  # tokenizer, store: before the clock starts
        t0 = time.perf_counter()
        report = ingest(sources=corpus, settings=settings)
        wall = time.perf_counter() - t0
        result: dict[str, Any] = {"wall_s": wall, "report": report}
        if report["dlq_new"]:
            t0 = time.perf_counter()
            replay = dlq_replay(settings=settings)
            result["replay"] = {
                "wall_s": time.perf_counter() - t0,
                "replayed": replay["replayed"],
                "resolved": len(replay["resolved"]),
            }
        result["server"] = dict(server.counts)
        result["retry_stats"] = rt.retry_stats.summary()
        result["policies"] = settings.policies.model_dump()
        result["index"] = index_facts(settings.database_path)
        result["dlq_open"] = len(rt.dlq.entries())
        return result
    finally:
        server.stop()


def run_phase(name: str, args: argparse.Namespace, data_dir: Path, env: dict[str, str]) -> dict:
    command = [sys.executable, __file__, "--phase", name, "--data-dir", str(data_dir)]
    command += ["--fault-share", str(args.fault_share), "--max-batch", str(args.max_batch)]
    command += ["--seed", str(args.seed), "--retry-after", args.retry_after, *args.corpus]
    out = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, check=False)
    for line in reversed(out.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"phase {name} failed:\n{out.stderr[-4000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", nargs="*", default=[str(DEFAULT_CORPUS)])
    parser.add_argument("--fault-share", type=float, default=0.3)
    parser.add_argument("--max-batch", type=int, default=16, help="texts per request")
    parser.add_argument("--retry-after", default="1", help="Retry-After header (seconds)")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.corpus = [str(Path(c).resolve()) for c in args.corpus]
    if args.phase:
        result = phase(args.corpus, Path(args.data_dir), args.phase == "faulty", args)
        print(json.dumps(result, default=str))
        return

    env = {**os.environ, "PREFECT_LOGGING_LEVEL": "ERROR", "HF_HUB_OFFLINE": "1"}
    with ExitStack() as stack:
        if not env.get("PREFECT_API_URL"):  # a throwaway Prefect server for both phases
            from prefect.settings import PREFECT_API_URL
            from prefect.testing.utilities import prefect_test_harness

            stack.enter_context(prefect_test_harness(server_startup_timeout=120))
            env["PREFECT_API_URL"] = str(PREFECT_API_URL.value())
        root = Path(tempfile.mkdtemp(prefix="genai-ingest-fault-bench-"))
        clean = run_phase("clean", args, root / "clean", env)
        faulty = run_phase("faulty", args, root / "faulty", env)
    print_report(clean, faulty, args)


def print_report(clean: dict, faulty: dict, args: argparse.Namespace) -> None:
    report, server, stats = faulty["report"], faulty["server"], faulty["retry_stats"]
    faults = {k: server.get(k, 0) for k in FAULT_KINDS}
    embed_errors = {k: v for k, v in stats["errors"].items() if k != "store_unavailable"}
    same = faulty["index"]["digest"] == clean["index"]["digest"]
    policy = {k: faulty["policies"][k] for k in ("embed_endpoint", "embed_breaker", "task")}
    print(f"corpus: {', '.join(args.corpus)}")
    print(
        f"endpoint failing {args.fault_share:.0%} of requests (429 Retry-After {args.retry_after}s"
        f" / 503 / dropped), {args.max_batch} texts per request; policies {policy}"
    )
    print(
        f"documents seen {report['documents_seen']}: indexed {report['documents_indexed']},"
        f" duplicate {report['documents_duplicate']}, failed {report['documents_failed']}"
        f" (clean run: indexed {clean['report']['documents_indexed']},"
        f" failed {clean['report']['documents_failed']})"
    )
    if "replay" in faulty:
        replay = faulty["replay"]
        print(
            f"dlq replay against the same faulty endpoint: replayed {replay['replayed']},"
            f" resolved {replay['resolved']} in {replay['wall_s']:.1f}s;"
            f" DLQ open afterwards {faulty['dlq_open']}"
        )
    print(
        f"chunks {faulty['index']['chunks']}, duplicate chunk ids"
        f" {faulty['index']['duplicate_chunk_ids']}, index equals the fault-free run's: {same}"
    )
    print(
        f"requests {server.get('requests', 0)} (answered {server.get('ok', 0)}), faults"
        f" {sum(faults.values())}: {faults}"
    )
    print(
        f"retries made {stats['retries']} (errors seen {embed_errors}), calls that gave up"
        f" {stats['gave_up']}, time lost to backoff {stats['slept_s']:.1f}s"
    )
    print(
        f"wall time: faulty run {faulty['wall_s']:.1f}s vs fault-free {clean['wall_s']:.1f}s"
        f" (+{faulty['wall_s'] - clean['wall_s']:.1f}s)"
        f"; fault-free server got {clean['server'].get('requests', 0)} requests"
    )


if __name__ == "__main__":
    main()
