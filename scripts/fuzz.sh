#!/usr/bin/env bash
# Runs every cargo-fuzz target of core/fuzz for SECONDS (default 30) each.
# Installs cargo-fuzz if missing. libFuzzer needs nightly rustc flags: the nightly toolchain is
# used when installed, otherwise the stable one with RUSTC_BOOTSTRAP=1.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../core/fuzz"
seconds=${1:-30}

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install cargo-fuzz --locked --quiet
fi
toolchain=()
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    toolchain=(+nightly)
else
    export RUSTC_BOOTSTRAP=1
fi

for target in $(cargo "${toolchain[@]}" fuzz list); do
    echo "fuzz target $target: ${seconds}s"
    mkdir -p "corpus/$target"
    cargo "${toolchain[@]}" fuzz run "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 2>&1 | tail -n 30
    # cargo fuzz exits non-zero on a crash; pipefail carries it out.
done
