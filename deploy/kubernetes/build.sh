#!/usr/bin/env bash
# Build the local Kubernetes control plane from source, once, into $K8S_CACHE/kubernetes/bin:
# kube-apiserver, kube-controller-manager and kube-scheduler (k8s.io/kubernetes), etcd
# (go.etcd.io/etcd/server/v3) and the kwok controller (sigs.k8s.io/kwok), at the versions
# pinned in build/*/go.mod, sources checked against build/*/go.sum. Needs Go and the Go module
# proxy, nothing else.
#
#   deploy/kubernetes/build.sh [build|clean-cache]
#
# build (default): nothing to do when bin/BUILD-INFO's stamp (Go version and build/* files)
# matches; otherwise build all five with CGO off and -trimpath under `nice -n $K8S_NICE`,
# `go build -p $K8S_BUILD_JOBS` (default 2), then write BUILD-INFO (versions, wall time) and
# SHA256SUMS. Such builds are reproducible for one Go release: when deploy/kubernetes/SHA256SUMS
# was recorded with the same Go version, the new binaries must match it.
# clean-cache: delete the Go module and build caches (several GB); the binaries stay.
set -euo pipefail
source "$(dirname "$0")/common.sh"
K8S_NICE=${K8S_NICE:-10}
K8S_BUILD_JOBS=${K8S_BUILD_JOBS:-2}
export GOMODCACHE=$K8S_HOME/go/mod GOCACHE=$K8S_HOME/go/build GOTOOLCHAIN=local CGO_ENABLED=0 \
  GOFLAGS="-mod=readonly -buildvcs=false"  # no git stamp: the same binaries from any checkout
RECORDED_SUMS=$K8S_SRC/SHA256SUMS
command -v go >/dev/null || die "needs Go >= 1.26 on PATH (https://go.dev/dl/) to build once"

stamp() {
  { go version; cat "$K8S_SRC"/build/*/go.mod "$K8S_SRC"/build/*/go.sum "$K8S_SRC"/build/*/*.go; } \
    | sha256sum | cut -d' ' -f1
}

module_version() { (cd "$K8S_SRC/build/$1" && go list -m -f '{{.Version}}' "$2"); }

gobuild() {  # gobuild <module dir> <output dir> <extra ldflags> <packages...>
  local dir=$1 out=$2 ldflags=$3
  shift 3
  local started=$SECONDS
  (cd "$K8S_SRC/build/$dir" \
    && nice -n "$K8S_NICE" go build -p "$K8S_BUILD_JOBS" -trimpath -ldflags "-s -w $ldflags" \
      -o "$out/" "$@")
  log "built $dir in $((SECONDS - started)) s"
}

kube_ldflags() {  # what Kubernetes' hack/lib/version.sh stamps, build date fixed
  local version=$1 minor flags=() key
  minor=${version#v1.}
  minor=${minor%%.*}
  for key in gitVersion="$version" gitMajor=1 gitMinor="$minor" gitTreeState=clean \
    buildDate=1970-01-01T00:00:00Z; do
    flags+=("-X k8s.io/client-go/pkg/version.$key" "-X k8s.io/component-base/version.$key")
  done
  echo "${flags[*]}"
}

check_recorded_sums() {  # check_recorded_sums <bin dir>
  [[ -f $RECORDED_SUMS ]] || return 0
  local recorded_go
  recorded_go=$(sed -n 's/^# built with //p' "$RECORDED_SUMS")
  if [[ $recorded_go != "$(go version)" ]]; then
    log "SHA256SUMS was recorded with '$recorded_go', not '$(go version)': not compared"
    return 0
  fi
  (cd "$1" && grep -v '^#' "$RECORDED_SUMS" | sha256sum --check --quiet -) \
    || die "binaries differ from $RECORDED_SUMS although the Go version is the same"
}

build() {
  local want
  want=$(stamp)
  if [[ -f $K8S_BIN/BUILD-INFO ]] && grep -qx "stamp $want" "$K8S_BIN/BUILD-INFO"; then
    echo "$K8S_BIN"
    return
  fi
  local kube etcd kwok started=$SECONDS new=$K8S_HOME/bin.new
  kube=$(module_version kube k8s.io/kubernetes)
  etcd=$(module_version etcd go.etcd.io/etcd/server/v3)
  kwok=$(module_version kwok sigs.k8s.io/kwok)
  rm -rf "$new"
  mkdir -p "$new"
  log "building Kubernetes $kube, etcd $etcd, kwok $kwok into $K8S_BIN (first time: long)"
  (cd "$K8S_SRC/build/kube" && go mod download) || die "go mod download failed (module proxy?)"
  gobuild etcd "$new" "" .
  gobuild kwok "$new" "-X sigs.k8s.io/kwok/pkg/consts.Version=$kwok" sigs.k8s.io/kwok/cmd/kwok
  gobuild kube "$new" "$(kube_ldflags "$kube")" k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler
  (cd "$new" && sha256sum etcd kube-apiserver kube-controller-manager kube-scheduler kwok \
    >SHA256SUMS)
  check_recorded_sums "$new"
  cat >"$new/BUILD-INFO" <<EOF
stamp $want
built with $(go version), CGO_ENABLED=0 -trimpath, nice -n $K8S_NICE go build -p $K8S_BUILD_JOBS
k8s.io/kubernetes $kube
go.etcd.io/etcd/server/v3 $etcd
sigs.k8s.io/kwok $kwok
built at $(date -u +%Y-%m-%dT%H:%M:%SZ) in $((SECONDS - started)) s
EOF
  rm -rf "$K8S_BIN"
  mv "$new" "$K8S_BIN"
  log "done in $((SECONDS - started)) s; caches: $(du -sh "$K8S_HOME/go" | cut -f1)"
  echo "$K8S_BIN"
}

case ${1:-build} in
  build) build ;;
  clean-cache) chmod -R u+w "$K8S_HOME/go" 2>/dev/null || true; rm -rf "$K8S_HOME/go" ;;
  *) die "usage: $0 [build|clean-cache]" ;;
esac
