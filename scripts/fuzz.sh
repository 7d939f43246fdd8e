#!/usr/bin/env bash
# Coverage-guided fuzzing under libFuzzer (cargo-fuzz) for SECONDS seconds in all (default
# 600), split between the targets: two thirds for the request path
# (fuzz/fuzz_targets/request.rs), one third for the binary protocol's frame decoder
# (fuzz/fuzz_targets/tcp_frames.rs). Runs on the stable toolchain: with --sanitizer none
# cargo-fuzz passes only stable -C flags (sancov instrumentation).
#
#   scripts/fuzz.sh [SECONDS]
#
# Seeds are read from fuzz/corpus/TARGET (committed); new inputs go to fuzz/work/TARGET
# (ignored). A crash leaves its input in fuzz/artifacts/TARGET/ and fails the script;
# replay it with: cargo fuzz run --fuzz-dir fuzz --sanitizer none TARGET <file>
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}

if ! command -v cargo-fuzz >/dev/null; then
    echo "==> installing cargo-fuzz from crates.io"
    cargo install cargo-fuzz --locked
fi
if ! command -v c++ >/dev/null; then
    # libfuzzer-sys compiles libFuzzer, which is C++.
    echo "==> installing a C++ compiler"
    apt-get update -qq && apt-get install -y -qq g++
fi

# Both targets are built first, so that the time given is spent fuzzing.
# (`cargo fuzz build` takes one target or none, which builds every target.)
cargo fuzz build --fuzz-dir fuzz --sanitizer none

request_seconds=$((seconds * 2 / 3))
frames_seconds=$((seconds - request_seconds))

mkdir -p fuzz/work/request fuzz/work/tcp_frames
echo "==> fuzzing the request path for ${request_seconds} s"
# -timeout: one input taking longer than 30 s is a hang, reported like a crash (generous:
# the machine may be busy; a plugin call is cut at 500 ms).
# -rss_limit_mb: the database grows with every key the fuzzer creates.
cargo fuzz run --fuzz-dir fuzz --sanitizer none request \
    fuzz/work/request fuzz/corpus/request -- \
    -max_total_time="$request_seconds" -timeout=30 -rss_limit_mb=4096 -max_len=8192 \
    -print_final_stats=1

echo "==> fuzzing the binary protocol's frame decoder for ${frames_seconds} s"
cargo fuzz run --fuzz-dir fuzz --sanitizer none tcp_frames \
    fuzz/work/tcp_frames fuzz/corpus/tcp_frames -- \
    -max_total_time="$frames_seconds" -timeout=10 -rss_limit_mb=2048 -max_len=8192 \
    -print_final_stats=1
