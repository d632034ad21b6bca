#!/usr/bin/env bash
# A local Kubernetes control plane on 127.0.0.1 without Docker or a container runtime: etcd,
# kube-apiserver, kube-controller-manager, kube-scheduler and the kwok controller, which plays
# the kubelet of simulated nodes (pods are bound and get a status; no container ever runs).
#
#   deploy/kubernetes/k8s.sh start|stop|wipe|status|kubeconfig|nodes
#
# start: build the binaries once (build.sh), generate certificates and kubeconfigs once, start
# what is not running, wait until each is healthy, register the kwok nodes (nodes), print the
# admin kubeconfig's path. Idempotent. stop: SIGTERM in reverse order, wait. wipe: stop, then
# delete the cluster's data, certificates and logs (the binaries stay).
# nodes: (re-)register $K8S_GPU_NODES GPU nodes (nvidia.com/gpu capacity, the label and taint of
# deploy/k8s-gpu-pool.json) and $K8S_CPU_NODES CPU nodes; `kubectl apply`, so idempotent.
#
# Environment: K8S_PORT (API server, 6443), K8S_ETCD_PORT (2379; peer port +1),
# K8S_CONTROLLER_MANAGER_PORT (10257), K8S_SCHEDULER_PORT (10259), K8S_GPU_NODES (2),
# K8S_GPUS_PER_NODE (1), K8S_CPU_NODES (2), K8S_WAIT_S (120), K8S_CACHE (see common.sh).
# Logs: $K8S_CACHE/kubernetes/logs/<component>.log.
set -euo pipefail
source "$(dirname "$0")/common.sh"
K8S_PORT=${K8S_PORT:-6443}
K8S_ETCD_PORT=${K8S_ETCD_PORT:-2379}
K8S_CONTROLLER_MANAGER_PORT=${K8S_CONTROLLER_MANAGER_PORT:-10257}
K8S_SCHEDULER_PORT=${K8S_SCHEDULER_PORT:-10259}
K8S_GPU_NODES=${K8S_GPU_NODES:-2}
K8S_GPUS_PER_NODE=${K8S_GPUS_PER_NODE:-1}
K8S_CPU_NODES=${K8S_CPU_NODES:-2}
K8S_WAIT_S=${K8S_WAIT_S:-120}
K8S_SERVICE_RANGE=10.96.0.0/16
K8S_SERVICE_IP=10.96.0.1
RUN=$K8S_HOME/run
LOGS=$K8S_HOME/logs
ADMIN=$K8S_HOME/admin.kubeconfig
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
source "$K8S_SRC/pki.sh"

running_pid() {  # running_pid <component>
  local pidfile=$RUN/$1.pid pid
  [[ -f $pidfile ]] || return 1
  pid=$(<"$pidfile")
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

args_of() {  # the command line of one component
  local p=$PKI
  case $1 in
    etcd) echo "--name=local --data-dir=$K8S_HOME/etcd-data
      --listen-client-urls=http://127.0.0.1:$K8S_ETCD_PORT
      --advertise-client-urls=http://127.0.0.1:$K8S_ETCD_PORT
      --listen-peer-urls=http://127.0.0.1:$((K8S_ETCD_PORT + 1))
      --initial-advertise-peer-urls=http://127.0.0.1:$((K8S_ETCD_PORT + 1))
      --initial-cluster=local=http://127.0.0.1:$((K8S_ETCD_PORT + 1))
      --unsafe-no-fsync --quota-backend-bytes=4294967296" ;;  # a disposable test cluster
    kube-apiserver) echo "--etcd-servers=http://127.0.0.1:$K8S_ETCD_PORT
      --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port=$K8S_PORT
      --endpoint-reconciler-type=none --service-cluster-ip-range=$K8S_SERVICE_RANGE
      --tls-cert-file=$p/apiserver.crt --tls-private-key-file=$p/apiserver.key
      --client-ca-file=$p/ca.crt --authorization-mode=RBAC
      --service-account-issuer=https://kubernetes.default.svc.cluster.local
      --service-account-key-file=$p/sa.pub --service-account-signing-key-file=$p/sa.key" ;;
    kube-controller-manager) echo "--kubeconfig=$K8S_HOME/controller-manager.kubeconfig
      --authentication-kubeconfig=$K8S_HOME/controller-manager.kubeconfig
      --authorization-kubeconfig=$K8S_HOME/controller-manager.kubeconfig
      --bind-address=127.0.0.1 --secure-port=$K8S_CONTROLLER_MANAGER_PORT --leader-elect=false
      --service-account-private-key-file=$p/sa.key --root-ca-file=$p/ca.crt
      --use-service-account-credentials=true
      --cert-dir=$K8S_HOME/controller-manager-certs" ;;
    kube-scheduler) echo "--kubeconfig=$K8S_HOME/scheduler.kubeconfig
      --authentication-kubeconfig=$K8S_HOME/scheduler.kubeconfig
      --authorization-kubeconfig=$K8S_HOME/scheduler.kubeconfig
      --bind-address=127.0.0.1 --secure-port=$K8S_SCHEDULER_PORT --leader-elect=false
      --cert-dir=$K8S_HOME/scheduler-certs" ;;
    kwok) echo "--kubeconfig=$K8S_HOME/kwok.kubeconfig --config=$K8S_SRC/kwok.yaml
      --manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake
      --node-lease-duration-seconds=40 --cidr=10.244.0.0/16 --node-ip=10.0.0.1" ;;
  esac
}

healthy() {  # healthy <component>
  case $1 in
    etcd) curl -fsS --max-time 2 "http://127.0.0.1:$K8S_ETCD_PORT/health" 2>/dev/null \
      | grep -q '"health":"true"' ;;
    kube-apiserver) kubectl --kubeconfig="$ADMIN" get --raw=/readyz >/dev/null 2>&1 ;;
    kube-controller-manager) curl -fsSk --max-time 2 \
      "https://127.0.0.1:$K8S_CONTROLLER_MANAGER_PORT/healthz" >/dev/null 2>&1 ;;
    kube-scheduler) curl -fsSk --max-time 2 "https://127.0.0.1:$K8S_SCHEDULER_PORT/healthz" \
      >/dev/null 2>&1 ;;
    kwok) running_pid kwok >/dev/null ;;
  esac
}

start_component() {  # start_component <component>: start unless running, wait until healthy
  local name=$1 pid
  if ! running_pid "$name" >/dev/null; then
    # shellcheck disable=SC2046  # the arguments are word-split on purpose
    setsid "$K8S_BIN/$name" $(args_of "$name") >>"$LOGS/$name.log" 2>&1 </dev/null &
    echo $! >"$RUN/$name.pid"
    log "started $name (log: $LOGS/$name.log)"
  fi
  local waited=0
  until healthy "$name"; do
    pid=$(running_pid "$name") || { tail -n 30 "$LOGS/$name.log" >&2; die "$name exited"; }
    ((waited++ < K8S_WAIT_S * 2)) || die "$name (pid $pid) not healthy after ${K8S_WAIT_S}s"
    sleep 0.5
  done
}

node_manifest() {  # node_manifest <pool> <index>: one kwok node of the GPU or CPU pool
  local pool=$1 name=kwok-$1-$2
  cat <<EOF
apiVersion: v1
kind: Node
metadata:
  name: $name
  annotations: {kwok.x-k8s.io/node: fake}
  labels:
    kubernetes.io/hostname: $name
    kubernetes.io/os: linux
    type: kwok
    genai-ingest/pool: $pool
EOF
  if [[ $pool == gpu ]]; then
    cat <<EOF
    nvidia.com/gpu.present: "true"
spec:
  taints: [{key: nvidia.com/gpu, value: present, effect: NoSchedule}]
status:
  allocatable: &gpu {cpu: "32", memory: 128Gi, pods: "110", nvidia.com/gpu: "$K8S_GPUS_PER_NODE"}
  capacity: *gpu
EOF
  else
    cat <<EOF
status:
  allocatable: &cpu {cpu: "16", memory: 64Gi, pods: "110"}
  capacity: *cpu
EOF
  fi
  echo ---
}

register_nodes() {
  local i
  {
    for ((i = 0; i < K8S_GPU_NODES; i++)); do node_manifest gpu "$i"; done
    for ((i = 0; i < K8S_CPU_NODES; i++)); do node_manifest cpu "$i"; done
  } | kubectl --kubeconfig="$ADMIN" apply -f - >/dev/null
  kubectl --kubeconfig="$ADMIN" wait node -l type=kwok --for=condition=Ready \
    --timeout="${K8S_WAIT_S}s" >/dev/null || die "kwok nodes not Ready (log: $LOGS/kwok.log)"
  log "registered $K8S_GPU_NODES GPU and $K8S_CPU_NODES CPU kwok nodes, Ready"
}

start() {
  command -v kubectl >/dev/null || die "needs kubectl on PATH"
  "$K8S_SRC/build.sh" >/dev/null
  mkdir -p "$RUN" "$LOGS"
  ensure_pki
  local name
  for name in "${COMPONENTS[@]}"; do start_component "$name"; done
  register_nodes
  echo "$ADMIN"
}

stop() {
  local i name pid
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
    name=${COMPONENTS[i]}
    pid=$(running_pid "$name") || continue
    kill -TERM "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && { log "$name did not stop in 20 s: SIGKILL"; kill -KILL "$pid"; }
    rm -f "$RUN/$name.pid"
    log "stopped $name"
  done
}

status() {
  local name ok=0
  for name in "${COMPONENTS[@]}"; do
    if running_pid "$name" >/dev/null && healthy "$name"; then echo "$name: up"; else
      echo "$name: down"
      ok=1
    fi
  done
  return $ok
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  wipe) stop && rm -rf "$K8S_HOME/etcd-data" "$PKI" "$K8S_HOME"/*.kubeconfig "$K8S_HOME"/*-certs \
    "$LOGS" "$RUN" ;;
  status) status ;;
  kubeconfig) echo "$ADMIN" ;;
  nodes) register_nodes ;;
  *) die "usage: $0 start|stop|wipe|status|kubeconfig|nodes" ;;
esac
