#!/usr/bin/env bash
# The test command CI runs: every test of the workspace, with the tests that support both brokers
# on a real one. Unless CXPULSE_TEST_BROKERS already names a broker, starts tansu (memory storage,
# loopback only, a free port), waits until it answers, sets CXPULSE_TEST_BROKERS for the tests
# and stops tansu by its pid on exit.
#
# With cargo-nextest installed (CI has it) the tests run as one pool across every test binary,
# CXPULSE_TEST_THREADS at a time (default 4: most of them wait on processes, brokers and
# Prometheus rather than compute), then the doc tests; without it, `cargo test --workspace`.
# Arguments go to the test runner (`--test e2e alerting::`).
set -euo pipefail
cd "$(dirname "$0")/.."

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if [[ -z "${CXPULSE_TEST_BROKERS:-}" ]]; then
  if ! command -v tansu >/dev/null 2>&1; then
    echo "scripts/test.sh: tansu is not on the PATH; install it with" \
      "\`cargo install tansu --version 0.6.0 --locked --features dynostore\`" \
      "or name a running broker in CXPULSE_TEST_BROKERS" >&2
    exit 1
  fi
  tansu_log=$(mktemp)
  tansu_pid=""
  stop_tansu() {
    if [[ -n "$tansu_pid" ]]; then
      kill "$tansu_pid" 2>/dev/null || true
      wait "$tansu_pid" 2>/dev/null || true
    fi
    rm -f "$tansu_log"
  }
  trap stop_tansu EXIT
  # A port nobody listens on; tries another if tansu cannot bind it (someone took it meanwhile).
  for _ in 1 2 3 4 5; do
    port=$((20000 + RANDOM % 40000))
    listening "$port" && continue
    tansu broker \
      --storage-engine memory://tansu/ \
      --listener-url "tcp://127.0.0.1:$port" \
      --advertised-listener-url "tcp://127.0.0.1:$port" >"$tansu_log" 2>&1 &
    tansu_pid=$!
    for _ in $(seq 1 100); do
      listening "$port" && break
      kill -0 "$tansu_pid" 2>/dev/null || break
      sleep 0.1
    done
    if listening "$port"; then
      break
    fi
    kill "$tansu_pid" 2>/dev/null || true
    wait "$tansu_pid" 2>/dev/null || true
    tansu_pid=""
  done
  if [[ -z "$tansu_pid" ]]; then
    echo "scripts/test.sh: tansu did not answer on loopback within 10 s:" >&2
    cat "$tansu_log" >&2
    exit 1
  fi
  echo "scripts/test.sh: $(tansu --version) on 127.0.0.1:$port (pid $tansu_pid)"
  export CXPULSE_TEST_BROKERS="127.0.0.1:$port"
fi

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast --test-threads "${CXPULSE_TEST_THREADS:-4}" "$@"
  if [[ $# -eq 0 ]]; then
    cargo test --workspace --doc
  fi
else
  cargo test --workspace "$@"
fi
