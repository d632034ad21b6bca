# Shared by build.sh and k8s.sh: where the local control plane lives.
#
# K8S_CACHE follows the Elasticsearch cache convention (deploy/elasticsearch/es.sh): ES_CACHE
# when set, else /var/cache/genai-ingest for root and ~/.cache/genai-ingest otherwise; the
# control plane uses its kubernetes/ folder.
if [[ $(id -u) == 0 ]]; then
  K8S_CACHE=${K8S_CACHE:-${ES_CACHE:-/var/cache/genai-ingest}}
else
  K8S_CACHE=${K8S_CACHE:-${ES_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/genai-ingest}}
fi
K8S_HOME=$K8S_CACHE/kubernetes
K8S_BIN=$K8S_HOME/bin
K8S_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

log() { echo "$(basename "$0"): $*" >&2; }
die() { log "$*"; exit 1; }
