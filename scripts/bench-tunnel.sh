#!/usr/bin/env bash
# Throughput through the pqvpn tunnel (own client <-> own gateway) and over the bare veth, and
# the client's peak RSS, side by side in one run. Needs root, iproute2 and iperf3.
#   scripts/bench-tunnel.sh [SECONDS]        (default 10 s per iperf3 run)
# Everything runs in two network namespaces created here and removed on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/netns-pair.sh
source scripts/netns-pair.sh
secs=${1:-10}
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces, TUN)"; exit 1; }
command -v iperf3 >/dev/null || { echo "needs iperf3 (apt-get install iperf3)"; exit 1; }
cargo build --release --locked --bin pqvpn -q
bin=$PWD/target/release/pqvpn
id=$$ gw=pqb-gw-$$ cl=pqb-cl-$$ dir=$(mktemp -d)
cleanup() {
    kill "${pids[@]}" 2>/dev/null || true
    sleep 1
    netns_pair_del "$gw" "$cl"
    rm -rf "$dir"
}
pids=()
trap cleanup EXIT
netns_pair "$gw" "$cl" "$id"
psk=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
umask 077
cat >"$dir/gw.toml" <<EOT
listen = "198.18.0.1"
local_id = "gw.bench"
modes = ["hybrid"]
address = "10.99.0.1/24"
interface = "pqbgw"
[auth]
psk = "$psk"
[pool]
ipv4 = "10.99.0.10-10.99.0.20"
EOT
cat >"$dir/bench-$id.toml" <<EOT
gateway = "198.18.0.1"
local_id = "client.bench"
remote_id = "gw.bench"
[auth]
psk = "$psk"
[network]
interface = "pqbcl"
dns = false
EOT
iperf() {  # NS DEST -> receiver Mbit/s
    ip netns exec "$gw" iperf3 -s -1 -B "$2" -p 5299 >/dev/null 2>&1 &
    sleep 0.5
    ip netns exec "$1" iperf3 -c "$2" -p 5299 -t "$secs" -J |
        python3 -c 'import json,sys; print("%.0f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e6))'
}
bare=$(iperf "$cl" 198.18.0.1)
ip netns exec "$gw" "$bin" gateway "$dir/gw.toml" 2>"$dir/gw.log" & pids+=($!)
sleep 0.5
ip netns exec "$cl" "$bin" up "$dir/bench-$id.toml" 2>"$dir/cl.log" & pids+=($!)
client=$!
for _ in $(seq 100); do grep -q connected "$dir/cl.log" 2>/dev/null && break; sleep 0.1; done
grep -q connected "$dir/cl.log" || { cat "$dir/cl.log"; exit 1; }
tunnel=$(iperf "$cl" 10.99.0.1)
rss=$(awk '/VmHWM/ { print $2 }' "/proc/$client/status")
cpu_line=$(awk '{ print $14 + $15 }' "/proc/$client/stat")
echo "| path | iperf3 TCP, 1 stream, ${secs} s |"
echo "| --- | ---: |"
echo "| bare veth | ${bare} Mbit/s |"
echo "| pqvpn client <-> pqvpn gateway (hybrid, ESP AES-GCM-256 in UDP) | ${tunnel} Mbit/s |"
echo
echo "client peak RSS (VmHWM): $((rss / 1024)).$(( (rss % 1024) * 10 / 1024 )) MiB; client CPU ticks: $cpu_line"
