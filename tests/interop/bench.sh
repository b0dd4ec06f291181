#!/usr/bin/env bash
# tests/interop/bench.sh - pqvpn next to strongSwan 6.1 on the interop testbed:
# IKE handshake wire time and iperf3 TCP throughput through the tunnel.
#
# Usage (root):  tests/interop/bench.sh
# A benchmark, not a test: it prints numbers, side by side, and a markdown table
# for docs/benchmarks.md. A measurement that fails prints "failed: reason" in
# its row; the exit status is the number of failed measurements (0: all ran).
#
#  1. Handshake wire time, hybrid x25519 + ML-KEM-768, PSK, against the same
#     strongSwan responder: pqvpn client and strongSwan initiator, RUNS each
#     after one warm-up, alternating (so drift from other load on the machine
#     hits both alike).
#     Measured on the wire from a capture on the client's veth: first
#     IKE_SA_INIT request .. last IKE_AUTH response (last fragment). Process
#     start-up, key generation before the first packet and installing the
#     tunnel afterwards are outside the span.
#  2. iperf3, one TCP stream client -> gateway for SECONDS_PER_RUN, Mbit/s as
#     counted by the receiver: pqvpn client <-> strongSwan gateway, strongSwan
#     client <-> strongSwan gateway, pqvpn client <-> `pqvpn gateway`, and the
#     bare veth without a tunnel.
#
# Environment:
#   RUNS             handshakes per initiator (default 20)
#   SECONDS_PER_RUN  iperf3 duration per row (default 10)
#   PQVPN            pqvpn binary (default: target/release/pqvpn, rebuilt first)
#   BENCH_LOGS       log directory (default: a new /tmp/pqb-bench.XXXXXX, kept)
#   PQI_PREFIX       namespace/state prefix (default pqb: namespaces pqb-gw and
#                    pqb-cl, so it runs next to tests/interop/run.sh's pqi-*)
#   SW_ROOT, SW_SUITE, SW_MIRROR as for run.sh (the strongSwan chroot is shared)
# Needs tcpdump and iperf3 on the host (installed with apt-get if missing).
set -uo pipefail

BENCH_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PQI_PREFIX=${PQI_PREFIX:-pqb}
# run.sh only defines its functions and variables when sourced.
# shellcheck source=run.sh
source "$BENCH_HERE/run.sh"
log() { printf '[bench] %s\n' "$*" >&2; }

RUNS=${RUNS:-20}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer"
[[ $SECONDS_PER_RUN =~ ^[1-9][0-9]*$ ]] || die "SECONDS_PER_RUN must be a positive integer"
IPERF_PORT=5201
# A TUN name of its own (the tests' client uses pqi0) keeps the two apart in
# logs and in pqvpn's state directory, /run/pqvpn/state.
BENCH_TUN=${PQI_PREFIX}0
# Profile stems name the control sockets /run/pqvpn/<stem>.sock (host-wide too).
HS_NAME=bench-hs TP_NAME=bench-tput PQGW_CL_NAME=bench-pqgw

FAILED=0
CAP_PID="" IPERF_PID=""

# ---------------------------------------------------------------- helpers
need_tools() {
    local missing=() t
    for t in tcpdump iperf3; do command -v "$t" >/dev/null || missing+=("$t"); done
    [ ${#missing[@]} = 0 ] && return 0
    log "installing ${missing[*]} on the host"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 ||
        { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null; } ||
        die "cannot install ${missing[*]}"
}

# bench_profile TEMPLATE OUT [pushed]: a pqvpn profile with our TUN name. With
# "pushed" the client routes the pqvpn gateway's net, which the gateway also
# pushes as INTERNAL_IP4_SUBNET; accept_pushed_routes = true takes the pushed
# one too (ignored by default) and pqvpn installs one route for both.
bench_profile() {
    local tpl=$1 out=$2
    write_pqvpn "$tpl" "$out"
    [ "$tpl" = client.toml.in ] || return 0
    sed -i "s/^interface = \".*\"/interface = \"$BENCH_TUN\"/" "$out"
    grep -q "^interface = \"$BENCH_TUN\"" "$out" || die "cannot set the TUN name in $out"
    if [ "${3:-}" = pushed ]; then
        sed -i "s|^routes = .*|routes = [\"$PQGW_NET\"]|" "$out"
        grep -qF "routes = [\"$PQGW_NET\"]" "$out" || die "cannot set the routes in $out"
        sed -i "s|^\[network\]$|[network]\naccept_pushed_routes = true|" "$out"
        grep -q "^accept_pushed_routes = true" "$out" || die "cannot accept pushed routes in $out"
    fi
}

# cap_start PCAP: tcpdump on the client's veth, IKE ports only. -U and
# --immediate-mode hand every packet to the file at once (no 1 s ring-buffer
# timeout), -Z root keeps it writing as root (Debian drops to user tcpdump),
# 128 bytes reach well past the IKE header.
cap_start() {
    local pcap=$1 i
    ip netns exec "$NS_CL" tcpdump -i veth-cl -n -U --immediate-mode -Z root -s 128 -w "$pcap" \
        'udp port 500 or udp port 4500' </dev/null >"$pcap.log" 2>&1 &
    CAP_PID=$!
    for i in $(seq 50); do
        grep -q "listening on" "$pcap.log" 2>/dev/null && return 0
        [ -d "/proc/$CAP_PID" ] || break
        sleep 0.1
    done
    log "tcpdump did not start: $(tail -1 "$pcap.log")"
    cap_stop
    return 1
}

# SIGINT: tcpdump drains what it has, flushes the file and exits.
cap_stop() {
    local i
    [ -n "$CAP_PID" ] || return 0
    kill -INT "$CAP_PID" 2>/dev/null
    for i in $(seq 30); do [ -d "/proc/$CAP_PID" ] || break; sleep 0.1; done
    stop_pid "$CAP_PID"
    CAP_PID=""
}

# hs_time PCAP: prints "MS DATAGRAMS INITIATOR_MS RESPONDER_MS" for the first
# IKE handshake in the capture, or an error on stderr. MS is the wire time;
# each gap between two datagrams of the span counts for the side that sent the
# later one (INITIATOR_MS: turning a response into the next request, sending
# fragments; RESPONDER_MS: the rest, incl. the veth).
hs_time() {
    python3 - "$1" <<'EOF'
import struct, sys

def fail(msg):
    print(msg, file=sys.stderr)
    sys.exit(1)

data = open(sys.argv[1], "rb").read()
if len(data) < 24:
    fail("empty capture")
magics = {b"\xd4\xc3\xb2\xa1": ("<", 1e6), b"\xa1\xb2\xc3\xd4": (">", 1e6),
          b"\x4d\x3c\xb2\xa1": ("<", 1e9), b"\xa1\xb2\x3c\x4d": (">", 1e9)}
if data[:4] not in magics:
    fail("not a pcap file (pcapng?)")
end, scale = magics[data[:4]]
linktype = struct.unpack(end + "I", data[20:24])[0] & 0x0FFFFFF
off, first, last, n = 24, None, None, 0
prev = None
gaps = [0.0, 0.0]                           # [initiator, responder]
gaps_last = None
while off + 16 <= len(data):
    sec, frac, incl, _orig = struct.unpack(end + "IIII", data[off:off + 16])
    pkt = data[off + 16:off + 16 + incl]
    off += 16 + incl
    t = sec + frac / scale
    if linktype == 1:                       # Ethernet, maybe one VLAN tag
        l3, etype = 14, pkt[12:14]
        if etype == b"\x81\x00":
            l3, etype = 18, pkt[16:18]
    elif linktype == 113:                   # Linux cooked v1 (-i any)
        l3, etype = 16, pkt[14:16]
    elif linktype == 276:                   # Linux cooked v2
        l3, etype = 20, pkt[0:2]
    else:
        fail(f"unsupported link type {linktype}")
    ip = pkt[l3:]
    if etype != b"\x08\x00" or len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 17:
        continue
    if struct.unpack(">H", ip[6:8])[0] & 0x1FFF:
        continue                            # not the first IP fragment: no UDP header
    ihl = (ip[0] & 15) * 4
    if len(ip) < ihl + 8:
        continue
    sport, dport = struct.unpack(">HH", ip[ihl:ihl + 4])
    ike = ip[ihl + 8:]
    if 4500 in (sport, dport):
        if ike[:1] == b"\xff" and len(ike) == 1:
            continue                        # NAT-T keepalive
        if ike[:4] != b"\0\0\0\0":
            continue                        # ESP (non-zero SPI)
        ike = ike[4:]                       # non-ESP marker
    elif 500 not in (sport, dport):
        continue
    if len(ike) < 28:
        continue
    exch, flags = ike[18], ike[19]
    response = flags & 0x20
    if first is None:
        if exch == 34 and not response:     # IKE_SA_INIT request
            first = t
        else:
            continue
    n += 1
    if prev is not None:
        gaps[1 if response else 0] += t - prev
    prev = t
    if exch == 35 and response:             # IKE_AUTH response (each fragment)
        last, n_last, gaps_last = t, n, list(gaps)
if first is None:
    fail("no IKE_SA_INIT request in the capture")
if last is None:
    fail("no IKE_AUTH response in the capture")
print(f"{(last - first) * 1e3:.3f} {n_last} {gaps_last[0] * 1e3:.3f} {gaps_last[1] * 1e3:.3f}")
EOF
}

# stats V...: "median min max" (3 decimals).
stats() {
    python3 -c '
import statistics, sys
v = [float(x) for x in sys.argv[1:]]
print(f"{statistics.median(v):.3f} {min(v):.3f} {max(v):.3f}")' "$@"
}

# ratio A B [DIGITS]: A/B or "-".
ratio() {
    awk -v a="$1" -v b="$2" -v d="${3:-2}" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "-"; else printf "%.*f\n", d, a / b }'
}

# gw_idle: the strongSwan responder holds no IKE SA (waits up to 5 s).
gw_idle() {
    local i
    for i in $(seq 25); do
        grep -q "rw: #" <<<"$(sw_ctl gw --list-sas 2>&1)" || return 0
        sleep 0.2
    done
    return 1
}

# pq_down NAME PID: orderly `pqvpn down` (INFORMATIONAL Delete), then wait for the exit.
pq_down() {
    local name=$1 pid=$2 i
    timeout 10 ip netns exec "$NS_CL" "$PQVPN" down "$name" >/dev/null 2>&1
    for i in $(seq 50); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
    stop_pid "$pid"
}

# pq_why LOG: why a pqvpn process did not get there, from its log.
pq_why() {
    local why
    why=$(grep -iE 'error|fail' "$1" 2>/dev/null | tail -1)
    [ -n "$why" ] || why=$(tail -1 "$1" 2>/dev/null)
    echo "${why:-no output, see $1}"
}

# wait_udp NETNS ADDR:PORT: a UDP socket is bound there (up to 5 s).
wait_udp() {
    local i
    for i in $(seq 50); do
        ip netns exec "$1" ss -uln 2>/dev/null | grep -qF " $2 " && return 0
        sleep 0.1
    done
    return 1
}

# ---------------------------------------------------------------- handshakes
# Per initiator X (PQ: pqvpn, SW: strongSwan), one entry per good run: HS_X wire
# ms, HS_X_N IKE datagrams, HS_X_I / HS_X_R initiator / responder ms (hs_time);
# HS_X_FAILS failed runs, HS_X_ERR the last failure.
HS_PQ=() HS_PQ_N=() HS_PQ_I=() HS_PQ_R=() HS_PQ_FAILS=0 HS_PQ_ERR="" HS_PQ_OWN=()
HS_SW=() HS_SW_N=() HS_SW_I=() HS_SW_R=() HS_SW_FAILS=0 HS_SW_ERR=""

# hs_record X LABEL RUN PCAP ERR: file a finished run (ERR empty: parse PCAP).
# Run 0 is the warm-up (the first handshake after charon starts is slower): logged only.
hs_record() {
    local x=$1 label=$2 i=$3 pcap=$4 err=$5 out r
    local -n wire=HS_$x count=HS_${x}_N ini=HS_${x}_I resp=HS_${x}_R fails=HS_${x}_FAILS last_err=HS_${x}_ERR
    if [ "$i" = 0 ]; then
        out=${err:-$(hs_time "$pcap" 2>&1)}
        log "warm-up handshake $label: $out"
        return 0
    fi
    if [ -z "$err" ]; then
        if out=$(hs_time "$pcap" 2>&1); then
            read -r -a r <<<"$out"
            wire+=("${r[0]}") count+=("${r[1]}") ini+=("${r[2]}") resp+=("${r[3]}")
            log "handshake $i/$RUNS $label: ${r[0]} ms (initiator ${r[2]}, responder ${r[3]}), ${r[1]} IKE datagrams"
            return 0
        fi
        err="pcap: $out"
    fi
    fails=$((fails + 1)) last_err="run $i: $err"
    log "handshake $i/$RUNS $label failed: $err"
    return 1
}

# wait_log FILE STRING PID SECONDS: STRING shows up in FILE while PID lives.
# pqvpn prints "pqvpn: connected to ..." when the tunnel is up. Polling its log
# with bash builtins and sleep, rather than wait_connected (`pqvpn status --json`
# and python every 0.2 s), keeps the CPU free for the handshake being measured:
# on 2 cores that polling alone delayed the responder by milliseconds.
wait_log() {
    local file=$1 str=$2 pid=$3 i s
    for i in $(seq $(($4 * 50))); do
        s=""
        IFS= read -r -d '' s <"$file" 2>/dev/null
        [[ $s == *"$str"* ]] && return 0
        [ -d "/proc/$pid" ] || return 1
        sleep 0.02
    done
    return 1
}

# One pqvpn handshake (run $1): up, wait for the tunnel, down, responder idle.
hs_pqvpn() {
    local i=$1 pcap=$WORK/hs/pqvpn-$1.pcap plog=$WORK/hs/pqvpn-$1.log err=""
    cap_start "$pcap" || { hs_record PQ pqvpn "$i" "" "tcpdump did not start"; return; }
    pq_bg "$NS_CL" "$plog" up "$WORK/$HS_NAME.toml"
    if wait_log "$plog" "pqvpn: connected to" "$PQ_PID" 20; then
        # pqvpn's own handshake_ms, from before its first datagram to after the last.
        status_json "$HS_NAME" >"$WORK/hs/pqvpn-$i.status.json"
        [ "$i" = 0 ] || HS_PQ_OWN+=("$(sed -n 's/.*"handshake_ms":\([0-9.]*\).*/\1/p' "$WORK/hs/pqvpn-$i.status.json")")
    else
        err="pqvpn did not connect: $(pq_why "$plog")"
    fi
    pq_down "$HS_NAME" "$PQ_PID"
    gw_idle || err+="${err:+; }strongSwan still holds the IKE SA after pqvpn down"
    cap_stop
    hs_record PQ pqvpn "$i" "$pcap" "$err"
}

# One strongSwan handshake (run $1): swanctl --initiate blocks until the
# CHILD_SA is up; its start-up (chroot, vici) comes before the first packet.
hs_strongswan() {
    local i=$1 pcap=$WORK/hs/strongswan-$1.pcap out err=""
    cap_start "$pcap" || { hs_record SW strongSwan "$i" "" "tcpdump did not start"; return; }
    out=$(sw_ctl cl --initiate --timeout 30 --ike sw --child net 2>&1)
    echo "$out" >"$WORK/hs/strongswan-$i.initiate.txt"
    grep -q "initiate completed successfully" <<<"$out" ||
        err="swanctl --initiate failed: $(grep -E 'failed|error' <<<"$out" | tail -1)"
    sw_ctl cl --terminate --timeout 10 --ike sw >/dev/null 2>&1
    gw_idle || err+="${err:+; }strongSwan responder still holds the IKE SA after --terminate"
    cap_stop
    hs_record SW strongSwan "$i" "$pcap" "$err"
}

# ---------------------------------------------------------------- throughput
declare -A TP=() TP_RETR=() TP_ERR=()
TP_ROWS=(pq_sw sw_sw pq_pq bare)
declare -A TP_LABEL=(
    [pq_sw]="pqvpn client -> strongSwan gateway"
    [sw_sw]="strongSwan client -> strongSwan gateway"
    [pq_pq]="pqvpn client -> pqvpn gateway"
    [bare]="bare veth (no tunnel)"
)

# run_iperf ROW ADDR: one TCP stream from the client netns to ADDR in the gw netns.
run_iperf() {
    local row=$1 addr=$2 json=$WORK/iperf-$1.json i out
    ip netns exec "$NS_GW" iperf3 -s -1 -B "$addr" -p "$IPERF_PORT" </dev/null >"$WORK/iperf-$row.server.log" 2>&1 &
    IPERF_PID=$!
    for i in $(seq 50); do
        ip netns exec "$NS_GW" ss -tln 2>/dev/null | grep -qF " $addr:$IPERF_PORT " && break
        sleep 0.1
    done
    timeout $((SECONDS_PER_RUN + 30)) ip netns exec "$NS_CL" \
        iperf3 -c "$addr" -p "$IPERF_PORT" -P 1 -t "$SECONDS_PER_RUN" --connect-timeout 5000 -J >"$json" 2>&1
    stop_pid "$IPERF_PID"
    IPERF_PID=""
    out=$(python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
if d.get("error"):
    sys.exit("iperf3: " + d["error"])
mbps = d["end"]["sum_received"]["bits_per_second"] / 1e6
print("%.0f %s" % (mbps, d["end"]["sum_sent"].get("retransmits", "-")))' "$json" 2>&1)
    if [ $? = 0 ]; then
        read -r "TP[$row]" "TP_RETR[$row]" <<<"$out"
        log "iperf3 ${TP_LABEL[$row]}: ${TP[$row]} Mbit/s, ${TP_RETR[$row]} retransmits"
    else
        TP_ERR[$row]=$(tail -1 <<<"$out")
        log "iperf3 ${TP_LABEL[$row]} failed: ${TP_ERR[$row]}"
    fi
}

tp_fail() { TP_ERR[$1]=$2; log "${TP_LABEL[$1]}: $2"; }

# tp_pqvpn ROW NAME ADDR: pqvpn client up with $WORK/NAME.toml, iperf3 to ADDR, down.
tp_pqvpn() {
    local row=$1 name=$2 addr=$3
    pq_bg "$NS_CL" "$WORK/$name.log" up "$WORK/$name.toml"
    if wait_connected "$name" "$PQ_PID" 20; then
        run_iperf "$row" "$addr"
    else
        tp_fail "$row" "pqvpn did not connect: $(pq_why "$WORK/$name.log")"
    fi
    pq_down "$name" "$PQ_PID"
}

tp_pq_sw() {
    bench_profile client.toml.in "$WORK/$TP_NAME.toml"
    tp_pqvpn pq_sw "$TP_NAME" "$GW_INNER"
    gw_idle || log "strongSwan still holds the IKE SA after pqvpn down"
}

tp_sw_sw() {
    local out
    out=$(sw_ctl cl --initiate --timeout 30 --ike sw --child net 2>&1)
    if grep -q "initiate completed successfully" <<<"$out"; then
        run_iperf sw_sw "$GW_INNER"
    else
        tp_fail sw_sw "swanctl --initiate failed: $(grep -E 'failed|error' <<<"$out" | tail -1)"
    fi
    sw_ctl cl --terminate --timeout 10 --ike sw >/dev/null 2>&1
    gw_idle || log "strongSwan responder still holds the IKE SA after --terminate"
}

# `pqvpn gateway` binds 500/4500 on the gw address: the strongSwan responder must be gone.
tp_pq_pq() {
    local gw_pid
    bench_profile gateway.toml.in "$WORK/bench-gateway.toml"
    bench_profile client.toml.in "$WORK/$PQGW_CL_NAME.toml" pushed
    pq_bg "$NS_GW" "$WORK/bench-gateway.log" gateway "$WORK/bench-gateway.toml"
    gw_pid=$PQ_PID
    if ! wait_udp "$NS_GW" "$GW_ADDR:4500" || [ ! -d "/proc/$gw_pid" ]; then
        tp_fail pq_pq "pqvpn gateway did not start: $(pq_why "$WORK/bench-gateway.log")"
        stop_pid "$gw_pid"; return
    fi
    tp_pqvpn pq_pq "$PQGW_CL_NAME" "$PQGW_ADDR"
    stop_pid "$gw_pid"
}

# ---------------------------------------------------------------- output
# hs_stats X: sets HSS ("median min max" wire ms, medians of initiator ms,
# responder ms and datagrams), empty when X has no good run.
hs_stats() {
    local -n wire=HS_$1 count=HS_${1}_N ini=HS_${1}_I resp=HS_${1}_R
    HSS=()
    [ ${#wire[@]} -gt 0 ] || return 1
    read -r -a HSS <<<"$(stats "${wire[@]}") $(stats "${ini[@]}" | cut -d' ' -f1) \
$(stats "${resp[@]}" | cut -d' ' -f1) $(stats "${count[@]}" | cut -d' ' -f1 | sed 's/\.000$//')"
}

# hs_line X LABEL FORMAT: one handshake row (text or markdown).
hs_line() {
    local x=$1 label=$2 md=$3 ok
    local -n fails=HS_${x}_FAILS last_err=HS_${x}_ERR
    ok="$(( RUNS - fails ))/$RUNS"
    if ! hs_stats "$x"; then
        if [ "$md" = md ]; then echo "| $label | failed: ${last_err:-no runs} | | | | | | |"
        else printf '%-12s failed: %s\n' "$label" "${last_err:-no runs}"; fi
        return
    fi
    if [ "$md" = md ]; then
        echo "| $label | ${HSS[0]} | ${HSS[1]} | ${HSS[2]} | ${HSS[3]} | ${HSS[4]} | ${HSS[5]} | $ok |"
    else
        printf '%-12s %9s %8s %8s %9s %9s %9s %6s\n' "$label" "${HSS[@]}" "$ok"
        [ "$fails" = 0 ] || printf '%-12s failed runs: %s\n' "" "$last_err"
    fi
}

report() {
    local pq_med="" sw_med="" r hs_ratio
    hs_stats PQ && pq_med=${HSS[0]}
    hs_stats SW && sw_med=${HSS[0]}
    hs_ratio=$(ratio "$pq_med" "$sw_med")
    echo
    echo "== IKE handshake wire time: $HYBRID_IKE, PSK, against the strongSwan responder"
    echo "   first IKE_SA_INIT request .. last IKE_AUTH response, captured on $NS_CL veth-cl;"
    echo "   initiator/responder: medians of the time each side took before its datagrams"
    printf '%-12s %9s %8s %8s %9s %9s %9s %6s\n' initiator "median ms" "min ms" "max ms" \
        "init. ms" "resp. ms" datagrams ok
    hs_line PQ pqvpn text
    hs_line SW strongSwan text
    echo "ratio pqvpn/strongSwan (median wire time): $hs_ratio"
    local own=() v
    for v in "${HS_PQ_OWN[@]}"; do [ -n "$v" ] && own+=("$v"); done
    [ ${#own[@]} = 0 ] || echo "pqvpn's own handshake_ms (status --json, incl. work before the first datagram), median: $(stats "${own[@]}" | cut -d' ' -f1)"
    echo
    echo "== iperf3 TCP, 1 stream, client -> gateway, ${SECONDS_PER_RUN} s, receiver-side"
    printf '%-40s %10s %8s %10s %8s\n' path Mbit/s retrans "vs sw<->sw" "vs bare"
    for r in "${TP_ROWS[@]}"; do
        if [ -n "${TP[$r]:-}" ]; then
            printf '%-40s %10s %8s %10s %8s\n' "${TP_LABEL[$r]}" "${TP[$r]}" "${TP_RETR[$r]}" \
                "$(ratio "${TP[$r]}" "${TP[sw_sw]:-}")" "$(ratio "${TP[$r]}" "${TP[bare]:-}" 3)"
        else
            printf '%-40s failed: %s\n' "${TP_LABEL[$r]}" "${TP_ERR[$r]:-not run}"
        fi
    done

    local cpu sw_ver
    cpu="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1) (family $(sed -n 's/^cpu family[[:space:]]*: //p' /proc/cpuinfo | head -1) model $(sed -n 's/^model[[:space:]]*: //p' /proc/cpuinfo | head -1))"
    sw_ver=$(in_chroot - "" dpkg-query -W -f '${Version}' strongswan-charon 2>/dev/null)
    echo
    echo "== markdown (docs/benchmarks.md)"
    echo
    echo "**Machine:** $(nproc) CPUs, $cpu, Linux $(uname -r);"
    echo "strongSwan $sw_ver (Debian chroot, ESP datapath $DATAPATH); $("$PQVPN" --version 2>/dev/null | head -1);"
    echo "iperf3 $(iperf3 --version | awk 'NR == 1 { print $2 }'). $RUNS handshakes per initiator after one warm-up, alternating; one TCP stream for ${SECONDS_PER_RUN} s per path."
    echo
    echo "| initiator → strongSwan 6.1 responder | median ms | min ms | max ms | initiator ms | responder ms | IKE datagrams | runs |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    hs_line PQ pqvpn md
    hs_line SW strongSwan md
    echo
    echo "pqvpn/strongSwan (median wire time): **$hs_ratio**"
    echo
    echo "| path (iperf3, 1 TCP stream) | Mbit/s | TCP retransmits | vs strongSwan↔strongSwan | vs bare veth |"
    echo "| --- | ---: | ---: | ---: | ---: |"
    for r in "${TP_ROWS[@]}"; do
        if [ -n "${TP[$r]:-}" ]; then
            echo "| ${TP_LABEL[$r]//->/→} | ${TP[$r]} | ${TP_RETR[$r]} | $(ratio "${TP[$r]}" "${TP[sw_sw]:-}") | $(ratio "${TP[$r]}" "${TP[bare]:-}" 3) |"
        else
            echo "| ${TP_LABEL[$r]//->/→} | failed: ${TP_ERR[$r]:-not run} | | | |"
        fi
    done
}

# ---------------------------------------------------------------- main
bench_cleanup() {
    cap_stop
    stop_pid "$IPERF_PID"
    teardown
}

bench_main() {
    local t0=$SECONDS i ns
    need_tools
    setup_chroot
    if [ -z "${PQVPN_GIVEN:-}" ]; then
        log "building pqvpn (cargo build --release -p pqvpn-cli)"
        (cd "$REPO" && cargo build --release --locked -p pqvpn-cli) || die "build failed"
    fi
    [ -x "$PQVPN" ] || die "no pqvpn binary at $PQVPN"
    for ns in "$NS_GW" "$NS_CL"; do
        ip netns list | awk '{ print $1 }' | grep -qxF "$ns" && die "netns $ns already exists (another run?)"
    done
    for i in "$HS_NAME" "$TP_NAME" "$PQGW_CL_NAME"; do
        [ ! -S "/run/pqvpn/$i.sock" ] || die "/run/pqvpn/$i.sock exists (another bench running?)"
    done
    detect_datapath
    WORK=${BENCH_LOGS:-$(mktemp -d /tmp/pqb-bench.XXXXXX)}
    mkdir -p "$WORK/hs"
    trap 'bench_cleanup' EXIT
    trap 'exit 130' INT TERM
    log "strongSwan $(in_chroot - "" dpkg-query -W -f '${Version}' strongswan-charon), ESP datapath $DATAPATH, $("$PQVPN" --version | head -1), logs $WORK"

    ns_up || die "cannot create namespaces"
    # Bare veth first, while nothing else runs.
    log "--- iperf3 over the bare veth"
    run_iperf bare "$GW_ADDR"

    # Both initiators in the client netns, the same strongSwan responder. SW_IKE_LOGLEVEL
    # (run.sh's default 2) is lowered to 1: logging every message costs charon time.
    SW_IKE_LOGLEVEL=${BENCH_IKE_LOGLEVEL:-1}
    write_charon gw "$HYBRID_IKE" "$HYBRID_ESP"
    CL_REMOTE_TS=$GW_TS write_charon cl "$HYBRID_IKE" "$HYBRID_ESP"
    if ! start_charon gw "$NS_GW" || ! start_charon cl "$NS_CL"; then
        HS_PQ_ERR="charon did not start" HS_SW_ERR="charon did not start" HS_PQ_FAILS=$RUNS HS_SW_FAILS=$RUNS
        FAILED=$((FAILED + 2))
        tp_fail pq_sw "charon did not start"; tp_fail sw_sw "charon did not start"
    else
        bench_profile client.toml.in "$WORK/$HS_NAME.toml"
        log "--- $RUNS handshakes each (after one warm-up), pqvpn and strongSwan alternating"
        for i in $(seq 0 "$RUNS"); do
            hs_pqvpn "$i"
            hs_strongswan "$i"
        done
        [ "$HS_PQ_FAILS" = 0 ] || FAILED=$((FAILED + 1))
        [ "$HS_SW_FAILS" = 0 ] || FAILED=$((FAILED + 1))
        log "--- iperf3 through the strongSwan gateway"
        tp_pq_sw
        tp_sw_sw
    fi
    stop_charon cl
    stop_charon gw
    log "--- iperf3 through the pqvpn gateway"
    tp_pq_pq
    teardown
    for i in "${TP_ROWS[@]}"; do [ -z "${TP_ERR[$i]:-}" ] || FAILED=$((FAILED + 1)); done
    report
    log "done in $((SECONDS - t0)) s, $FAILED failed measurements, logs in $WORK"
    exit "$FAILED"
}

bench_main "$@"
