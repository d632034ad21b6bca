# Sourced by k8s.sh: certificates and kubeconfigs of the local control plane (openssl, kubectl).
#
# One CA signs the API server's serving certificate (127.0.0.1, localhost and the in-cluster
# names) and one client certificate per component; the service-account signing key is separate.
# Nothing is regenerated while $PKI/ca.crt exists (`k8s.sh wipe` starts over).

PKI=$K8S_HOME/pki

new_cert() {  # new_cert <name> <subject> [<subjectAltName>]: <name>.key/.crt signed by the CA
  local name=$1 subject=$2 san=${3:-}
  openssl req -new -newkey rsa:2048 -nodes -keyout "$PKI/$name.key" -subj "$subject" \
    -out "$PKI/$name.csr" 2>/dev/null
  printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=%s\n%s\n' \
    "${san:+serverAuth,}clientAuth" "${san:+subjectAltName=$san}" >"$PKI/$name.ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" \
    -CAcreateserial -days 3650 -sha256 -out "$PKI/$name.crt" -extfile "$PKI/$name.ext" 2>/dev/null
  rm -f "$PKI/$name.csr" "$PKI/$name.ext"
}

kubeconfig() {  # kubeconfig <client cert name>: $K8S_HOME/<name>.kubeconfig, certificates embedded
  local file=$K8S_HOME/$1.kubeconfig
  kubectl config set-cluster genai-ingest-local --kubeconfig="$file" --embed-certs \
    --certificate-authority="$PKI/ca.crt" --server="https://127.0.0.1:$K8S_PORT" >/dev/null
  kubectl config set-credentials "$1" --kubeconfig="$file" --embed-certs \
    --client-certificate="$PKI/$1.crt" --client-key="$PKI/$1.key" >/dev/null
  kubectl config set-context genai-ingest-local --kubeconfig="$file" \
    --cluster=genai-ingest-local --user="$1" >/dev/null
  kubectl config use-context genai-ingest-local --kubeconfig="$file" >/dev/null
}

ensure_pki() {
  [[ -f $PKI/ca.crt ]] && return
  log "generating certificates in $PKI"
  rm -rf "$PKI"
  mkdir -p "$PKI"
  chmod 700 "$PKI"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$PKI/ca.key" -out "$PKI/ca.crt" -days 3650 \
    -subj "/CN=genai-ingest-local-ca" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
  new_cert apiserver "/CN=kube-apiserver" \
    "IP:127.0.0.1,IP:$K8S_SERVICE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  new_cert admin "/O=system:masters/CN=kubernetes-admin"
  new_cert controller-manager "/CN=system:kube-controller-manager"
  new_cert scheduler "/CN=system:kube-scheduler"
  new_cert kwok "/O=system:masters/CN=kwok-controller"  # kwok writes node and pod status
  openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
  openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  local name
  for name in admin controller-manager scheduler kwok; do kubeconfig "$name"; done
  chmod 600 "$PKI"/*.key "$K8S_HOME"/*.kubeconfig
}
