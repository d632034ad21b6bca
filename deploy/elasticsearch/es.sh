#!/usr/bin/env bash
# A real single-node Elasticsearch on 127.0.0.1, without Docker.
#
#   deploy/elasticsearch/es.sh start|stop|wipe|status|url
#
# start: fetch Elastic's JDK-less server build (Maven artifact
# org.elasticsearch.distribution.integ-test-zip:elasticsearch:<version>:zip) once, check its
# sha512 against the pin below, unpack it into a cache outside the repository, start one node
# (security off, loopback only, 1 GB heap), wait until /_cluster/health is yellow, print the URL.
# Idempotent: a node already running on ES_PORT is reused. stop: SIGTERM via the pid file, wait.
# wipe: stop, then delete the node's data and logs (the unpacked server stays cached).
#
# Environment: ES_VERSION (default: the pin below), ES_PORT (9200), ES_HEAP (1g), ES_JAVA_HOME
# (default: a JDK >= 21 under /usr/lib/jvm for 9.x, the system Java for 8.x), ES_CACHE (default
# ~/.cache/genai-ingest, /var/cache/genai-ingest for root), ES_SETTINGS (extra "key=value ..."
# node settings, e.g. "thread_pool.write.queue_size=1"), ES_SHA512 (for an unpinned version).
set -euo pipefail

# The one place the default server version is pinned, with the sha512 of each version run here.
DEFAULT_ES_VERSION=9.5.4
declare -A PINNED_SHA512=(
  [9.5.4]=a75df614854ace52dd0bce977662b3792873ac077ec0af9026cd0b2a0eb119e449910f8eb8ed577d1a83c51c6ee6af71bf5004c3cf5b418c979186de8b5dd9e6
  [8.19.21]=cf6b0a93860d329937ae7f913ec5073b0c726c77639764b93fc83a304aa1dd9d4defcfa2849948eea3b0b47c2065f994908603939fc2a4774c9c4d868c5ec1dd
)

ES_VERSION=${ES_VERSION:-$DEFAULT_ES_VERSION}
ES_PORT=${ES_PORT:-9200}
ES_HEAP=${ES_HEAP:-1g}
ES_USER=${ES_USER:-genai-es}
ES_SETTINGS=${ES_SETTINGS:-}
ES_WAIT_S=${ES_WAIT_S:-180}
if [[ $(id -u) == 0 ]]; then
  ES_CACHE=${ES_CACHE:-/var/cache/genai-ingest}
else
  ES_CACHE=${ES_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/genai-ingest}
fi
ARTIFACT=org.elasticsearch.distribution.integ-test-zip:elasticsearch:$ES_VERSION:zip
DIST=$ES_CACHE/elasticsearch-$ES_VERSION
NODE=$ES_CACHE/node-$ES_PORT
PIDFILE=$NODE/es.pid
URL=http://127.0.0.1:$ES_PORT

log() { echo "es.sh: $*" >&2; }
die() { log "$*"; exit 1; }

healthy() {
  curl -fsS --max-time 5 "$URL/_cluster/health?wait_for_status=yellow&timeout=2s" >/dev/null 2>&1
}

running_pid() {
  [[ -f $PIDFILE ]] || return 1
  local pid
  pid=$(<"$PIDFILE")
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

java_home() {
  if [[ -n ${ES_JAVA_HOME:-} ]]; then echo "$ES_JAVA_HOME"; return; fi
  local major=${ES_VERSION%%.*} jdk
  if ((major >= 9)); then  # 9.x needs Java 21+
    for jdk in /usr/lib/jvm/temurin-25-jdk-amd64 /usr/lib/jvm/*25* /usr/lib/jvm/*21*; do
      [[ -x $jdk/bin/java ]] && { echo "$jdk"; return; }
    done
    die "Elasticsearch $ES_VERSION needs Java 21 or newer: set ES_JAVA_HOME"
  fi
  dirname "$(dirname "$(readlink -f "$(command -v java)")")"
}

fetch() {
  [[ -x $DIST/bin/elasticsearch ]] && return
  local expected=${ES_SHA512:-${PINNED_SHA512[$ES_VERSION]:-}}
  [[ -n $expected ]] || die "no pinned sha512 for $ES_VERSION: set ES_SHA512 (sha512sum of the zip)"
  WORK=$(mktemp -d)
  trap 'rm -rf "$WORK"' EXIT
  log "fetching $ARTIFACT with Maven"
  mvn -q -B dependency:copy -Dartifact="$ARTIFACT" -DoutputDirectory="$WORK" >&2 \
    || die "maven could not fetch $ARTIFACT"
  local zip=$WORK/elasticsearch-$ES_VERSION.zip
  echo "$expected  $zip" | sha512sum --check --quiet - || die "sha512 mismatch for $zip"
  mkdir -p "$ES_CACHE"
  unzip -q "$zip" -d "$WORK/unpacked"
  rm -rf "$DIST"
  mv "$WORK/unpacked/elasticsearch-$ES_VERSION" "$DIST"
  log "unpacked into $DIST"
}

ensure_user() {
  [[ $(id -u) == 0 ]] || return 0  # not root: run as ourselves
  id -u "$ES_USER" >/dev/null 2>&1 \
    || useradd --system --no-create-home --shell /usr/sbin/nologin "$ES_USER"
}

prepare_node() {
  mkdir -p "$NODE/data" "$NODE/logs" "$NODE/tmp"
  rm -rf "$NODE/config"
  cp -r "$DIST/config" "$NODE/config"  # per-node config: nodes on other ports stay apart
  if [[ $(id -u) == 0 ]]; then
    chown -R "$ES_USER:" "$NODE"
    chmod -R go+rX "$DIST"
  fi
}

as_es_user() {
  if [[ $(id -u) == 0 ]]; then runuser -u "$ES_USER" -- "$@"; else "$@"; fi
}

start() {
  if running_pid >/dev/null && healthy; then echo "$URL"; return; fi
  running_pid >/dev/null && die "node on port $ES_PORT is running but not healthy; run stop"
  curl -fsS --max-time 2 "$URL" >/dev/null 2>&1 && die "port $ES_PORT is used by another process"
  fetch
  ensure_user
  prepare_node
  local settings=(
    -Ecluster.name="genai-ingest-$ES_PORT" -Enode.name="node-$ES_PORT"
    -Ediscovery.type=single-node -Enetwork.host=127.0.0.1 -Ehttp.port="$ES_PORT"
    -Expack.security.enabled=false
    -Ecluster.routing.allocation.disk.threshold_enabled=false
    -Epath.data="$NODE/data" -Epath.logs="$NODE/logs"
  )
  local setting
  for setting in $ES_SETTINGS; do settings+=("-E$setting"); done
  log "starting Elasticsearch $ES_VERSION on $URL (logs: $NODE/logs)"
  as_es_user env ES_JAVA_HOME="$(java_home)" ES_PATH_CONF="$NODE/config" ES_TMPDIR="$NODE/tmp" \
    ES_JAVA_OPTS="-Xms$ES_HEAP -Xmx$ES_HEAP ${ES_JAVA_OPTS:-}" \
    "$DIST/bin/elasticsearch" -d -p "$PIDFILE" "${settings[@]}" >"$NODE/logs/start.out" 2>&1 \
    || { cat "$NODE/logs/start.out" >&2; die "elasticsearch did not start"; }
  local waited=0
  until healthy; do
    running_pid >/dev/null || { tail -n 40 "$NODE/logs/"*.log >&2 2>/dev/null; die "node exited"; }
    ((waited++ < ES_WAIT_S)) || die "node not healthy after ${ES_WAIT_S}s"
    sleep 1
  done
  echo "$URL"
}

stop() {
  local pid
  pid=$(running_pid) || { log "no node running on port $ES_PORT"; return 0; }
  kill -TERM "$pid"
  for _ in $(seq 120); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$PIDFILE"; log "stopped node on port $ES_PORT"; return 0; }
    sleep 0.5
  done
  die "node $pid did not stop within 60 s"
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  wipe) stop && rm -rf "$NODE" ;;
  status) if running_pid >/dev/null && healthy; then echo "$URL"; else exit 1; fi ;;
  url) echo "$URL" ;;
  *) die "usage: $0 start|stop|wipe|status|url" ;;
esac
