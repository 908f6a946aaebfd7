#!/usr/bin/env bash
# The whole test suite, in one command: `bash tests/run.sh` from anywhere in the repo.
#   1. a virtualenv at .venv with tests/python/requirements.txt (pinned nats-py, pytest),
#   2. cargo build --workspace --all-targets, then cargo test --workspace,
#   3. the Python interop tests (nats-py and raw sockets) against target/debug/isthmus.
# Stops at the first step that fails and exits non-zero.
# ISTHMUS_PEER=nats-server (NATS tests) or ISTHMUS_PEER=mosquitto (MQTT tests) runs the Python
# tests against Debian's nats-server or mosquitto instead (to check
# the tests themselves against the reference server); extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

venv=.venv
requirements=tests/python/requirements.txt
if ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
  echo "== creating virtualenv $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
fi
# Reinstall only when the pinned requirements change (keeps repeated runs fast).
stamp="$venv/.requirements.sha256"
want=$(sha256sum "$requirements" | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  echo "== pip install -r $requirements"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
  echo "$want" >"$stamp"
fi

echo "== cargo build --workspace --all-targets"
cargo build --workspace --all-targets

echo "== cargo test --workspace"
cargo test --workspace

echo "== pytest tests/python (broker: ${ISTHMUS_PEER:-isthmus})"
export ISTHMUS_BIN="${ISTHMUS_BIN:-target/debug/isthmus}"
"$venv/bin/python" -m pytest tests/python -q "$@"
