#!/usr/bin/env bash
# Validates every manifest under docker/k8s/ against the Kubernetes OpenAPI schemas with
# kubernetes-validate (PyPI; it bundles the schemas, so it works offline). Installs it if
# missing. Strict: unknown fields are errors. Usage: scripts/lint-k8s.sh [k8s version]
set -euo pipefail
cd "$(dirname "$0")/.."
K8S_VERSION="${1:-${FERRY_K8S_VERSION:-1.31.0}}"
if ! python3 -c 'import kubernetes_validate' 2>/dev/null; then
    echo "lint-k8s: installing kubernetes-validate" >&2
    python3 -m pip install --quiet --user 'kubernetes-validate>=1.31'
fi
shopt -s nullglob
manifests=(docker/k8s/*.yaml)
if [ ${#manifests[@]} -eq 0 ]; then
    echo "lint-k8s: no manifests under docker/k8s/" >&2
    exit 1
fi
python3 -m kubernetes_validate --strict --kubernetes-version "$K8S_VERSION" "${manifests[@]}"
python3 scripts/k8s_identity.py "${manifests[@]}"
echo "lint-k8s: ${#manifests[@]} manifests valid for Kubernetes $K8S_VERSION (kubernetes-validate, strict)"
