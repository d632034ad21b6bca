"""Store restart benchmark: ``genai-ingest run`` into Elasticsearch while the node is stopped
for ``--outage-s`` (20 s) and started again, with the store policies before and after the
store breaker paused its callers, side by side in one run.

* ``before``: store breaker 3 failures / 60 s cool-down, no pause (``pause_s=0``), no replay
  after the run (``delayed_replay.after_run=false``): the policies before issue 24;
* ``after``: today's defaults (3 failures / 5 s cool-down, ``pause_s=120``, replay after run).

Each scenario gets a fresh alias on its own short-lived node (``deploy/elasticsearch/es.sh``
on ``--port``, wiped at the end; the shared 9200 node is never touched). The outage starts as
soon as the first chunks are in the index. Prints per scenario: documents failed, DLQ entries
made and still open, time paused, retries, wall time, whether the index equals a clean run's
(a run into the embedded store, same files), and the load average seen.

Usage: ``python bench/store_restart_bench.py [FOLDERS ...] [--outage-s 20] [--port 9253]``
(default: ``../shared/corpus/good/{text,docx,html}``, the issue's 29-file run plus what was
added since).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
GOOD = REPO.parent / "shared" / "corpus" / "good"
ES_SH = REPO / "deploy" / "elasticsearch" / "es.sh"
CLI = str(Path(sys.executable).parent / "genai-ingest")
SCENARIOS = {
    "before": {
        "GENAI_INGEST_POLICIES__STORE_BREAKER__COOLDOWN_S": "60",
        "GENAI_INGEST_POLICIES__STORE_BREAKER__PAUSE_S": "0",
        "GENAI_INGEST_POLICIES__DELAYED_REPLAY__AFTER_RUN": "false",
    },
    "after": {},
}


def es(command: str, port: int) -> None:
    env = {**os.environ, "ES_PORT": str(port), "ES_HEAP": "512m"}
    subprocess.run([str(ES_SH), command], env=env, check=True, capture_output=True, timeout=300)


def chunk_count(url: str, alias: str) -> int:
    try:
        with urllib.request.urlopen(f"{url}/{alias}/_count", timeout=2) as answer:
            return int(json.load(answer)["count"])
    except OSError:
        return 0


def cli(env: dict[str, str], *args: str) -> dict[str, Any]:
    done = subprocess.run([CLI, *args, "--json"], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout)


def scenario(name: str, folders: list[str], port: int, outage_s: float, tmp: Path) -> dict:
    url, alias = f"http://127.0.0.1:{port}", f"restart-{name}"
    env = {
        **os.environ,
        **SCENARIOS[name],
        "GENAI_INGEST_STORE_URL": url,
        "GENAI_INGEST_ELASTICSEARCH__INDEX": alias,
        "GENAI_INGEST_ELASTICSEARCH__REQUEST_TIMEOUT_S": "5",
        "GENAI_INGEST_DATA_DIR": str(tmp / name),
    }
    started = time.monotonic()
    run = subprocess.Popen(
        [CLI, "run", *folders, "--json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    while chunk_count(url, alias) == 0 and run.poll() is None:
        time.sleep(0.1)
    down_at = time.monotonic()
    es("stop", port)
    time.sleep(outage_s)
    es("start", port)
    outage = time.monotonic() - down_at
    out, err = run.communicate()
    wall = time.monotonic() - started
    if run.returncode != 0:
        raise SystemExit(err.decode()[-3000:])
    report = json.loads(out)
    stats = cli(env, "stats")
    return {
        "report": report,
        "stats": stats,
        "outage_s": outage,
        "wall_s": wall,
        "down_after_s": down_at - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*")
    parser.add_argument("--outage-s", type=float, default=20.0)
    parser.add_argument("--port", type=int, default=9253)
    parser.add_argument("--json-out", type=Path, help="also write the raw reports here")
    args = parser.parse_args()
    folders = args.folders or [str(GOOD / kind) for kind in ("text", "docx", "html")]
    with tempfile.TemporaryDirectory(prefix="restart-bench-") as tmp_name:
        tmp = Path(tmp_name)
        clean_env = {**os.environ, "GENAI_INGEST_DATA_DIR": str(tmp / "clean")}
        clean_env.pop("GENAI_INGEST_STORE_URL", None)
        started = time.monotonic()
        clean = cli(clean_env, "run", *folders)
        clean_wall = time.monotonic() - started
        clean_digest = cli(clean_env, "stats")["chunk_ids_sha256"]
        es("start", args.port)
        try:
            results = {
                name: scenario(name, folders, args.port, args.outage_s, tmp) for name in SCENARIOS
            }
        finally:
            es("wipe", args.port)
    if args.json_out:
        args.json_out.write_text(json.dumps({"clean_digest": clean_digest, **results}, indent=1))
    print(f"{clean['documents_seen']} documents, clean run (embedded store) {clean_wall:.0f} s")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (2 cores, shared)")
    header = (
        "scenario  failed  dlq_new  dlq_open  replayed_after  paused_s  retries  outage_s"
        "  wall_s  index==clean"
    )
    print(header)
    for name, r in results.items():
        report, retries = r["report"], r["report"]["retries"]
        replayed = report.get("replayed_after_run", {}).get("resolved", 0)
        same = r["stats"]["chunk_ids_sha256"] == clean_digest
        print(
            f"{name:<9} {report['documents_failed']:>6} {report['dlq_new']:>8} "
            f"{report['dlq_open']:>9} {replayed:>15} {retries.get('paused_s', 0):>9.1f} "
            f"{retries['retries']:>8} {r['outage_s']:>9.1f} {r['wall_s']:>7.1f}  {same}"
        )
        print(f"          errors by class {dict(retries['errors'])}")


if __name__ == "__main__":
    main()
