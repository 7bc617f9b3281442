#!/usr/bin/env bash
# Installs what the test suite starts by itself, only when it is missing:
#  - redis-server (Debian package), for the Redis idempotency tests;
#  - tansu, a Kafka-compatible broker in Rust, for the Kafka sink tests. It goes to
#    ~/.cache/tollgate/tansu (outside the checkout, kept between runs; about 8 minutes
#    to build once), where the tests look for it (or set TOLLGATE_TANSU);
#  - kubernetes-validate (PyPI), which validates the rendered Kubernetes manifests
#    strictly and offline; kubectl (for `kubectl kustomize`) must be on the PATH;
#  - the official PostHog and Snowplow Python SDKs, in a venv at
#    ~/.cache/tollgate/sdk-venv (or TOLLGATE_SDK_PYTHON), which the SDK tests drive.
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

SDK_VENV="${HOME:-/root}/.cache/tollgate/sdk-venv"
SDK_PACKAGES=(posthog==7.91.1 snowplow-tracker==1.1.0)
if ! "$SDK_VENV/bin/python" -c "import posthog, snowplow_tracker" >/dev/null 2>&1; then
  echo "installing the PostHog and Snowplow SDKs into $SDK_VENV" >&2
  if ! python3 -m venv "$SDK_VENV" >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    python3 -m venv "$SDK_VENV"
  fi
  "$SDK_VENV/bin/python" -m pip install -q --disable-pip-version-check "${SDK_PACKAGES[@]}"
fi
"$SDK_VENV/bin/python" -c "import posthog, snowplow_tracker; print('posthog', posthog.VERSION, '/ snowplow-tracker', snowplow_tracker.__version__)"
