#!/usr/bin/env bash
# Installs what the test suite starts by itself, only when it is missing:
#  - redis-server (Debian package), for the Redis idempotency tests;
#  - tansu, a Kafka-compatible broker in Rust, for the Kafka sink tests. It goes to
#    ~/.cache/tollgate/tansu (outside the checkout, kept between runs; about 8 minutes
#    to build once), where the tests look for it (or set TOLLGATE_TANSU);
#  - kubernetes-validate (PyPI), which validates the rendered Kubernetes manifests
#    strictly and offline; kubectl (for `kubectl kustomize`) must be on the PATH.
set -euo pipefail

if ! command -v redis-server >/dev/null 2>&1; then
  echo "installing redis-server" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends redis-server >/dev/null
fi
redis-server --version

TANSU_ROOT="${HOME:-/root}/.cache/tollgate/tansu"
tansu="${TOLLGATE_TANSU:-$TANSU_ROOT/bin/tansu}"
if ! "$tansu" --version >/dev/null 2>&1; then
  echo "installing the Kafka test broker (tansu 0.6.0) into $TANSU_ROOT" >&2
  # Its own target dir, removed afterwards: its build does not mix with the project's.
  CARGO_TARGET_DIR="$TANSU_ROOT/build" \
    cargo install tansu@0.6.0 --locked --features dynostore --root "$TANSU_ROOT"
  rm -rf "$TANSU_ROOT/build"
  tansu="$TANSU_ROOT/bin/tansu"
fi
"$tansu" --version

if ! command -v kubernetes-validate >/dev/null 2>&1; then
  echo "installing kubernetes-validate" >&2
  python3 -m pip install -q --disable-pip-version-check kubernetes-validate==1.37.0
fi
kubernetes-validate --version
command -v kubectl >/dev/null || { echo "kubectl is needed for the manifest test (kubectl kustomize)" >&2; exit 1; }
