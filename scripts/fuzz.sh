#!/usr/bin/env bash
# Runs the cargo-fuzz targets of core/fuzz, each corpus seeded from core/fuzz/seeds/<target>.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]      smoke run: every target (or those named) for
#                                              SECONDS each (default 30; CI uses 30)
#   scripts/fuzz.sh --campaign RUNS [TARGET...]
#                                              campaign: every target (or those named) for
#                                              exactly RUNS executions in one process
#                                              (libFuzzer -runs=RUNS, no -jobs/-workers), e.g.
#                                              `nice -n 19 scripts/fuzz.sh --campaign 10000000`
#
# Each run ends with one summary line per target, from libFuzzer's final stats:
#   fuzz summary <target>: execs <N> cov <edges> ft <features> exec/s <rate> corpus <units>
# which is what docs/security.md reports. New inputs go to core/fuzz/corpus/<target>
# (gitignored) and are kept between runs; crashes to core/fuzz/artifacts/<target>, and the
# script then exits non-zero. FUZZ_SANITIZER=none builds without AddressSanitizer (faster;
# the default is cargo-fuzz's, address). Stateful targets are slow (a whole handshake per
# input; their key exchanges are memoized, see core/src/fuzzing/mod.rs): on one core of this
# project's 2-core CI machine with AddressSanitizer, ike_session runs about 220-380 exec/s,
# ike_responder and cp_reply about 600, reassembly about 2400. 10 M executions of a stateful
# target therefore take 5-12 hours per core: campaign them one per core, on a bigger machine.
#
# Installs cargo-fuzz if missing. libFuzzer needs nightly rustc flags: the nightly toolchain is
# used when installed, otherwise the stable one with RUSTC_BOOTSTRAP=1.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../core/fuzz"

mode=smoke
limit=30
if [[ ${1:-} == --campaign ]]; then
    mode=campaign
    limit=${2:?--campaign needs a number of executions}
    shift 2
elif [[ ${1:-} =~ ^[0-9]+$ ]]; then
    limit=$1
    shift
fi

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
build=(--sanitizer "${FUZZ_SANITIZER:-address}")

targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
    mapfile -t targets < <(cargo "${toolchain[@]}" fuzz list)
fi
if [[ $mode == smoke ]]; then
    budget=(-max_total_time="$limit")
else
    budget=(-runs="$limit")
fi

summary=()
for target in "${targets[@]}"; do
    echo "fuzz target $target: $mode $limit"
    mkdir -p "corpus/$target" "seeds/$target"
    log=$(mktemp)
    # cargo fuzz exits non-zero on a crash; pipefail carries it out.
    cargo "${toolchain[@]}" fuzz run "${build[@]}" "$target" "corpus/$target" "seeds/$target" -- \
        "${budget[@]}" -rss_limit_mb=2048 -print_final_stats=1 2>&1 | tee "$log" | tail -n 30
    done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true)
    execs=$(grep -oE '^stat::number_of_executed_units: [0-9]+' "$log" | grep -oE '[0-9]+$' || true)
    field() { grep -oE "$1: [0-9a-zA-Z]+" <<<"$done_line" | head -n 1 | cut -d' ' -f2; }
    summary+=("fuzz summary $target: execs ${execs:-?} cov $(field cov) ft $(field ft) exec/s $(field exec/s) corpus $(field corp)")
    rm -f "$log"
done
printf '%s\n' "${summary[@]}"
