#!/usr/bin/env bash
# Short cargo-fuzz run of every fuzz target, for CI: scripts/fuzz-smoke.sh [SECONDS] [TARGET...]
#
# SECONDS (default 20) is each target's fuzzing time, after one build of all targets. Works on
# the stable toolchain: with `--sanitizer none` cargo-fuzz passes no unstable flag (the
# coverage instrumentation and `--cfg fuzzing` are stable `-C` options), so no nightly and no
# RUSTC_BOOTSTRAP are needed. Debug assertions and overflow checks are on (cargo-fuzz's default).
#
# Builds into fuzz/target, apart from the main build cache. Each target fuzzes the
# corpus it has grown before in fuzz/corpus/TARGET (gitignored; new inputs go there) plus the
# committed seeds in fuzz/seeds/TARGET. A crash leaves its input in fuzz/artifacts/TARGET/ and
# makes the script exit 1 after the other targets have run.
set -euo pipefail

seconds=${1:-20}
if ! [[ $seconds =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 [SECONDS] [TARGET...]" >&2
    exit 2
fi
shift $(($# > 0 ? 1 : 0))

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
case ":$PATH:" in *":$cargo_bin:"*) ;; *) PATH="$cargo_bin:$PATH" ;; esac
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== cargo-fuzz not found: installing it"
    cargo install cargo-fuzz --version '^0.13' --locked
fi
echo "== $(cargo fuzz --version), $(rustc --version)"

export CARGO_TARGET_DIR="$root/fuzz/target"
# cargo-fuzz adds its own instrumentation flags; flags meant for the main build would only
# force a rebuild here (or break it).
unset RUSTFLAGS CARGO_BUILD_RUSTFLAGS CARGO_ENCODED_RUSTFLAGS

if (($# > 0)); then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

logs="$CARGO_TARGET_DIR/smoke-logs"
mkdir -p "$logs"

# One build of all targets (they share every dependency); `cargo fuzz run` then finds it fresh.
build_start=$SECONDS
if ! cargo fuzz build --sanitizer none >"$logs/build.log" 2>&1; then
    cat "$logs/build.log" >&2
    echo "== build FAILED" >&2
    exit 1
fi
echo "== build of all targets: $((SECONDS - build_start)) s"
failed=()
summary=()
for target in "${targets[@]}"; do
    corpus=("fuzz/corpus/$target")
    mkdir -p "${corpus[0]}"
    [[ -d fuzz/seeds/$target ]] && corpus+=("fuzz/seeds/$target")
    args=(-max_total_time="$seconds" -timeout=10 -print_final_stats=1)
    [[ -f fuzz/dicts/$target.dict ]] && args+=(-dict="fuzz/dicts/$target.dict")
    log="$logs/$target.log"
    echo "== $target: ${seconds} s (log: ${log#"$root"/})"
    status=ok
    if ! cargo fuzz run "$target" --sanitizer none "${corpus[@]}" -- "${args[@]}" >"$log" 2>&1; then
        status=FAILED
        failed+=("$target")
        # The panic or libFuzzer's reason, and where the input went.
        grep -E -A3 "panicked at|ERROR: libFuzzer|==[0-9]+== ERROR" "$log" | head -n 12 || true
        grep -E "Test unit written to|Reproduce with|cargo fuzz (run|tmin)" "$log" || tail -n 20 "$log"
    fi
    runs=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+).*/\1/p' "$log" | tail -n 1 || true)
    rate=$(sed -nE 's/^stat::average_exec_per_sec: *([0-9]+).*/\1/p' "$log" | tail -n 1 || true)
    cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[0-9a-zA-Z]+' "$log" | tail -n 1 || true)
    secs=$(sed -nE 's/^Done [0-9]+ runs in ([0-9]+) second.*/\1/p' "$log" | tail -n 1 || true)
    summary+=("$(printf '%-18s %-7s runs=%-9s time=%-5s exec/s=%-7s %s' \
        "$target" "$status" "${runs:-?}" "${secs:-?}s" "${rate:-?}" "$cov")")
done

echo "== summary (total $((SECONDS)) s)"
printf '%s\n' "${summary[@]}"
if ((${#failed[@]} > 0)); then
    echo "== FAILED: ${failed[*]}: inputs in fuzz/artifacts/<target>/; replay one with" >&2
    echo "   cargo fuzz run <target> --sanitizer none fuzz/artifacts/<target>/<file>" >&2
    echo "   and shrink it with cargo fuzz tmin <target> --sanitizer none fuzz/artifacts/<target>/<file>" >&2
    exit 1
fi
