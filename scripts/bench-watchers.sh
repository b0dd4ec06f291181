#!/usr/bin/env bash
# Does watching slow the tunnel? Throughput through a tunnel that `pqvpn daemon` runs (own
# gateway), with no `pqvpn status --watch` client and with WATCHERS of them, alternated ROUNDS
# times in one run; prints each figure and the median ratio. Needs root, iproute2 and iperf3.
#   scripts/bench-watchers.sh [WATCHERS [ROUNDS [SECONDS]]]   (default 200, 3, 5)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/netns-pair.sh
source scripts/netns-pair.sh
watchers=${1:-200} rounds=${2:-3} secs=${3:-5}
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces, TUN)"; exit 1; }
command -v iperf3 >/dev/null || { echo "needs iperf3 (apt-get install iperf3)"; exit 1; }
cargo build --release --locked --bin pqvpn -q
target_dir=${CARGO_TARGET_DIR:-target}
case $target_dir in /*) ;; *) target_dir=$PWD/$target_dir ;; esac
bin=$target_dir/release/pqvpn
id=$$ gw=pqw-gw-$$ cl=pqw-cl-$$ dir=$(mktemp -d)
pids=() watch_pids=()
cleanup() {
    kill "${watch_pids[@]}" "${pids[@]}" 2>/dev/null || true
    sleep 1
    netns_pair_del "$gw" "$cl"
    rm -rf "$dir"
}
trap cleanup EXIT
netns_pair "$gw" "$cl" "$id"
psk=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
umask 077
mkdir -p "$dir/profiles"
cat >"$dir/gw.toml" <<EOT
listen = "198.18.0.1"
local_id = "gw.bench"
modes = ["hybrid"]
address = "10.99.0.1/24"
interface = "pqwgw"
[auth]
psk = "$psk"
[pool]
ipv4 = "10.99.0.10-10.99.0.20"
EOT
cat >"$dir/profiles/bench.toml" <<EOT
gateway = "198.18.0.1"
local_id = "client.bench"
remote_id = "gw.bench"
[auth]
psk = "$psk"
[network]
interface = "pqwcl"
dns = false
EOT
sock=$dir/control.sock
ip netns exec "$gw" "$bin" gateway "$dir/gw.toml" 2>"$dir/gw.log" & pids+=($!)
sleep 0.5
ip netns exec "$cl" "$bin" --socket "$sock" daemon --profiles "$dir/profiles" --state "$dir/state" \
    2>"$dir/daemon.log" & pids+=($!)
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
"$bin" --socket "$sock" connect bench
for _ in $(seq 100); do
    "$bin" --socket "$sock" status bench --json | grep -q '"state":"connected"' && break
    sleep 0.1
done
iperf() {  # -> receiver Mbit/s through the tunnel
    ip netns exec "$gw" iperf3 -s -1 -B 10.99.0.1 -p 5299 >/dev/null 2>&1 &
    sleep 0.5
    ip netns exec "$cl" iperf3 -c 10.99.0.1 -p 5299 -t "$secs" -J |
        python3 -c 'import json,sys; print("%.0f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e6))'
}
quiet=() watched=()
for _ in $(seq "$rounds"); do
    quiet+=("$(iperf)")
    for _ in $(seq "$watchers"); do
        "$bin" --socket "$sock" status bench --watch --json >/dev/null 2>&1 & watch_pids+=($!)
    done
    sleep 2
    alive=0
    for pid in "${watch_pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=$((alive + 1)); done
    [ "$alive" = "$watchers" ] || { echo "only $alive of $watchers watchers are running"; exit 1; }
    watched+=("$(iperf)")
    kill "${watch_pids[@]}" 2>/dev/null || true
    wait "${watch_pids[@]}" 2>/dev/null || true
    watch_pids=()
done
median() { printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
q=$(median "${quiet[@]}") w=$(median "${watched[@]}")
echo "| daemon tunnel, iperf3 TCP 1 stream, ${secs} s | Mbit/s (each round) | median |"
echo "| --- | --- | ---: |"
echo "| no watcher | ${quiet[*]} | $q |"
echo "| $watchers \`status --watch\` clients | ${watched[*]} | $w |"
echo
python3 -c "print('with/without watchers: %.2f' % ($w / $q))"
