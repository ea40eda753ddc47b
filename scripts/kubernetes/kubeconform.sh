#!/usr/bin/env bash
# Validate Kubernetes manifests against the real schemas, offline: kubeconform, built from the
# Go module proxy, with the Kubernetes JSON schemas of the PyPI wheel `kubernetes-validate` and
# KEDA's ScaledObject CRD from the Go module zip of github.com/kedacore/keda/v2, converted by
# scripts/kubernetes/schemas.py. Everything is fetched once into the tools cache (GitHub, where
# kubeconform looks by default, is not needed). See docs/deploy.md.
#
#   scripts/kubernetes/kubeconform.sh                      # deploy/kubernetes/*.yaml, strict
#   scripts/kubernetes/kubeconform.sh -output json FILE... # any kubeconform flags, then files
#
# Every resource must have a schema: a kind without one fails (never -ignore-missing-schemas).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TOOLS_DIR=${ORDERFLOW_TOOLS_DIR:-${ORDERFLOW_HOME:-$HOME/.orderflow}/tools}
KUBECONFORM_VERSION=${ORDERFLOW_KUBECONFORM_VERSION:-v0.8.0}
K8S_VERSION=${ORDERFLOW_K8S_VERSION:-1.34.0}            # a schema set of kubernetes-validate 1.37.0
KUBERNETES_VALIDATE_VERSION=1.37.0
KEDA_VERSION=${ORDERFLOW_KEDA_VERSION:-v2.18.1}
PYTHON=${ORDERFLOW_PYTHON:-${ORDERFLOW_HOME:-$HOME/.orderflow}/venv/bin/python}
BIN=$TOOLS_DIR/kubeconform-$KUBECONFORM_VERSION/kubeconform
SCHEMAS=$TOOLS_DIR/k8s-schemas-$K8S_VERSION-keda-$KEDA_VERSION

log() { printf '[kubeconform] %s\n' "$*" >&2; }
die() { printf '[kubeconform] error: %s\n' "$*" >&2; exit 1; }

install() {
    if [ ! -x "$BIN" ]; then
        command -v go >/dev/null || die "Go is needed to build kubeconform (go install)"
        log "building kubeconform $KUBECONFORM_VERSION from the Go module proxy (about 2 min the first time)"
        GOBIN=$(dirname "$BIN") GOFLAGS=-mod=mod go install -ldflags "-s -w -X main.version=$KUBECONFORM_VERSION" \
            "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION" \
            || die "go install github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION failed"
    fi
    [ -f "$SCHEMAS/.complete" ] && return 0
    [ -x "$PYTHON" ] || die "no Python at $PYTHON (scripts/stack install prepares it; or set ORDERFLOW_PYTHON)"
    local work=$SCHEMAS.tmp
    rm -rf "$work" && mkdir -p "$work/dl"
    log "fetching the Kubernetes $K8S_VERSION schemas (PyPI kubernetes-validate $KUBERNETES_VALIDATE_VERSION) and KEDA $KEDA_VERSION's CRDs"
    "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps \
        "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" -d "$work/dl" \
        || die "pip download kubernetes-validate==$KUBERNETES_VALIDATE_VERSION failed"
    "$PYTHON" - "$work/dl"/kubernetes_validate-*.whl "$work/dl/x" "v$K8S_VERSION" <<'PY' || die "could not unpack the schemas"
import sys, zipfile
wheel, out, version = sys.argv[1:]
prefix = "kubernetes_validate/kubernetes-json-schema/%s-local" % version
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.startswith(prefix + "/") or n.startswith(prefix + "-strict/")]
    if not names:
        sys.exit("no %s schemas in %s" % (version, wheel))
    z.extractall(out, names)
PY
    "$PYTHON" "$REPO/scripts/kubernetes/schemas.py" kv "$work/dl/x/kubernetes_validate/kubernetes-json-schema" \
        "$K8S_VERSION" "$work" >&2 || die "converting the Kubernetes schemas failed"
    curl -fsSL --retry 3 -o "$work/dl/keda.zip" \
        "https://proxy.golang.org/github.com/kedacore/keda/v2/@v/$KEDA_VERSION.zip" \
        || die "could not download KEDA $KEDA_VERSION from the Go module proxy"
    "$PYTHON" - "$work/dl/keda.zip" "$work/dl/scaledobjects.yaml" <<'PY' || die "no ScaledObject CRD in KEDA's module"
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    name = next(n for n in z.namelist() if n.endswith("config/crd/bases/keda.sh_scaledobjects.yaml"))
    open(sys.argv[2], "wb").write(z.read(name))
PY
    "$PYTHON" "$REPO/scripts/kubernetes/schemas.py" crd "$work/dl/scaledobjects.yaml" - "$work" >&2 \
        || die "converting KEDA's ScaledObject CRD failed"
    rm -rf "$work/dl" "$SCHEMAS" && mv "$work" "$SCHEMAS"
    touch "$SCHEMAS/.complete"
}

# Two clones installing at once (the suite runs in parallel) take turns.
mkdir -p "$TOOLS_DIR"
exec 9>"$TOOLS_DIR/.kubeconform.lock"
flock 9
install
flock -u 9

args=("$@")
[ ${#args[@]} -eq 0 ] && args=(-summary "$REPO"/deploy/kubernetes/*.yaml)
exec "$BIN" -strict -kubernetes-version "$K8S_VERSION" \
    -schema-location "$SCHEMAS/{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json" \
    -schema-location "$SCHEMAS/{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json" \
    "${args[@]}"
