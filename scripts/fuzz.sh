#!/usr/bin/env bash
# Coverage-guided fuzzing of the request path: fuzz/fuzz_targets/request.rs under libFuzzer
# (cargo-fuzz), for SECONDS seconds (default 600). Runs on the stable toolchain: with
# --sanitizer none cargo-fuzz passes only stable -C flags (sancov instrumentation).
#
#   scripts/fuzz.sh [SECONDS]
#
# Seeds are read from fuzz/corpus/request (committed); new inputs go to fuzz/work/request
# (ignored). A crash leaves its input in fuzz/artifacts/request/ and fails the script;
# replay it with: cargo fuzz run --fuzz-dir fuzz --sanitizer none request <file>
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

mkdir -p fuzz/work/request
echo "==> fuzzing the request path for ${seconds} s"
# -timeout: one input taking longer than 30 s is a hang, reported like a crash (generous:
# the machine may be busy; a plugin call is cut at 500 ms).
# -rss_limit_mb: the database grows with every key the fuzzer creates.
cargo fuzz run --fuzz-dir fuzz --sanitizer none request \
    fuzz/work/request fuzz/corpus/request -- \
    -max_total_time="$seconds" -timeout=30 -rss_limit_mb=4096 -max_len=8192 \
    -print_final_stats=1
