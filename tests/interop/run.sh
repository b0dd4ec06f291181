#!/usr/bin/env bash
# tests/interop/run.sh - interop of pqvpn with strongSwan 6.1 (hybrid X25519 +
# ML-KEM-768, RFC 9370/9242; PQ-only ML-KEM-768) in two network namespaces.
#
# Usage (root):  tests/interop/run.sh [SCENARIO...]     (default: all)
#                tests/interop/run.sh setup              (only build the chroot)
# Scenarios: hybrid pqonly classical sw_rekey pq_rekey dpd sw_initiator fragmentation
#            gw_rekey gw_drives_rekey p384_chacha child_delete child_recreate no_pfs
#            gw_no_pfs gw_restart kill_switch
# Each prints "PASS name" or "FAIL name: reason"; the exit status is the number
# of failures (0: all passed).
#
# strongSwan runs from a Debian trixie chroot with strongSwan 6.1 from forky
# (trixie's 6.0.1 has no ML-KEM: Debian does not build the "ml" plugin and the
# openssl plugin only has ML-KEM from 6.0.2 on). The chroot is built once by
# debootstrap (about a minute, ~320 MB) and cached in $SW_ROOT.
#
# Environment:
#   PQVPN      pqvpn binary to test (default: target/release/pqvpn, rebuilt first)
#   SW_ROOT    chroot cache (default /var/tmp/pqvpn-sw6)
#   SW_SUITE   suite strongSwan comes from (default forky), base suite trixie
#   SW_MIRROR  Debian mirror for debootstrap (default: debootstrap's)
#   KEEP_LOGS  keep the work directory with all logs even when everything passes
#   MEGABYTES  size of the TCP transfer (default 50)
#
# Addresses (only inside the namespaces; nothing touches the host's netns):
#   pqi-gw  veth-gw 198.18.0.1/24, 198.19.0.1/32 on lo (strongSwan's protected
#           net 198.19.0.0/24), strongSwan pool 198.19.99.0/24 + DNS 198.19.0.53;
#           `pqvpn gateway`: tunnel address 10.99.0.1/24, pool 10.99.0.10-200
#   pqi-cl  veth-cl 198.18.0.2/24
#
# ESP: pqvpn does userspace ESP-in-UDP, so strongSwan uses `encap = yes`. If the
# kernel cannot do XFRM ESP (no CONFIG_INET_ESP / rfc4106(gcm(aes))), charon
# uses kernel-libipsec (userspace ESP on TUN ipsec0); detected automatically.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
TEMPLATES=$HERE/templates
PQVPN_GIVEN=${PQVPN:+1}
PQVPN=${PQVPN:-$REPO/target/release/pqvpn}
SW_ROOT=${SW_ROOT:-/var/tmp/pqvpn-sw6}
SW_BASE_SUITE=${SW_BASE_SUITE:-trixie}
SW_SUITE=${SW_SUITE:-forky}
SW_MIRROR=${SW_MIRROR:-}
SW_IKE_LOGLEVEL=${SW_IKE_LOGLEVEL:-2}
MEGABYTES=${MEGABYTES:-50}

# PQI_PREFIX names the namespaces and the per-instance state directory, so a
# benchmark (tests/interop/bench.sh) can run next to the tests.
PQI_PREFIX=${PQI_PREFIX:-pqi}
NS_GW=$PQI_PREFIX-gw NS_CL=$PQI_PREFIX-cl
GW_ADDR=198.18.0.1 CL_ADDR=198.18.0.2
GW_TS=198.19.0.0/24 GW_INNER=198.19.0.1
POOL=198.19.99.0/24 POOL_DNS=198.19.0.53
PQGW_ADDR=10.99.0.1 PQGW_NET=10.99.0.0/24 PQGW_POOL=10.99.0.10-10.99.0.200 PQGW_DNS=10.99.0.53
GW_ID=gw.test CL_ID=client.test
PSK=pqvpn-interop-test-psk-not-a-secret

HYBRID_IKE=aes256gcm16-prfsha384-x25519-ke1_mlkem768
PQONLY_IKE=aes256gcm16-prfsha384-mlkem768
CLASSIC_IKE=aes256gcm16-prfsha384-x25519
# The first CHILD_SA (in IKE_AUTH) never does a key exchange; the KE methods
# only matter for CHILD_SA rekeying (CREATE_CHILD_SA + IKE_FOLLOWUP_KE).
HYBRID_ESP=aes256gcm16-x25519-ke1_mlkem768,aes256gcm16
PQONLY_ESP=aes256gcm16-mlkem768,aes256gcm16
CLASSIC_ESP=aes256gcm16-x25519,aes256gcm16

STATE=$SW_ROOT/opt/$PQI_PREFIX   # host view; the chroot sees /opt/$PQI_PREFIX
CSTATE=/opt/$PQI_PREFIX
PKGS=(strongswan-charon strongswan-swanctl libcharon-extra-plugins)
ALL_SCENARIOS=(hybrid pqonly classical sw_rekey pq_rekey dpd gw_restart kill_switch sw_initiator fragmentation gw_rekey gw_drives_rekey p384_chacha child_delete child_recreate no_pfs gw_no_pfs)

log() { printf '[interop] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 100; }
[ "$(id -u)" = 0 ] || die "must run as root"

# ---------------------------------------------------------------- chroot
# Run a command inside the chroot. $1: netns name or "-"; $2: host directory to
# bind over the chroot's /run, or "". `ip netns exec` and `unshare -m` give the
# command a private mount namespace, so the mounts never leak to the host. With
# IN_CHROOT_EXEC=1 the calling subshell is replaced, so $! is the final pid.
in_chroot() {
    local ns=$1 run=$2; shift 2
    local pre=(unshare -m)
    [ "$ns" = - ] || pre=(ip netns exec "$ns")
    [ "${IN_CHROOT_EXEC:-}" = 1 ] && pre=(exec "${pre[@]}")
    "${pre[@]}" /bin/sh -c '
        R=$1 run=$2; shift 2
        mount -t proc proc "$R/proc" && mount --bind /dev "$R/dev" || exit 1
        if [ -n "$run" ]; then mount --bind "$run" "$R/run" || exit 1; fi
        exec chroot "$R" "$@"' sh "$SW_ROOT" "$run" "$@"
}

apt_in_chroot() {
    # Check-Valid-Until=false: testing snapshots may carry an expired Release
    # file; signatures are still verified.
    in_chroot - "" /usr/bin/env DEBIAN_FRONTEND=noninteractive \
        apt-get -q -o Acquire::Check-Valid-Until=false "$@"
}

has_mlkem() {   # the ml plugin, or an openssl plugin with the KEM API
    local p=$SW_ROOT/usr/lib/ipsec/plugins
    [ -f "$p/libstrongswan-ml.so" ] || grep -qa EVP_PKEY_encapsulate "$p/libstrongswan-openssl.so"
}

setup_chroot() {
    local t0=$SECONDS stamp="$SW_BASE_SUITE+$SW_SUITE"
    if [ -f "$SW_ROOT/.pqi-ready" ] && [ "$(cat "$SW_ROOT/.pqi-ready")" = "$stamp" ]; then
        return 0
    fi
    if ! command -v debootstrap >/dev/null; then
        log "installing debootstrap on the host"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null 2>&1 ||
            { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null; } ||
            die "cannot install debootstrap"
    fi
    if [ ! -x "$SW_ROOT/usr/bin/apt-get" ]; then
        # Restart an interrupted debootstrap (it leaves $SW_ROOT/debootstrap).
        if [ -d "$SW_ROOT/debootstrap" ] && [ "$SW_ROOT" != / ]; then rm -rf "$SW_ROOT"; fi
        [ ! -e "$SW_ROOT" ] || [ -z "$(ls -A "$SW_ROOT")" ] || die "$SW_ROOT exists and is not a chroot"
        log "debootstrap --variant=minbase $SW_BASE_SUITE $SW_ROOT ${SW_MIRROR:-(default mirror)}"
        debootstrap --variant=minbase "$SW_BASE_SUITE" "$SW_ROOT" ${SW_MIRROR:+"$SW_MIRROR"} \
            >"$SW_ROOT.debootstrap.log" 2>&1 || die "debootstrap failed, see $SW_ROOT.debootstrap.log"
    fi
    # Never start services inside the chroot.
    printf '#!/bin/sh\nexit 101\n' >"$SW_ROOT/usr/sbin/policy-rc.d"
    chmod 755 "$SW_ROOT/usr/sbin/policy-rc.d"
    local target=()
    if [ -n "$SW_SUITE" ] && [ "$SW_SUITE" != "$SW_BASE_SUITE" ]; then
        local mirror
        mirror=$(awk '$1 == "deb" { print $2; exit }' "$SW_ROOT/etc/apt/sources.list")
        [ -n "$mirror" ] || die "no mirror in $SW_ROOT/etc/apt/sources.list"
        echo "deb $mirror $SW_SUITE main" >"$SW_ROOT/etc/apt/sources.list.d/pqi.list"
        # Everything else stays on the base suite unless a dependency needs more.
        printf 'Package: *\nPin: release n=%s\nPin-Priority: 100\n' "$SW_SUITE" \
            >"$SW_ROOT/etc/apt/preferences.d/pqi"
        target=(-t "$SW_SUITE")
    fi
    log "apt-get install ${PKGS[*]} ${target[*]}"
    apt_in_chroot update >"$SW_ROOT.apt.log" 2>&1 || die "apt-get update failed, see $SW_ROOT.apt.log"
    apt_in_chroot install -y --no-install-recommends "${target[@]}" "${PKGS[@]}" >>"$SW_ROOT.apt.log" 2>&1 \
        || die "apt-get install failed, see $SW_ROOT.apt.log"
    apt_in_chroot clean
    has_mlkem || die "no ML-KEM in this strongSwan (needs >= 6.0.2 with OpenSSL >= 3.5, or the ml plugin)"
    echo "$stamp" >"$SW_ROOT/.pqi-ready"
    log "chroot ready in $((SECONDS - t0)) s: strongSwan $(in_chroot - "" dpkg-query -W -f '${Version}' strongswan-charon), $(du -sxh "$SW_ROOT" | cut -f1)"
}

# ---------------------------------------------------------------- config
# render TEMPLATE OUT: replace @KEY@ with the value of shell variable V_KEY.
render() {
    local s var
    s=$(<"$1")
    for var in ${!V_*}; do s=${s//@${var#V_}@/${!var}}; done
    [[ $s != *@[A-Z_]*@* ]] || die "unrendered placeholder in $1"
    printf '%s\n' "$s" >"$2"
}

common_vars() {
    V_GW_ADDR=$GW_ADDR V_CL_ADDR=$CL_ADDR V_GW_TS=$GW_TS V_POOL=$POOL V_POOL_DNS=$POOL_DNS
    V_GW_ID=$GW_ID V_CL_ID=$CL_ID V_PSK=$PSK
    V_PQGW_ADDR=$PQGW_ADDR V_PQGW_NET=$PQGW_NET V_PQGW_POOL=$PQGW_POOL V_PQGW_DNS=$PQGW_DNS
}

# write_charon INST IKE_PROPOSALS ESP_PROPOSALS [FRAGMENTATION]
# CL_REMOTE_TS (default $PQGW_NET, the pqvpn gateway's net) is what the initiator
# (cl) asks for; bench.sh sets $GW_TS to run it against the strongSwan responder.
write_charon() {
    local inst=$1 d=$STATE/$1
    local V_INST=$inst V_CSTATE=$CSTATE V_IKE_LOGLEVEL=$SW_IKE_LOGLEVEL V_DATAPATH_PLUGINS
    local V_IKE_PROPOSALS=$2 V_ESP_PROPOSALS=$3 V_FRAGMENTATION=${4:-yes} V_CL_REMOTE_TS=${CL_REMOTE_TS:-$PQGW_NET}
    # Scenarios set GW_IKE_REKEY, GW_CHILD_REKEY, GW_CHILD_LIFE, GW_DPD_DELAY (strongSwan
    # durations) locally.
    local V_GW_IKE_REKEY=${GW_IKE_REKEY:-0s} V_GW_CHILD_REKEY=${GW_CHILD_REKEY:-0s} \
          V_GW_CHILD_LIFE_LINE=${GW_CHILD_LIFE:+life_time = $GW_CHILD_LIFE} \
          V_GW_DPD_DELAY=${GW_DPD_DELAY:-0s} \
          V_CL_IKE_REKEY=${CL_IKE_REKEY:-0s} V_CL_CHILD_REKEY=${CL_CHILD_REKEY:-0s}
    local V_GW_ADDR V_CL_ADDR V_GW_TS V_POOL V_POOL_DNS V_GW_ID V_CL_ID V_PSK \
          V_PQGW_ADDR V_PQGW_NET V_PQGW_POOL V_PQGW_DNS
    common_vars
    mkdir -p "$d/run"
    rm -rf "$d/swanctl"
    mkdir -p "$d/swanctl"/{x509,x509ca,x509ocsp,x509aa,x509ac,x509crl,pubkey,private,rsa,ecdsa,pkcs8,pkcs12}
    [ "$DATAPATH" = kernel ] && V_DATAPATH_PLUGINS=kernel-netlink \
                             || V_DATAPATH_PLUGINS="kernel-libipsec kernel-netlink"
    render "$TEMPLATES/strongswan.conf.in" "$d/strongswan.conf"
    render "$TEMPLATES/$inst.swanctl.conf.in" "$d/swanctl/swanctl.conf"
}

# write_pqvpn TEMPLATE OUT [MODE]
# The scenario's PQ_IKE_EXTRA (lines for the profile's [ike] table) is added, and
# PQ_NETWORK replaces the [network] keys (default: a split tunnel to $GW_TS, no DNS).
write_pqvpn() {
    local V_MODE=${3:-hybrid} V_IKE_EXTRA=${PQ_IKE_EXTRA:-}
    local V_NETWORK=${PQ_NETWORK:-$'full_tunnel = false\nroutes = ["'$GW_TS$'"]\ndns = false'}
    local V_GW_ADDR V_CL_ADDR V_GW_TS V_POOL V_POOL_DNS V_GW_ID V_CL_ID V_PSK \
          V_PQGW_ADDR V_PQGW_NET V_PQGW_POOL V_PQGW_DNS
    common_vars
    render "$TEMPLATES/$1" "$2"
    chmod 600 "$2"
}

# Kernel ESP usable? Probe with an ESP-in-UDP AES-GCM state in a scratch netns.
detect_datapath() {
    local ns=pqi-probe-$$ key
    key=0x$(printf '%072d' 0)
    ip netns add "$ns" || die "ip netns add failed"
    if ip -n "$ns" xfrm state add src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x100 \
           mode tunnel aead 'rfc4106(gcm(aes))' "$key" 128 \
           encap espinudp 4500 4500 0.0.0.0 2>/dev/null; then
        DATAPATH=kernel
    else
        DATAPATH=libipsec
    fi
    ip netns del "$ns"
}

# ---------------------------------------------------------------- processes
# Pids we started: charon per instance, pqvpn processes. Only these are killed.
declare -A CHARON_PID=()
PQ_PIDS=()

sw_ctl() {      # swanctl against instance $1 (gw|cl)
    local inst=$1; shift
    local ns=$NS_GW; [ "$inst" = cl ] && ns=$NS_CL
    in_chroot "$ns" "" /usr/bin/env SWANCTL_DIR=$CSTATE/$inst/swanctl \
        STRONGSWAN_CONF=$CSTATE/$inst/strongswan.conf swanctl --uri unix://$CSTATE/$inst/run/charon.vici "$@"
}

start_charon() {    # INST NETNS
    local inst=$1 ns=$2 d=$STATE/$1 i pid
    rm -f "$d/run/"* "$d/charon.log"
    ( IN_CHROOT_EXEC=1 in_chroot "$ns" "$d/run" /usr/bin/env \
        STRONGSWAN_CONF=$CSTATE/$inst/strongswan.conf /usr/lib/ipsec/charon \
        </dev/null >"$d/charon.stdout" 2>&1 ) &
    pid=$!
    CHARON_PID[$inst]=$pid
    for i in $(seq 100); do
        [ -S "$d/run/charon.vici" ] && break
        [ -d "/proc/$pid" ] || { log "$inst charon exited, see $d/charon.log"; return 1; }
        sleep 0.1
    done
    [ -S "$d/run/charon.vici" ] || { log "$inst charon did not open its vici socket"; return 1; }
    sw_ctl "$inst" --load-all --noprompt >"$d/load.log" 2>&1 || { cat "$d/load.log" >&2; return 1; }
}

stop_pid() {    # PID: TERM, wait up to 5 s, KILL
    local pid=$1 i
    [ -n "$pid" ] && [ -d "/proc/$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 50); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
    [ -d "/proc/$pid" ] && kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null || true
}

stop_charon() {
    local inst=$1
    [ -n "${CHARON_PID[$inst]:-}" ] || return 0
    # Keep the log of this scenario next to pqvpn's.
    [ -n "${SCEN_DIR:-}" ] && cp "$STATE/$inst/charon.log" "$SCEN_DIR/charon-$inst.log" 2>/dev/null
    stop_pid "${CHARON_PID[$inst]}"
    unset "CHARON_PID[$inst]"
}

pq_bg() {       # NETNS LOG ARGS...: pqvpn in the background; sets PQ_PID
    local ns=$1 out=$2; shift 2
    ip netns exec "$ns" "$PQVPN" "$@" </dev/null >"$out" 2>&1 &
    PQ_PID=$!
    PQ_PIDS+=("$PQ_PID")
}

ns_up() {
    local ns
    for ns in "$NS_GW" "$NS_CL"; do
        ip netns add "$ns" || return 1
    done
    ip link add veth-gw netns "$NS_GW" type veth peer name veth-cl netns "$NS_CL" || return 1
    ip -n "$NS_GW" addr add "$GW_ADDR/24" dev veth-gw
    ip -n "$NS_CL" addr add "$CL_ADDR/24" dev veth-cl
    ip -n "$NS_GW" addr add "$GW_INNER/32" dev lo
    for ns in "$NS_GW" "$NS_CL"; do ip -n "$ns" link set lo up; done
    ip -n "$NS_GW" link set veth-gw up
    ip -n "$NS_CL" link set veth-cl up
}

ns_down() {
    local ns
    for ns in "$NS_GW" "$NS_CL"; do
        ip netns del "$ns" 2>/dev/null || true
    done
}

# Everything a scenario started; also the EXIT trap.
teardown() {
    local pid
    # Only our pqvpn processes: a pid reaped earlier may belong to someone else by now.
    for pid in "${PQ_PIDS[@]}"; do
        case $(cat "/proc/$pid/comm" 2>/dev/null) in pqvpn|ip) stop_pid "$pid" ;; esac
    done
    PQ_PIDS=()
    stop_charon cl
    stop_charon gw
    ns_down
}

# ---------------------------------------------------------------- helpers
FAILS=0 PASSES=0
pass() { echo "PASS $1"; PASSES=$((PASSES + 1)); }
fail() { echo "FAIL $1: $2"; FAILS=$((FAILS + 1)); log "logs: $SCEN_DIR"; KEEP_LOGS=1; }

# begin NAME: fresh namespaces and a log directory for one scenario.
begin() {
    SCEN=$1 SCEN_DIR=$WORK/$1
    mkdir -p "$SCEN_DIR"
    ns_down
    ns_up || { fail "$SCEN" "cannot create namespaces"; return 1; }
    log "--- $SCEN"
}

status_json() {     # NAME: pqvpn's status --json (client)
    ip netns exec "$NS_CL" "$PQVPN" status --json "$1" 2>/dev/null
}

# The client's routes (v4 and v6, every table) that someone added: the kernel's
# own (connected, local, and the IPv6 link-local ones that appear a moment after
# the veth goes up) are left out; a TUN left behind is checked through links.
routes_snapshot() {
    ip -n "$NS_CL" -j route show table all | python3 -c 'import json,sys
for r in json.load(sys.stdin):
    if r.get("protocol") != "kernel": print(json.dumps(r, sort_keys=True))'
}

# pqvpn's record of what it changed in the client namespace (deleted once restored).
client_state_file() {
    echo "/run/pqvpn/state/pqi0.netns-$(stat -L -c %i "/run/netns/$NS_CL").json"
}

jq_() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1], {"d": d}))' "$1"; }

# wait_connected NAME PID SECONDS: poll status until connected; 0 if connected.
wait_connected() {
    local name=$1 pid=$2 i st
    for i in $(seq $(($3 * 5))); do
        st=$(status_json "$name" | jq_ 'd["state"]' 2>/dev/null)
        [ "$st" = connected ] && return 0
        [ -d "/proc/$pid" ] || return 1
        sleep 0.2
    done
    return 1
}

# TCP transfer SRC_NS -> DST_NS:ADDR, compare octets and checksum. Sets XFER.
tcp_transfer() {
    local src_ns=$1 dst_ns=$2 addr=$3 bytes=$((MEGABYTES * 1000 * 1000)) sink_pid
    ip netns exec "$dst_ns" "$PQVPN" __tcp-sink "$addr:5201" >"$SCEN_DIR/sink.out" 2>&1 &
    sink_pid=$!
    sleep 0.3
    local retrans0; retrans0=$(ip netns exec "$src_ns" nstat -saz TcpRetransSegs 2>/dev/null | awk '/TcpRetransSegs/ { print $2 }')
    if ! timeout 120 ip netns exec "$src_ns" "$PQVPN" __tcp-source "$addr:5201" "$bytes" >"$SCEN_DIR/source.out" 2>&1; then
        stop_pid "$sink_pid"; XFER="source failed: $(tail -1 "$SCEN_DIR/source.out")"; return 1
    fi
    local i; for i in $(seq 50); do [ -d "/proc/$sink_pid" ] || break; sleep 0.1; done
    stop_pid "$sink_pid"
    local secs sum_src octets sum_dst
    read -r secs sum_src <"$SCEN_DIR/source.out"
    read -r octets sum_dst <"$SCEN_DIR/sink.out"
    if [ "$octets" != "$bytes" ] || [ "$sum_src" != "$sum_dst" ]; then
        XFER="sent $bytes octets ($sum_src), received ${octets:-?} (${sum_dst:-?})"; return 1
    fi
    local retrans1; retrans1=$(ip netns exec "$src_ns" nstat -saz TcpRetransSegs 2>/dev/null | awk '/TcpRetransSegs/ { print $2 }')
    log "$SCEN: UDP drops during the transfer: pqvpn side $(ip netns exec "$src_ns" nstat -saz UdpSndbufErrors UdpRcvbufErrors | awk 'NR > 1 { printf "%s=%s ", $1, $2 }'), strongSwan side $(ip netns exec "$dst_ns" nstat -saz UdpSndbufErrors UdpRcvbufErrors | awk 'NR > 1 { printf "%s=%s ", $1, $2 }')"
    XFER="$MEGABYTES MB in ${secs}s ($(awk -v b="$bytes" -v s="$secs" 'BEGIN { printf "%.0f", b * 8 / s / 1e6 }') Mbit/s), checksum $sum_src, $((${retrans1:-0} - ${retrans0:-0})) TCP segments retransmitted"
    return 0
}

# ---------------------------------------------------------------- scenarios
# Scenarios 1 and 2: pqvpn client -> strongSwan responder.
client_to_sw() {    # NAME MODE IKE ESP EXPECT_KE_REGEX
    local name=$1 mode=$2 ike=$3 esp=$4 expect=$5 prof st sas
    begin "$name" || return
    write_charon gw "$ike" "$esp"
    start_charon gw "$NS_GW" || { fail "$name" "charon did not start"; teardown; return; }
    prof=$SCEN_DIR/$name.toml
    write_pqvpn client.toml.in "$prof" "$mode"
    # PQ_UP_FLAGS: e.g. --no-reconnect, for the scenarios that check how a tunnel ends.
    pq_bg "$NS_CL" "$SCEN_DIR/pqvpn.log" -vv up ${PQ_UP_FLAGS:-} "$prof"
    if ! wait_connected "$name" "$PQ_PID" 20; then
        fail "$name" "pqvpn did not connect: $(grep -iE 'error|fail' "$SCEN_DIR/pqvpn.log" | tail -2 | tr '\n' ' ')"
        teardown; return
    fi
    st=$(status_json "$name"); echo "$st" >"$SCEN_DIR/status.json"
    sas=$(sw_ctl gw --list-sas 2>&1); echo "$sas" >"$SCEN_DIR/list-sas.txt"
    local reason=""
    # pqvpn's side.
    [ "$(jq_ 'd["quantum_safe"]' <<<"$st")" = True ] || reason+="pqvpn quantum_safe is not true; "
    [ "$(jq_ 'd["mode"]' <<<"$st")" = "$mode" ] || reason+="pqvpn mode != $mode; "
    local vip dns ke
    vip=$(jq_ '",".join(d["virtual_ips"])' <<<"$st")
    dns=$(jq_ '",".join(d["dns"])' <<<"$st")
    ke=$(jq_ '" + ".join(d["key_exchanges"])' <<<"$st")
    [[ $vip == 198.19.99.* ]] || reason+="pqvpn virtual_ips '$vip' not from the pool; "
    [ "$dns" = "$POOL_DNS" ] || reason+="pqvpn dns '$dns' != $POOL_DNS; "
    # strongSwan's side.
    grep -q "rw: #[0-9]*, ESTABLISHED, IKEv2" <<<"$sas" || reason+="strongSwan IKE SA not ESTABLISHED; "
    grep -qE "$expect" <<<"$sas" || reason+="strongSwan IKE algorithms do not match /$expect/; "
    grep -qE "remote '$CL_ID' @ $CL_ADDR\[[0-9]+\] \[${vip%/*}\]" <<<"$sas" || reason+="strongSwan does not show client.test with VIP ${vip%/*}; "
    local esp=${ESP_EXPECT:-AES_GCM_16-256}
    grep -q "net: #[0-9]*, reqid [0-9]*, INSTALLED, TUNNEL-in-UDP, ESP:$esp" <<<"$sas" || reason+="strongSwan CHILD_SA not INSTALLED (ESP-in-UDP $esp); "
    if [ -n "${LOG_EXPECT:-}" ]; then
        grep -qE "$LOG_EXPECT" "$STATE/gw/charon.log" || reason+="strongSwan's log lacks /$LOG_EXPECT/; "
    fi
    # strongSwan's log: config payload both ways, no retransmission (every message understood at
    # once) and, hybrid only, pqvpn's ~1249-byte IKE_INTERMEDIATE request arrived in two RFC 7383
    # fragments (our default fragment_size is 1280) and was reassembled.
    local clog=$STATE/gw/charon.log
    grep -qE "parsed IKE_AUTH request .*CPRQ\(ADDR DNS" "$clog" || reason+="strongSwan saw no CP(CFG_REQUEST) with ADDR and DNS; "
    grep -qE "generating IKE_AUTH response .*CPRP\(ADDR DNS\)" "$clog" || reason+="strongSwan sent no CP(CFG_REPLY) with ADDR and DNS; "
    grep -q "retransmit" "$clog" && reason+="strongSwan retransmitted; "
    if [ "$mode" = hybrid ]; then
        # charon's worker threads may take the two fragments in either order.
        grep -qE "received fragment #[12] of 2, reassembled fragmented IKE message" "$clog" \
            || reason+="strongSwan did not reassemble a fragmented IKE_INTERMEDIATE from pqvpn; "
    fi
    # Traffic.
    ip netns exec "$NS_CL" ping -c 3 -i 0.2 -W 2 "$GW_INNER" >"$SCEN_DIR/ping.txt" 2>&1 || reason+="ping $GW_INNER failed; "
    tcp_transfer "$NS_CL" "$NS_GW" "$GW_INNER" || reason+="TCP transfer: $XFER; "
    # Both sides counted the transfer: pqvpn's bytes_out, and strongSwan's
    # inbound CHILD_SA bytes (kernel) or what it wrote to its TUN (libipsec,
    # which does not report SA counters to swanctl).
    local bout sw_in
    sleep 1.2   # pqvpn publishes its counters once a second (STATUS_INTERVAL)
    bout=$(status_json "$name" | jq_ 'd["bytes_out"]')
    if [ "$DATAPATH" = kernel ]; then
        sw_in=$(sw_ctl gw --list-sas 2>&1 | sed -n 's/^ *in  *[0-9a-f]*[^,]*, *\([0-9]*\) bytes.*/\1/p' | head -1)
    else
        sw_in=$(ip netns exec "$NS_GW" cat /sys/class/net/ipsec0/statistics/rx_bytes 2>/dev/null)
    fi
    log "$name: counters after the transfer: pqvpn bytes_out ${bout:-?}, strongSwan in ${sw_in:-?}"
    [ "${bout:-0}" -ge $((MEGABYTES * 1000 * 1000)) ] || reason+="pqvpn bytes_out ${bout:-?} < $MEGABYTES MB; "
    [ "${sw_in:-0}" -ge $((MEGABYTES * 1000 * 1000)) ] || reason+="strongSwan inbound ${sw_in:-?} < $MEGABYTES MB; "
    # Orderly close: pqvpn's down must delete the SA at strongSwan (INFORMATIONAL Delete).
    ip netns exec "$NS_CL" "$PQVPN" down "$name" >/dev/null 2>&1 || reason+="pqvpn down failed; "
    local i; for i in $(seq 30); do [ -d "/proc/$PQ_PID" ] || break; sleep 0.2; done
    sleep 0.5
    grep -q "rw: #" <<<"$(sw_ctl gw --list-sas 2>&1)" && reason+="strongSwan still has the IKE SA after pqvpn down; "
    if [ -z "$reason" ]; then
        pass "$name"
        log "$name: $ke, vip $vip, dns $dns, handshake $(jq_ 'd["handshake_ms"]' <<<"$st") ms, $XFER"
    else
        fail "$name" "${reason%; }"
    fi
    teardown
}

scenario_hybrid() {
    client_to_sw hybrid hybrid "$HYBRID_IKE" "$HYBRID_ESP" \
        'IKEv2 SPIs|AES_GCM_16-256/PRF_HMAC_SHA2_384/CURVE_25519/KE1_ML_KEM_768'
}

scenario_pqonly() {
    client_to_sw pqonly pq-only "$PQONLY_IKE" "$PQONLY_ESP" \
        'AES_GCM_16-256/PRF_HMAC_SHA2_384/ML_KEM_768'
}

# connect_to_sw NAME MODE: strongSwan responder with the hybrid proposals (and
# the scenario's GW_* timers), pqvpn client up with the scenario's PQ_IKE_EXTRA.
# Sets PQ_PID; on failure it reports FAIL, tears down and returns 1.
connect_to_sw() {
    local name=$1 mode=$2 prof
    begin "$name" || return 1
    write_charon gw "$HYBRID_IKE" "$HYBRID_ESP"
    start_charon gw "$NS_GW" || { fail "$name" "charon did not start"; teardown; return 1; }
    prof=$SCEN_DIR/$name.toml
    write_pqvpn client.toml.in "$prof" "$mode"
    # PQ_UP_FLAGS: e.g. --no-reconnect, for the scenarios that check how a tunnel ends.
    pq_bg "$NS_CL" "$SCEN_DIR/pqvpn.log" -vv up ${PQ_UP_FLAGS:-} "$prof"
    if ! wait_connected "$name" "$PQ_PID" 20; then
        fail "$name" "pqvpn did not connect: $(grep -iE 'error|fail' "$SCEN_DIR/pqvpn.log" | tail -2 | tr '\n' ' ')"
        teardown; return 1
    fi
}

# ping_loss COUNT [TARGET [SOURCE]]: ping TARGET (default: strongSwan's
# protected address) every 0.2 s, COUNT times; prints the number of lost replies.
ping_loss() {
    local out
    out=$(ip netns exec "$NS_CL" ping -c "$1" -i 0.2 -W 1 ${3:+-I "$3"} "${2:-$GW_INNER}" 2>&1)
    echo "$out" >"$SCEN_DIR/ping.txt"
    sed -n 's/^\([0-9]*\) packets transmitted, \([0-9]*\) received.*/\1 \2/p' <<<"$out" |
        awk -v n="$1" 'NF == 2 { print $1 - $2; found = 1 } END { if (!found) print n }'
}

# sw_rekey_checks DIR CLOG SAS CONN: strongSwan's side of a rekey scenario.
# Counts the CREATE_CHILD_SA and IKE_FOLLOWUP_KE DIRs (request: strongSwan
# rekeyed, response: pqvpn did) in its log into SW_CHILD, SW_IKE, SW_FOLLOWUP,
# and adds to the caller's `reason` what fails: too few rekeys, one without ML-KEM, the
# rekeyed SAs (connection CONN in SAS) not X25519 + ML-KEM-768, a
# retransmission, an error notify.
sw_rekey_checks() {
    local dir=$1 clog=$2 sas=$3 conn=$4
    SW_CHILD=$(grep -cE "generating CREATE_CHILD_SA $dir [0-9]+ \[ (N\(REKEY_SA\) )?SA No KE TSi TSr" "$clog")
    SW_IKE=$(grep -cE "generating CREATE_CHILD_SA $dir [0-9]+ \[ SA No KE( N\(ADD_KE\))? \]$" "$clog")
    SW_FOLLOWUP=$(grep -cE "generating IKE_FOLLOWUP_KE $dir [0-9]+ \[ KE" "$clog")
    [ "$SW_CHILD" -ge 3 ] || reason+="strongSwan log shows $SW_CHILD Child SA rekey ${dir}s (< 3); "
    [ "$SW_IKE" -ge 2 ] || reason+="strongSwan log shows $SW_IKE IKE SA rekey ${dir}s (< 2); "
    [ "$SW_FOLLOWUP" -ge $((SW_CHILD + SW_IKE)) ] || reason+="strongSwan did $SW_FOLLOWUP IKE_FOLLOWUP_KE for $((SW_CHILD + SW_IKE)) rekeys (ML-KEM skipped?); "
    grep -q "$conn: #[0-9]*, ESTABLISHED, IKEv2" <<<"$sas" || reason+="strongSwan IKE SA not ESTABLISHED after the rekeys; "
    grep -q "AES_GCM_16-256/PRF_HMAC_SHA2_384/CURVE_25519/KE1_ML_KEM_768" <<<"$sas" || reason+="strongSwan's rekeyed IKE SA is not X25519 + ML-KEM-768; "
    grep -q "INSTALLED, TUNNEL-in-UDP, ESP:AES_GCM_16-256/CURVE_25519/KE1_ML_KEM_768" <<<"$sas" || reason+="strongSwan's rekeyed CHILD_SA did not use X25519 + ML-KEM-768; "
    grep -q "retransmit" "$clog" && reason+="strongSwan retransmitted; "
    grep -qE "received (NO_PROPOSAL_CHOSEN|INVALID_KE_PAYLOAD|INVALID_SYNTAX|TEMPORARY_FAILURE)" "$clog" && reason+="strongSwan received an error notify: $(grep -m1 -oE 'received (NO_PROPOSAL_CHOSEN|INVALID_KE_PAYLOAD|INVALID_SYNTAX|TEMPORARY_FAILURE)[^,]*' "$clog"); "
    return 0
}

# Scenarios 4 and 5: rekeys with ML-KEM while a ping runs every 0.2 s for 46 s.
# DRIVER sw: strongSwan rekeys (IKE SA every 20 s, Child SA every 10 s, minus
# its 10 % jitter); pqvpn: the profile's rekey_time/child_rekey_time, same times.
# Each rekey must do X25519 in CREATE_CHILD_SA and ML-KEM-768 in IKE_FOLLOWUP_KE
# (RFC 9370 §2.2.2, §2.2.4): strongSwan's esp_proposals carry ke1_mlkem768 and
# pqvpn's rekeys always use the IKE SA's own key exchanges.
rekey_under_traffic() {     # NAME DRIVER
    local name=$1 driver=$2 reason="" st sas lost
    local GW_IKE_REKEY=0s GW_CHILD_REKEY=0s PQ_IKE_EXTRA=""
    if [ "$driver" = sw ]; then
        GW_IKE_REKEY=20s GW_CHILD_REKEY=10s
    else
        PQ_IKE_EXTRA=$'rekey_time = "20s"\nchild_rekey_time = "10s"'
    fi
    connect_to_sw "$name" hybrid || return
    lost=$(ping_loss 230)
    st=$(status_json "$name"); echo "$st" >"$SCEN_DIR/status.json"
    sas=$(sw_ctl gw --list-sas 2>&1); echo "$sas" >"$SCEN_DIR/list-sas.txt"
    local clog=$STATE/gw/charon.log
    local child_n ike_n
    child_n=$(jq_ 'd["child_sa_rekeys"]' <<<"$st")
    ike_n=$(jq_ 'd["ike_sa_rekeys"]' <<<"$st")
    [ "$(jq_ 'd["state"]' <<<"$st")" = connected ] || reason+="pqvpn not connected after the rekeys; "
    [ "${child_n:-0}" -ge 3 ] || reason+="pqvpn counted ${child_n:-?} Child SA rekeys (< 3); "
    [ "${ike_n:-0}" -ge 2 ] || reason+="pqvpn counted ${ike_n:-?} IKE SA rekeys (< 2); "
    [ "${lost:-99}" -le 1 ] || reason+="$lost of 230 pings lost (> 1); "
    # strongSwan's side: who started the rekeys, and that each one did ML-KEM.
    local dir=request
    [ "$driver" = sw ] || dir=response
    sw_rekey_checks "$dir" "$clog" "$sas" rw
    log "$name: pqvpn counted $child_n Child SA and $ike_n IKE SA rekeys; strongSwan generated $SW_CHILD Child SA and $SW_IKE IKE SA CREATE_CHILD_SA ${dir}s and $SW_FOLLOWUP IKE_FOLLOWUP_KE ${dir}s; $lost of 230 pings lost"
    ip netns exec "$NS_CL" "$PQVPN" down "$name" >/dev/null 2>&1
    [ -z "$reason" ] && pass "$name" || fail "$name" "${reason%; }"
    teardown
}

scenario_sw_rekey() { rekey_under_traffic sw_rekey sw; }

# A gateway configured without ESP PFS (`esp_proposals = aes256gcm16`, a common
# strongSwan setup): both sides rekey the CHILD_SA every 10 s for 26 s. pqvpn
# offers X25519 + ML-KEM first, then the KE alone, then none (RFC 7296 §1.3.1);
# strongSwan picks none, and rekeys it starts carry no KE, which pqvpn accepts
# (require_child_pfs = false): KEYMAT from SK_d of the hybrid IKE SA (§2.17).
scenario_no_pfs() {
    local name=no_pfs reason="" st sas lost
    local GW_CHILD_REKEY=10s PQ_IKE_EXTRA='child_rekey_time = "10s"'
    local HYBRID_ESP=aes256gcm16
    connect_to_sw "$name" hybrid || return
    lost=$(ping_loss 130)
    st=$(status_json "$name"); echo "$st" >"$SCEN_DIR/status.json"
    sas=$(sw_ctl gw --list-sas 2>&1); echo "$sas" >"$SCEN_DIR/list-sas.txt"
    local clog=$STATE/gw/charon.log child_n sw_req sw_resp
    child_n=$(jq_ 'd["child_sa_rekeys"]' <<<"$st")
    sw_req=$(grep -cE "generating CREATE_CHILD_SA request [0-9]+ \[ N\(REKEY_SA\) SA No TSi TSr \]" "$clog")
    sw_resp=$(grep -cE "generating CREATE_CHILD_SA response [0-9]+ \[ SA No TSi TSr \]" "$clog")
    log "$name: pqvpn counted $child_n Child SA rekeys; strongSwan sent $sw_req rekey requests and $sw_resp responses without KE; $lost of 130 pings lost"
    [ "$(jq_ 'd["state"]' <<<"$st")" = connected ] || reason+="pqvpn not connected after the rekeys; "
    [ "${child_n:-0}" -ge 2 ] || reason+="pqvpn counted ${child_n:-?} Child SA rekeys (< 2); "
    [ $((sw_req + sw_resp)) -ge 2 ] || reason+="strongSwan's log shows $sw_req + $sw_resp rekeys without KE (< 2); "
    [ "${lost:-99}" -le 1 ] || reason+="$lost of 130 pings lost (> 1); "
    grep -q "INSTALLED, TUNNEL-in-UDP, ESP:AES_GCM_16-256" <<<"$sas" || reason+="strongSwan CHILD_SA not INSTALLED; "
    grep -q "IKE_FOLLOWUP_KE" "$clog" && reason+="an IKE_FOLLOWUP_KE without PFS; "
    grep -q "retransmit" "$clog" && reason+="strongSwan retransmitted; "
    grep -qE "received (NO_PROPOSAL_CHOSEN|INVALID_KE_PAYLOAD|INVALID_SYNTAX)" "$clog" && reason+="strongSwan received an error notify; "
    ip netns exec "$NS_CL" "$PQVPN" down "$name" >/dev/null 2>&1
    [ -z "$reason" ] && pass "$name" || fail "$name" "${reason%; }"
    teardown
}
scenario_pq_rekey() { rekey_under_traffic pq_rekey pqvpn; }

# Scenario 6: liveness checks (RFC 7296 §2.4) both ways.
# (a) strongSwan's DPD (every 2 s) gets answers from pqvpn; once pqvpn is frozen
#     (SIGSTOP, a laptop lid closing) strongSwan gives up and deletes the SA.
# (b) pqvpn's DPD (dpd_delay 2 s, 3 tries: 1 + 2 + 4 s) notices a killed
#     strongSwan, exits non-zero naming the dead peer, and restores the routes.
scenario_dpd() {
    local name=dpd reason="" st rc i before after
    local GW_DPD_DELAY=2s PQ_IKE_EXTRA=$'dpd_delay = "2s"\nretransmit_tries = 3'
    # How the dead peer ends a tunnel that does not reconnect (gw_restart: one that does).
    local PQ_UP_FLAGS=--no-reconnect
    connect_to_sw "$name" hybrid || return
    local clog=$STATE/gw/charon.log
    # (a) Idle tunnel: strongSwan's DPD requests are empty INFORMATIONALs.
    sleep 7
    local dpd_req dpd_resp
    dpd_req=$(grep -cE "generating INFORMATIONAL request [0-9]+ \[ \]" "$clog")
    dpd_resp=$(grep -cE "parsed INFORMATIONAL response [0-9]+ \[ \]" "$clog")
    log "$name: strongSwan sent $dpd_req DPD requests to the idle pqvpn, got $dpd_resp answers"
    # The newest request's answer may still be on its way (no retransmission is checked below).
    [ "$dpd_req" -ge 1 ] && [ "$dpd_resp" -ge $((dpd_req - 1)) ] || reason+="strongSwan DPD: $dpd_req requests, $dpd_resp answers; "
    [ "$(status_json "$name" | jq_ 'd["state"]')" = connected ] || reason+="pqvpn not connected during DPD; "
    kill -STOP "$PQ_PID"
    for i in $(seq 40); do grep -q "giving up after" "$clog" && break; sleep 0.5; done
    sleep 0.5
    grep -q "giving up after 3 retransmits" "$clog" || reason+="strongSwan did not give up on the frozen pqvpn; "
    grep -q "rw: #" <<<"$(sw_ctl gw --list-sas 2>&1)" && reason+="strongSwan kept the IKE SA of the frozen pqvpn; "
    kill -CONT "$PQ_PID"
    ip netns exec "$NS_CL" "$PQVPN" down "$name" >/dev/null 2>&1
    for i in $(seq 30); do [ -d "/proc/$PQ_PID" ] || break; sleep 0.2; done
    [ -d "/proc/$PQ_PID" ] && reason+="(a) pqvpn down did not end pqvpn; "
    stop_pid "$PQ_PID"
    # (b) A fresh connection; then strongSwan dies without a word.
    stop_charon gw
    mv "$SCEN_DIR/charon-gw.log" "$SCEN_DIR/charon-gw-a.log"
    start_charon gw "$NS_GW" || { fail "$name" "charon did not restart"; teardown; return; }
    before=$(routes_snapshot)
    pq_bg "$NS_CL" "$SCEN_DIR/pqvpn-b.log" -vv up $PQ_UP_FLAGS "$SCEN_DIR/$name.toml"
    if wait_connected "$name" "$PQ_PID" 20; then
        [ -f "$(client_state_file)" ] || reason+="no state file $(client_state_file) while connected; "
        kill -KILL "${CHARON_PID[gw]}"
        wait "${CHARON_PID[gw]}" 2>/dev/null
        local t0=$SECONDS
        for i in $(seq 100); do [ -d "/proc/$PQ_PID" ] || break; sleep 0.2; done
        if [ -d "/proc/$PQ_PID" ]; then
            reason+="pqvpn still runs 20 s after strongSwan was killed (dpd 2 s + 7 s of retransmissions); "
            stop_pid "$PQ_PID"
        else
            wait "$PQ_PID"; rc=$?
            log "$name: pqvpn exited $rc $((SECONDS - t0)) s after strongSwan was killed: $(tail -1 "$SCEN_DIR/pqvpn-b.log")"
            [ "$rc" != 0 ] || reason+="pqvpn exited 0 after losing the gateway; "
            grep -q "stopped answering (dead peer)" "$SCEN_DIR/pqvpn-b.log" || reason+="pqvpn's error does not name the dead peer; "
        fi
        # The routes through pqi0 vanish with the device anyway; the state file is deleted only
        # once pqvpn has undone every change it recorded.
        [ -e "$(client_state_file)" ] && reason+="state file $(client_state_file) left behind (not restored); "
        after=$(routes_snapshot)
        [ "$before" = "$after" ] || reason+="routes not restored: $(diff <(echo "$before") <(echo "$after") | tr '\n' ' '); "
        ip -n "$NS_CL" link show pqi0 >/dev/null 2>&1 && reason+="TUN pqi0 left behind; "
    else
        reason+="(b) pqvpn did not connect; "
    fi
    [ -z "$reason" ] && pass "$name" || fail "$name" "${reason%; }"
    teardown
}

# strongSwan dies without a word (kill -9) and comes back. pqvpn notices the dead peer,
# goes to `reconnecting` with that reason and keeps its routes (nothing goes out in
# clear meanwhile), retries with backoff, and is connected again with a fresh hybrid IKE
# SA soon after strongSwan returns; pings flow again. Logs the time from strongSwan's
# start to `connected`.
scenario_gw_restart() {
    local name=gw_restart reason="" st i before t0 t1 js
    local GW_DPD_DELAY=0s PQ_IKE_EXTRA=$'dpd_delay = "2s"\nretransmit_tries = 3'
    connect_to_sw "$name" hybrid || return
    [ "$(ping_loss 5)" -le 1 ] || reason+="no traffic before the restart; "
    before=$(routes_snapshot)
    kill -KILL "${CHARON_PID[gw]}"
    wait "${CHARON_PID[gw]}" 2>/dev/null
    unset "CHARON_PID[gw]"
    mv "$STATE/gw/charon.log" "$SCEN_DIR/charon-gw-a.log" 2>/dev/null
    for i in $(seq 100); do
        js=$(status_json "$name")
        st=$(jq_ 'd["state"]' <<<"$js" 2>/dev/null)
        [ "$st" = reconnecting ] && break
        sleep 0.2
    done
    if [ "$st" = reconnecting ]; then
        log "$name: $(jq_ 'd["reason"]' <<<"$js")"
        grep -q "dead peer" <<<"$js" || reason+="the reason does not name the dead peer: $js; "
        [ "$(routes_snapshot)" = "$before" ] || reason+="routes changed while reconnecting; "
        [ -f "$(client_state_file)" ] || reason+="state file gone while reconnecting; "
        ip -n "$NS_CL" link show pqi0 >/dev/null 2>&1 || reason+="TUN pqi0 gone while reconnecting; "
    else
        reason+="pqvpn not reconnecting 20 s after strongSwan died (state: $st); "
    fi
    # From charon's start (not from its configuration being loaded) to `connected`.
    t0=$(date +%s.%N)
    start_charon gw "$NS_GW" || { fail "$name" "charon did not restart"; teardown; return; }
    for i in $(seq 300); do
        st=$(status_json "$name" | jq_ 'd["state"]' 2>/dev/null)
        [ "$st" = connected ] && break
        [ -d "/proc/$PQ_PID" ] || break
        sleep 0.1
    done
    t1=$(date +%s.%N)
    if [ "$st" = connected ]; then
        log "$name: connected again $(python3 -c "print(f'{$t1 - $t0:.1f}')") s after strongSwan restarted"
        js=$(status_json "$name")
        [ "$(jq_ 'd["mode"], d["quantum_safe"], d["reconnects"]' <<<"$js")" = "('hybrid', True, 1)" ] \
            || reason+="after the reconnect: $(jq_ 'd["mode"], d["quantum_safe"], d["reconnects"]' <<<"$js"); "
        [ "$(ping_loss 5)" -le 1 ] || reason+="pings did not resume; "
        grep -q "reconnecting (attempt 1)" "$SCEN_DIR/pqvpn.log" || reason+="pqvpn did not report the reconnect; "
    else
        reason+="pqvpn not connected 30 s after strongSwan restarted (state: $st); "
    fi
    [ -z "$reason" ] && pass "$name" || fail "$name" "${reason%; }"
    teardown
}

# ---- the kill switch (issue 15): leak tests on the client's underlay
LEAK4=203.0.113.1 LEAK4_DNS=203.0.113.53 LEAK6=2001:db8:99::1 LEAK6_DNS=2001:db8:99::53
CL_ADDR6=2001:db8:18::2 GW_ADDR6=2001:db8:18::1

# A way out for the client that does not go through strongSwan's tunnel: default
# routes (v4 and v6) via the gateway's namespace, which routes nothing further. Any
# packet for an outside address that leaves veth-cl is a leak.
leak_uplink() {
    ip -n "$NS_GW" addr add "$GW_ADDR6/64" dev veth-gw nodad
    ip -n "$NS_CL" addr add "$CL_ADDR6/64" dev veth-cl nodad
    ip -n "$NS_CL" route add default via "$GW_ADDR"
    ip -n "$NS_CL" -6 route add default via "$GW_ADDR6"
}

# leak_traffic SECONDS: what a user's machine sends to outside addresses the whole
# time, IPv4 and IPv6: pings, UDP, DNS over UDP and TCP, TCP connects (runs in
# the background; sets TRAFFIC_PIDS).
leak_traffic() {
    TRAFFIC_PIDS=()
    ip netns exec "$NS_CL" ping -q -i 0.2 -w "$1" "$LEAK4" >/dev/null 2>&1 & TRAFFIC_PIDS+=($!)
    ip netns exec "$NS_CL" ping -6 -q -i 0.2 -w "$1" "$LEAK6" >/dev/null 2>&1 & TRAFFIC_PIDS+=($!)
    ip netns exec "$NS_CL" python3 -c '
import socket, sys, time
end = time.time() + float(sys.argv[1])
# A DNS query for example.com A IN.
query = bytes.fromhex("123401000001000000000000" "076578616d706c6503636f6d00" "00010001")
targets = [(socket.AF_INET, sys.argv[2], sys.argv[3]), (socket.AF_INET6, sys.argv[4], sys.argv[5])]
while time.time() < end:
    for family, host, dns in targets:
        for kind, addr in (("udp", (host, 9)), ("udp", (dns, 53)), ("tcp", (dns, 53)), ("tcp", (host, 443))):
            try:
                s = socket.socket(family, socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM)
                s.settimeout(0.05)
                if kind == "udp":
                    s.sendto(query, addr)
                else:
                    s.connect(addr)
            except OSError:
                pass
            finally:
                s.close()
    time.sleep(0.2)
' "$1" "$LEAK4" "$LEAK4_DNS" "$LEAK6" "$LEAK6_DNS" >/dev/null 2>&1 & TRAFFIC_PIDS+=($!)
}

stop_traffic() { local p; for p in "${TRAFFIC_PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; TRAFFIC_PIDS=(); }

# capture_start FILE / capture_stop: tcpdump on the client's underlay (veth-cl).
capture_start() {
    ip netns exec "$NS_CL" tcpdump -i veth-cl -n -U -w "$1" >"$1.log" 2>&1 &
    CAPTURE_PID=$!
    local i; for i in $(seq 50); do grep -q "listening on" "$1.log" 2>/dev/null && break; sleep 0.1; done
}
capture_stop() { sleep 0.3; kill -INT "$CAPTURE_PID" 2>/dev/null; wait "$CAPTURE_PID" 2>/dev/null; }

# classify PCAP: counts of the packets the client sent, by kind, as "kind=n ..."; the
# ones that are neither IKE/ESP to the gateway, ARP nor neighbour or router discovery
# (the leaks) go to PCAP.leaks.
classify() {
    local f=$1 mac count ike arp ndp total
    # Link-local housekeeping the kill switch lets out: neighbour/router discovery, and MLD
    # reports to ff02::/16 (behind their hop-by-hop header: ICMPv6 type at ip6[48]).
    local nd="icmp6 and ip6[40] >= 133 and ip6[40] <= 136"
    local mld="ip6 and dst net ff02::/16 and ip6[6] == 0 and ip6[40] == 58 and (ip6[48] == 143 or ip6[48] == 131 or ip6[48] == 132)"
    local esp="udp and dst host $GW_ADDR and (dst port 500 or dst port 4500)"
    mac=$(ip -n "$NS_CL" -j link show veth-cl | jq_ 'd[0]["address"]')
    count() { tcpdump -r "$f" -n "ether src $mac and ($1)" 2>/dev/null | wc -l; }
    total=$(count "ip or ip6 or arp")
    ike=$(count "$esp")
    arp=$(count "arp")
    ndp=$(count "($nd) or ($mld)")
    tcpdump -r "$f" -n "ether src $mac and not ($esp) and not arp and not ($nd) and not ($mld)" \
        >"$f.leaks" 2>/dev/null
    LEAKS=$(wc -l <"$f.leaks")
    local v4 v6 dns
    v4=$(grep -c " IP " "$f.leaks"); v6=$(grep -c " IP6 " "$f.leaks"); dns=$(grep -cE "\.53: |\.53 >" "$f.leaks")
    echo "sent=$total ike_esp=$ike arp=$arp ndp_mld=$ndp other=$LEAKS (ipv4 $v4, ipv6 $v6, dns $dns)"
}

nft_ruleset() { ip netns exec "$NS_CL" nft list ruleset 2>&1; }
rules_snapshot() { ip -n "$NS_CL" -4 rule; ip -n "$NS_CL" -6 rule; routes_snapshot; }

# A full tunnel (kill switch "auto": on) while the client sends to outside addresses
# the whole time (IPv4, IPv6, DNS): strongSwan is killed for 10 s and restarted, pqvpn
# reconnects; then pqvpn itself is SIGKILLed (the TUN and its routes vanish with it,
# the kill switch stays: fail closed). The capture on veth-cl must hold nothing but
# IKE/ESP to the gateway (and ARP/NDP). A new run adopts the crashed run's kill switch
# and lifts it on `down`; after another SIGKILL, `pqvpn recover` reports the block and
# `recover --unblock` lifts it. The ruleset, rules and routes are then what they were
# before. Last, a control capture without pqvpn shows the same traffic does leak
# (so the method can see a leak).
scenario_kill_switch() {
    local name=kill_switch reason="" i js prof t0 t1 before_nft before_rules out
    local GW_DPD_DELAY=0s PQ_IKE_EXTRA=$'dpd_delay = "2s"\nretransmit_tries = 3'
    local PQ_NETWORK=$'full_tunnel = true\ndns = false\nkill_switch = "auto"'
    begin "$name" || return
    command -v tcpdump >/dev/null && command -v nft >/dev/null \
        || { fail "$name" "tcpdump and nft are needed"; teardown; return; }
    leak_uplink
    write_charon gw "$HYBRID_IKE" "$HYBRID_ESP"
    start_charon gw "$NS_GW" || { fail "$name" "charon did not start"; teardown; return; }
    prof=$SCEN_DIR/$name.toml
    write_pqvpn client.toml.in "$prof" hybrid
    before_nft=$(nft_ruleset); before_rules=$(rules_snapshot)
    pq_bg "$NS_CL" "$SCEN_DIR/pqvpn.log" -vv up "$prof"
    wait_connected "$name" "$PQ_PID" 20 || { fail "$name" "pqvpn did not connect"; teardown; return; }
    nft_ruleset >"$SCEN_DIR/ruleset-connected.txt"
    grep -q "table inet pqvpn" "$SCEN_DIR/ruleset-connected.txt" || reason+="no kill switch table while connected; "

    # (a) The gateway dies for 10 s and returns; (b) pqvpn is SIGKILLed.
    capture_start "$SCEN_DIR/leak.pcap"
    leak_traffic 40
    sleep 2
    kill -KILL "${CHARON_PID[gw]}"; wait "${CHARON_PID[gw]}" 2>/dev/null; unset "CHARON_PID[gw]"
    mv "$STATE/gw/charon.log" "$SCEN_DIR/charon-gw-a.log" 2>/dev/null
    sleep 10
    nft_ruleset >"$SCEN_DIR/ruleset-reconnecting.txt"
    [ "$(status_json "$name" | jq_ 'd["state"]')" = reconnecting ] || reason+="not reconnecting 10 s after strongSwan died; "
    t0=$(date +%s.%N)
    start_charon gw "$NS_GW" || { fail "$name" "charon did not restart"; teardown; return; }
    wait_connected "$name" "$PQ_PID" 30 || reason+="pqvpn did not reconnect; "
    t1=$(date +%s.%N)
    log "$name: connected again $(python3 -c "print(f'{$t1 - $t0:.1f}')") s after strongSwan restarted"
    sleep 2
    kill -KILL "$PQ_PID"; wait "$PQ_PID" 2>/dev/null
    sleep 3
    ip -n "$NS_CL" link show pqi0 >/dev/null 2>&1 && reason+="TUN pqi0 outlived the SIGKILL; "
    nft_ruleset >"$SCEN_DIR/ruleset-crashed.txt"
    grep -q "table inet pqvpn" "$SCEN_DIR/ruleset-crashed.txt" || reason+="the kill switch did not survive the SIGKILL; "
    stop_traffic; capture_stop
    out=$(classify "$SCEN_DIR/leak.pcap"); LEAKS=$(wc -l <"$SCEN_DIR/leak.pcap.leaks")
    log "$name: capture through the gateway's restart and pqvpn's SIGKILL: $out"
    [ "$LEAKS" = 0 ] || reason+="$LEAKS packets leaked ($out; see leak.pcap.leaks); "
    [[ $out == *"ike_esp=0 "* ]] && reason+="the capture saw no IKE/ESP at all; "

    # (c) A new run adopts the crashed run's kill switch; `down` lifts it exactly.
    pq_bg "$NS_CL" "$SCEN_DIR/pqvpn-c.log" -vv up "$prof"
    wait_connected "$name" "$PQ_PID" 20 || reason+="(c) pqvpn did not connect under the old kill switch; "
    grep -q "kill switch of an earlier run is still up" "$SCEN_DIR/pqvpn-c.log" || reason+="(c) the new run did not notice the old kill switch; "
    ip netns exec "$NS_CL" "$PQVPN" down "$name" >/dev/null 2>&1 || reason+="(c) pqvpn down failed; "
    for i in $(seq 30); do [ -d "/proc/$PQ_PID" ] || break; sleep 0.2; done
    [ "$(nft_ruleset)" = "$before_nft" ] || reason+="(c) ruleset after down differs: $(diff <(echo "$before_nft") <(nft_ruleset) | head -5 | tr '\n' ' '); "
    [ "$(rules_snapshot)" = "$before_rules" ] || reason+="(c) rules/routes after down differ; "

    # (d) Crash again: `recover` keeps the block and says so; `--unblock` lifts it.
    pq_bg "$NS_CL" "$SCEN_DIR/pqvpn-d.log" -vv up "$prof"
    wait_connected "$name" "$PQ_PID" 20 || reason+="(d) pqvpn did not connect; "
    kill -KILL "$PQ_PID"; wait "$PQ_PID" 2>/dev/null
    ip netns exec "$NS_CL" "$PQVPN" recover >"$SCEN_DIR/recover.txt" 2>&1 || reason+="(d) pqvpn recover failed; "
    grep -q "still blocks all traffic" "$SCEN_DIR/recover.txt" || reason+="(d) recover did not report the block: $(cat "$SCEN_DIR/recover.txt"); "
    grep -q "table inet pqvpn" <<<"$(nft_ruleset)" || reason+="(d) recover without --unblock lifted the kill switch; "
    ip netns exec "$NS_CL" "$PQVPN" recover --unblock >>"$SCEN_DIR/recover.txt" 2>&1 || reason+="(d) recover --unblock failed; "
    [ "$(nft_ruleset)" = "$before_nft" ] || reason+="(d) ruleset after recover --unblock differs; "
    [ "$(rules_snapshot)" = "$before_rules" ] || reason+="(d) rules/routes after recover differ: $(diff <(echo "$before_rules") <(rules_snapshot) | head -5 | tr '\n' ' '); "

    # (f) The daemon: its tunnel is up when the daemon is SIGKILLed; nothing leaks while it is
    # gone; restarted, it resumes the tunnel under the block; `disconnect` lifts it exactly.
    local dd=$SCEN_DIR/daemon
    mkdir -p "$dd/profiles"; install -m 600 "$prof" "$dd/profiles/$name.toml"
    pqd() { ip netns exec "$NS_CL" "$PQVPN" --socket "$dd/control.sock" "$@"; }
    pqd_state() { pqd status --json "$name" 2>/dev/null | jq_ 'd["state"]' 2>/dev/null; }
    pqd_wait() {    # STATE SECONDS
        for i in $(seq $(($2 * 5))); do [ "$(pqd_state)" = "$1" ] && return 0; sleep 0.2; done
        return 1
    }
    pqd_start() {   # LOG
        rm -f "$dd/control.sock"
        pq_bg "$NS_CL" "$1" -vv --socket "$dd/control.sock" daemon --profiles "$dd/profiles" \
            --state "$dd/state" --group root
        for i in $(seq 50); do [ -S "$dd/control.sock" ] && break; sleep 0.2; done
    }
    pqd_start "$SCEN_DIR/daemon-a.log"
    pqd connect "$name" >/dev/null 2>&1 || reason+="(f) connect through the daemon failed; "
    pqd_wait connected 20 || reason+="(f) the daemon did not connect; "
    capture_start "$SCEN_DIR/daemon.pcap"
    leak_traffic 20
    sleep 2
    kill -KILL "$PQ_PID"; wait "$PQ_PID" 2>/dev/null
    sleep 5
    grep -q "table inet pqvpn" <<<"$(nft_ruleset)" || reason+="(f) the kill switch did not survive the daemon's SIGKILL; "
    pqd_start "$SCEN_DIR/daemon-b.log"
    pqd_wait connected 20 || reason+="(f) the restarted daemon did not resume the tunnel; "
    grep -q "was up when the daemon stopped" "$SCEN_DIR/daemon-b.log" || reason+="(f) the daemon did not resume; "
    sleep 2
    stop_traffic; capture_stop
    out=$(classify "$SCEN_DIR/daemon.pcap"); LEAKS=$(wc -l <"$SCEN_DIR/daemon.pcap.leaks")
    log "$name: capture through the daemon's SIGKILL and restart: $out"
    [ "$LEAKS" = 0 ] || reason+="(f) $LEAKS packets leaked ($out; see daemon.pcap.leaks); "
    pqd disconnect "$name" >/dev/null 2>&1 || reason+="(f) disconnect failed; "
    pqd_wait disconnected 10 || reason+="(f) not disconnected; "
    kill -TERM "$PQ_PID"; wait "$PQ_PID" 2>/dev/null
    [ "$(nft_ruleset)" = "$before_nft" ] || reason+="(f) ruleset after disconnect differs; "
    [ "$(rules_snapshot)" = "$before_rules" ] || reason+="(f) rules/routes after the daemon differ; "

    # (e) Control: the same traffic with no pqvpn leaks, and the capture sees it.
    capture_start "$SCEN_DIR/control.pcap"
    leak_traffic 2; sleep 2.5; stop_traffic; capture_stop
    out=$(classify "$SCEN_DIR/control.pcap"); LEAKS=$(wc -l <"$SCEN_DIR/control.pcap.leaks")
    log "$name: control capture without the kill switch: $out"
    [ "$LEAKS" -gt 0 ] || reason+="the control capture saw no leak: the leak test cannot see one; "
    [ -z "$reason" ] && pass "$name" || fail "$name" "${reason%; }"
    teardown
}

# A gateway that wants P-384 (as Cloudflare's does) and ChaCha20-Poly1305 ESP:
# strongSwan answers pqvpn's X25519 KEi with INVALID_KE_PAYLOAD(ECP_384)
# (RFC 7296 §1.2), pqvpn restarts IKE_SA_INIT with P-384, ML-KEM-768 follows
# in IKE_INTERMEDIATE; ESP is pqvpn's second choice, ChaCha20-Poly1305.
scenario_p384_chacha() {
    local ESP_EXPECT=CHACHA20_POLY1305 LOG_EXPECT="unacceptable, requesting ECP_384"
    client_to_sw p384_chacha hybrid aes256gcm16-prfsha384-ecp384-ke1_mlkem768 \
        chacha20poly1305-ecp384-ke1_mlkem768,chacha20poly1305 \
        'AES_GCM_16-256/PRF_HMAC_SHA2_384/ECP_384/KE1_ML_KEM_768'
}

# ike_sa_line: strongSwan's line for the rw IKE SA (unique id and SPIs), "" if none.
ike_sa_line() {
    sw_ctl gw --list-sas 2>&1 | grep -oE "rw: #[0-9]+, ESTABLISHED, IKEv2, [0-9a-f]+_i\*? [0-9a-f]+_r\*?" | head -1
}

# child_ok NAME: pqvpn connected with no reconnect, pings through the tunnel,
# strongSwan's CHILD_SA installed on the IKE SA $IKE0. Appends to $reason.
child_ok() {
    local name=$1 js sas
    js=$(status_json "$name"); echo "$js" >"$SCEN_DIR/status.json"
    [ "$(jq_ 'd["state"], d["reconnects"]' <<<"$js")" = "('connected', 0)" ] \
        || reason+="pqvpn: $(jq_ 'd["state"], d["reconnects"], d["reason"]' <<<"$js"); "
    [ "$(ping_loss 5)" -le 1 ] || reason+="pings through the new CHILD_SA failed; "
    [ "$(ike_sa_line)" = "$IKE0" ] || reason+="strongSwan's IKE SA changed: '$IKE0' -> '$(ike_sa_line)'; "
    sas=$(sw_ctl gw --list-sas 2>&1); echo "$sas" >"$SCEN_DIR/list-sas.txt"
    grep -q "net: #[0-9]*, reqid [0-9]*, INSTALLED, TUNNEL-in-UDP, ESP:AES_GCM_16-256" <<<"$sas" \
        || reason+="strongSwan has no CHILD_SA installed; "
}

# The gateway deletes the tunnel's only CHILD_SA (`swanctl --terminate --child`,
# an INFORMATIONAL Delete for ESP, RFC 7296 §1.4.1) and keeps the IKE SA without
# creating another. pqvpn answers the Delete, waits 2 s for the gateway, then
# creates one itself on the same IKE SA (CREATE_CHILD_SA without REKEY_SA,
# RFC 7296 §1.3.1, with X25519 + ML-KEM): no new handshake, no reconnect
# (--no-reconnect: the process would exit if the tunnel went down).
scenario_child_delete() {
    local name=child_delete reason="" i js IKE0 PQ_UP_FLAGS=--no-reconnect
    connect_to_sw "$name" hybrid || return
    local clog=$STATE/gw/charon.log
    IKE0=$(ike_sa_line)
    [ -n "$IKE0" ] || reason+="no IKE SA at strongSwan; "
    sw_ctl gw --terminate --child net --timeout 10 >"$SCEN_DIR/terminate.txt" 2>&1
    for i in $(seq 75); do
        js=$(status_json "$name")
        [ "$(jq_ 'd.get("child_sa_recreates", 0)' <<<"$js" 2>/dev/null)" = 1 ] && break
        [ -d "/proc/$PQ_PID" ] || break
        sleep 0.2
    done
    if [ ! -d "/proc/$PQ_PID" ]; then
        reason+="pqvpn exited: $(tail -1 "$SCEN_DIR/pqvpn.log"); "
    else
        child_ok "$name"
        grep -q "waiting for a new one" "$SCEN_DIR/pqvpn.log" || reason+="pqvpn did not log the lost CHILD_SA; "
    fi
    grep -qE "parsed INFORMATIONAL response [0-9]+ \[ D \]" "$clog" || reason+="strongSwan's Delete was not answered; "
    grep -qE "parsed CREATE_CHILD_SA request [0-9]+ \[ SA No KE TSi TSr \]" "$clog" \
        || reason+="strongSwan saw no CREATE_CHILD_SA (new CHILD_SA with KE) from pqvpn; "
    grep -q "IKE_FOLLOWUP_KE" "$clog" || reason+="the new CHILD_SA ran no ML-KEM round (IKE_FOLLOWUP_KE); "
    ip netns exec "$NS_CL" "$PQVPN" down "$name" >/dev/null 2>&1
    for i in $(seq 30); do [ -d "/proc/$PQ_PID" ] || break; sleep 0.2; done
    [ -z "$(routes_snapshot)" ] || reason+="routes left behind: $(routes_snapshot | tr '\n' ' '); "
    [ -e "$(client_state_file)" ] && reason+="state file $(client_state_file) left behind (not restored); "
    [ -z "$reason" ] && pass "$name" || fail "$name" "${reason%; }"
    teardown
}

# strongSwan lets the only CHILD_SA reach its hard lifetime (life_time 6 s, no
# rekey): it deletes it and creates a new one on the same IKE SA ("CHILD_SA
# recreate after hard expire", CREATE_CHILD_SA without REKEY_SA). pqvpn takes it
# twice, without a reconnect (--no-reconnect) and without asking for one itself.
scenario_child_recreate() {
    local name=child_recreate reason="" i js n IKE0 PQ_UP_FLAGS=--no-reconnect GW_CHILD_LIFE=6s
    connect_to_sw "$name" hybrid || return
    local clog=$STATE/gw/charon.log
    IKE0=$(ike_sa_line)
    [ -n "$IKE0" ] || reason+="no IKE SA at strongSwan; "
    for i in $(seq 150); do
        js=$(status_json "$name")
        n=$(jq_ 'd.get("child_sa_recreates", 0)' <<<"$js" 2>/dev/null)
        [ "${n:-0}" -ge 2 ] && break
        [ -d "/proc/$PQ_PID" ] || break
        sleep 0.2
    done
    if [ ! -d "/proc/$PQ_PID" ]; then
        reason+="pqvpn exited: $(tail -1 "$SCEN_DIR/pqvpn.log"); "
    elif [ "${n:-0}" -lt 2 ]; then
        reason+="pqvpn counted ${n:-?} re-created CHILD_SAs in 30 s (< 2); "
    else
        child_ok "$name"
    fi
    log "$name: strongSwan: $(grep -c "CHILD_SA recreate after hard expire" "$clog") hard expiries, pqvpn: ${n:-?} re-created"
    grep -q "CHILD_SA recreate after hard expire" "$clog" || reason+="strongSwan never hit the hard lifetime; "
    grep -qE "generating CREATE_CHILD_SA request [0-9]+ \[ SA No KE TSi TSr \]" "$clog" \
        || reason+="strongSwan sent no CREATE_CHILD_SA for a new CHILD_SA; "
    grep -qE "parsed CREATE_CHILD_SA request" "$clog" && reason+="pqvpn asked for a CHILD_SA itself; "
    grep -qE "received (NO_PROPOSAL_CHOSEN|TS_UNACCEPTABLE|NO_ADDITIONAL_SAS|INVALID_SYNTAX)" "$clog" \
        && reason+="strongSwan received an error notify; "
    ip netns exec "$NS_CL" "$PQVPN" down "$name" >/dev/null 2>&1
    [ -z "$reason" ] && pass "$name" || fail "$name" "${reason%; }"
    teardown
}

# Scenario 3: strongSwan offers only classical proposals.
scenario_classical() {
    local name=classical prof reason="" before after rc st sas
    begin "$name" || return
    write_charon gw "$CLASSIC_IKE" "$CLASSIC_ESP"
    start_charon gw "$NS_GW" || { fail "$name" "charon did not start"; teardown; return; }
    # (a) hybrid must refuse, exit non-zero, name ML-KEM and leave nothing behind.
    prof=$SCEN_DIR/$name.toml
    write_pqvpn client.toml.in "$prof" hybrid
    before=$(routes_snapshot); ip -n "$NS_CL" -o link show >"$SCEN_DIR/links.before"
    timeout 30 ip netns exec "$NS_CL" "$PQVPN" -vv up "$prof" </dev/null >"$SCEN_DIR/pqvpn-hybrid.log" 2>&1
    rc=$?
    after=$(routes_snapshot); ip -n "$NS_CL" -o link show >"$SCEN_DIR/links.after"
    [ "$rc" != 0 ] && [ "$rc" != 124 ] || reason+="pqvpn hybrid exit status $rc (want non-zero, no timeout); "
    grep -q "ML-KEM" "$SCEN_DIR/pqvpn-hybrid.log" || reason+="pqvpn's error does not mention ML-KEM; "
    [ "$before" = "$after" ] || reason+="routes changed: $(diff <(echo "$before") <(echo "$after") | tr '\n' ' '); "
    diff -q <(cut -d: -f2 "$SCEN_DIR/links.before") <(cut -d: -f2 "$SCEN_DIR/links.after") >/dev/null \
        || reason+="links changed (TUN left behind?); "
    sleep 0.3
    sas=$(sw_ctl gw --list-sas 2>&1)
    grep -q "ESTABLISHED" <<<"$sas" && reason+="strongSwan has an ESTABLISHED IKE SA after the refusal; "
    log "$name: hybrid refused (exit $rc): $(grep -m1 ML-KEM "$SCEN_DIR/pqvpn-hybrid.log")"
    # (b) classical mode connects, quantum_safe false.
    write_pqvpn client.toml.in "$prof" classical
    pq_bg "$NS_CL" "$SCEN_DIR/pqvpn.log" -vv up "$prof"
    if wait_connected "$name" "$PQ_PID" 20; then
        st=$(status_json "$name"); echo "$st" >"$SCEN_DIR/status.json"
        [ "$(jq_ 'd["quantum_safe"]' <<<"$st")" = False ] || reason+="classical: quantum_safe is not false; "
        sas=$(sw_ctl gw --list-sas 2>&1); echo "$sas" >"$SCEN_DIR/list-sas.txt"
        grep -q "rw: #[0-9]*, ESTABLISHED" <<<"$sas" || reason+="classical: strongSwan IKE SA not ESTABLISHED; "
        grep -q "AES_GCM_16-256/PRF_HMAC_SHA2_384/CURVE_25519$" <<<"$sas" || reason+="classical: strongSwan algorithms not AES_GCM_16-256/PRF_HMAC_SHA2_384/CURVE_25519; "
        grep -q "INSTALLED, TUNNEL-in-UDP" <<<"$sas" || reason+="classical: strongSwan CHILD_SA not INSTALLED; "
        ip netns exec "$NS_CL" ping -c 3 -i 0.2 -W 2 "$GW_INNER" >"$SCEN_DIR/ping.txt" 2>&1 || reason+="classical: ping failed; "
    else
        reason+="classical: pqvpn did not connect: $(grep -iE 'error|fail' "$SCEN_DIR/pqvpn.log" | tail -2 | tr '\n' ' '); "
    fi
    [ -z "$reason" ] && pass "$name" || fail "$name" "${reason%; }"
    teardown
}

# Scenarios 7 and 8: strongSwan initiator (pqi-cl) -> pqvpn gateway (pqi-gw).
# start_pq_gateway NAME: `pqvpn gateway` in pqi-gw, listening; on failure it
# reports FAIL, tears down and returns 1.
start_pq_gateway() {
    local name=$1 prof=$SCEN_DIR/gateway.toml gw_pid i
    write_pqvpn gateway.toml.in "$prof"
    pq_bg "$NS_GW" "$SCEN_DIR/pqvpn-gateway.log" -vv gateway "$prof"
    gw_pid=$PQ_PID
    for i in $(seq 50); do
        ip netns exec "$NS_GW" ss -uln 2>/dev/null | grep -q "$GW_ADDR:4500" && break
        [ -d "/proc/$gw_pid" ] || break
        sleep 0.1
    done
    [ -d "/proc/$gw_pid" ] && return 0
    fail "$name" "pqvpn gateway exited: $(tail -2 "$SCEN_DIR/pqvpn-gateway.log" | tr '\n' ' ')"
    teardown
    return 1
}

sw_to_gateway() {   # NAME FRAGMENTATION
    local name=$1 frag=$2 reason="" sas out vip
    begin "$name" || return
    start_pq_gateway "$name" || return
    write_charon cl "$HYBRID_IKE" "$HYBRID_ESP" "$frag"
    start_charon cl "$NS_CL" || { fail "$name" "charon did not start"; teardown; return; }
    out=$(sw_ctl cl --initiate --timeout 30 --ike sw --child net 2>&1); echo "$out" >"$SCEN_DIR/initiate.txt"
    grep -q "initiate completed successfully" <<<"$out" || reason+="swanctl --initiate failed: $(grep -E 'failed|received|error' <<<"$out" | tail -3 | tr '\n' ' '); "
    sas=$(sw_ctl cl --list-sas 2>&1); echo "$sas" >"$SCEN_DIR/list-sas.txt"
    grep -q "sw: #[0-9]*, ESTABLISHED, IKEv2" <<<"$sas" || reason+="strongSwan IKE SA not ESTABLISHED; "
    grep -q "AES_GCM_16-256/PRF_HMAC_SHA2_384/CURVE_25519/KE1_ML_KEM_768" <<<"$sas" || reason+="strongSwan IKE algorithms not hybrid; "
    grep -q "INSTALLED, TUNNEL-in-UDP, ESP:AES_GCM_16-256" <<<"$sas" || reason+="strongSwan CHILD_SA not INSTALLED; "
    vip=$(sed -n "s/.*local  '$CL_ID' @ $CL_ADDR\[4500\] \[\([0-9.]*\)\].*/\1/p" <<<"$sas")
    [[ $vip == 10.99.0.* ]] || reason+="strongSwan got no virtual IP from pqvpn's pool ('$vip'); "
    # The gateway's side: it logged the established SA for client.test.
    # The gateway's side (it has no status socket): its log names the client and the address it leased.
    grep -qE "client connected client=$CL_ADDR:[0-9]+ virtual_ips=\[$vip\]" "$SCEN_DIR/pqvpn-gateway.log" \
        || reason+="pqvpn gateway did not log client $CL_ADDR connected with $vip; "
    if [ -n "$vip" ]; then
        ip netns exec "$NS_CL" ping -c 3 -i 0.2 -W 2 -I "$vip" "$PQGW_ADDR" >"$SCEN_DIR/ping.txt" 2>&1 || reason+="ping $PQGW_ADDR from $vip failed; "
    fi
    grep -q "processing INTERNAL_IP4_DNS attribute" "$STATE/cl/charon.log" || reason+="pqvpn gateway pushed no DNS server; "
    grep -q "retransmit" "$STATE/cl/charon.log" && reason+="strongSwan retransmitted; "
    if [ "$frag" = yes ]; then
        grep -qE "splitting IKE message \([0-9]+ bytes\) into 2 fragments" "$STATE/cl/charon.log" || reason+="strongSwan did not split a message into 2 fragments; "
        grep -qE "generating IKE_INTERMEDIATE request [0-9]+ \[ EF\(1/2\) \]" "$STATE/cl/charon.log" || reason+="strongSwan's IKE_INTERMEDIATE was not fragmented; "
    else
        grep -q "EF(" "$STATE/cl/charon.log" && reason+="strongSwan fragmented with fragmentation = no; "
    fi
    sw_ctl cl --terminate --ike sw >/dev/null 2>&1
    [ -z "$reason" ] && pass "$name" || fail "$name" "${reason%; }"
    teardown
}

# Rekeys against pqvpn's gateway while the strongSwan initiator pings the
# gateway from its virtual IP for 46 s: the IKE SA every 20 s and the CHILD_SA
# every 10 s (minus jitter), X25519 + ML-KEM-768. DRIVER sw: strongSwan's
# rekey_time; pqvpn: the gateway profile's [ike] rekey_time/child_rekey_time.
# pqvpn's gateway requires the IKE SA's key exchanges in a CHILD_SA rekey (PFS;
# RFC 7296 §1.3.1 lets the responder refuse a proposal without KE), so
# strongSwan's esp_proposals carry ke1_mlkem768.
# sw_connect_to_gateway NAME ESP_PROPOSALS: `pqvpn gateway`, then the strongSwan
# initiator (hybrid IKE proposals, the scenario's CL_* timers) connected; sets
# VIP to its virtual IP. On failure it reports FAIL, tears down and returns 1.
sw_connect_to_gateway() {
    local name=$1 out
    begin "$name" || return 1
    start_pq_gateway "$name" || return 1
    write_charon cl "$HYBRID_IKE" "$2"
    start_charon cl "$NS_CL" || { fail "$name" "charon did not start"; teardown; return 1; }
    out=$(sw_ctl cl --initiate --timeout 30 --ike sw --child net 2>&1); echo "$out" >"$SCEN_DIR/initiate.txt"
    if ! grep -q "initiate completed successfully" <<<"$out"; then
        fail "$name" "swanctl --initiate failed: $(grep -E 'failed|received|error' <<<"$out" | tail -3 | tr '\n' ' ')"
        teardown; return 1
    fi
    VIP=$(sw_ctl cl --list-sas 2>&1 | sed -n "s/.*local  '$CL_ID' @ $CL_ADDR\[4500\] \[\([0-9.]*\)\].*/\1/p")
}

gateway_rekey_under_traffic() {     # NAME DRIVER
    local name=$1 driver=$2 reason="" sas vip lost
    local CL_IKE_REKEY=0s CL_CHILD_REKEY=0s PQ_IKE_EXTRA="" dir=request
    if [ "$driver" = sw ]; then
        CL_IKE_REKEY=20s CL_CHILD_REKEY=10s
    else
        PQ_IKE_EXTRA=$'rekey_time = "20s"\nchild_rekey_time = "10s"' dir=response
    fi
    sw_connect_to_gateway "$name" "$HYBRID_ESP" || return
    vip=$VIP
    lost=$(ping_loss 230 "$PQGW_ADDR" "$vip")
    sas=$(sw_ctl cl --list-sas 2>&1); echo "$sas" >"$SCEN_DIR/list-sas.txt"
    local clog=$STATE/cl/charon.log glog=$SCEN_DIR/pqvpn-gateway.log
    local pq_child pq_ike
    sw_rekey_checks "$dir" "$clog" "$sas" sw
    pq_child=$(grep -c "Child SA rekeyed" "$glog")
    pq_ike=$(grep -c "IKE SA rekeyed" "$glog")
    log "$name: strongSwan generated $SW_CHILD Child SA and $SW_IKE IKE SA rekey ${dir}s and $SW_FOLLOWUP IKE_FOLLOWUP_KE ${dir}s; the gateway logged $pq_child Child SA and $pq_ike IKE SA rekeys; ${lost:-?} of 230 pings from ${vip:-?} lost"
    [ -n "$vip" ] || reason+="strongSwan got no virtual IP; "
    [ "$pq_child" -ge "$SW_CHILD" ] || reason+="the gateway logged $pq_child of $SW_CHILD Child SA rekeys; "
    [ "$pq_ike" -ge "$SW_IKE" ] || reason+="the gateway logged $pq_ike of $SW_IKE IKE SA rekeys; "
    [ "${lost:-99}" -le 1 ] || reason+="$lost of 230 pings lost (> 1); "
    sw_ctl cl --terminate --ike sw >/dev/null 2>&1
    [ -z "$reason" ] && pass "$name" || fail "$name" "${reason%; }"
    teardown
}

scenario_gw_rekey() { gateway_rekey_under_traffic gw_rekey sw; }

# no_pfs the other way round: a strongSwan initiator with the default-style
# `esp_proposals = aes256gcm16` against pqvpn's gateway, both rekeying the
# CHILD_SA every 10 s for 26 s. strongSwan offers no KE, pqvpn's gateway
# accepts it; pqvpn offers PFS first and strongSwan picks none.
scenario_gw_no_pfs() {
    local name=gw_no_pfs reason="" sas vip lost
    local CL_CHILD_REKEY=10s PQ_IKE_EXTRA='child_rekey_time = "10s"'
    sw_connect_to_gateway "$name" aes256gcm16 || return
    vip=$VIP
    lost=$(ping_loss 130 "$PQGW_ADDR" "$vip")
    sas=$(sw_ctl cl --list-sas 2>&1); echo "$sas" >"$SCEN_DIR/list-sas.txt"
    local clog=$STATE/cl/charon.log glog=$SCEN_DIR/pqvpn-gateway.log sw_req sw_resp pq_child
    sw_req=$(grep -cE "generating CREATE_CHILD_SA request [0-9]+ \[ N\(REKEY_SA\) SA No TSi TSr \]" "$clog")
    sw_resp=$(grep -cE "generating CREATE_CHILD_SA response [0-9]+ \[ SA No TSi TSr \]" "$clog")
    pq_child=$(grep -c "Child SA rekeyed" "$glog")
    log "$name: strongSwan sent $sw_req rekey requests and $sw_resp responses without KE; the gateway logged $pq_child Child SA rekeys; ${lost:-?} of 130 pings from ${vip:-?} lost"
    [ -n "$vip" ] || reason+="strongSwan got no virtual IP; "
    [ $((sw_req + sw_resp)) -ge 2 ] || reason+="strongSwan's log shows $sw_req + $sw_resp rekeys without KE (< 2); "
    [ "$pq_child" -ge $((sw_req + sw_resp)) ] || reason+="the gateway logged $pq_child of $((sw_req + sw_resp)) rekeys; "
    [ "${lost:-99}" -le 1 ] || reason+="$lost of 130 pings lost (> 1); "
    grep -q "INSTALLED, TUNNEL-in-UDP, ESP:AES_GCM_16-256" <<<"$sas" || reason+="strongSwan CHILD_SA not INSTALLED; "
    grep -q "IKE_FOLLOWUP_KE" "$clog" && reason+="an IKE_FOLLOWUP_KE without PFS; "
    grep -q "retransmit" "$clog" && reason+="strongSwan retransmitted; "
    grep -qE "received (NO_PROPOSAL_CHOSEN|INVALID_KE_PAYLOAD|INVALID_SYNTAX)" "$clog" && reason+="strongSwan received an error notify; "
    sw_ctl cl --terminate --ike sw >/dev/null 2>&1
    [ -z "$reason" ] && pass "$name" || fail "$name" "${reason%; }"
    teardown
}
scenario_gw_drives_rekey() { gateway_rekey_under_traffic gw_drives_rekey pqvpn; }

scenario_sw_initiator() { sw_to_gateway sw_initiator no; }
scenario_fragmentation() { sw_to_gateway fragmentation yes; }

# ---------------------------------------------------------------- main
main() {
    local t0=$SECONDS s
    setup_chroot
    [ "${1:-}" = setup ] && exit 0
    if [ -z "${PQVPN_GIVEN:-}" ]; then
        # Always (re)build: a stale binary would test old code. Incremental when up to date.
        log "building pqvpn (cargo build --release -p pqvpn-cli)"
        (cd "$REPO" && cargo build --release --locked -p pqvpn-cli) || die "build failed"
    fi
    [ -x "$PQVPN" ] || die "no pqvpn binary at $PQVPN"
    for s in "$@"; do declare -F "scenario_$s" >/dev/null || die "unknown scenario '$s' (${ALL_SCENARIOS[*]})"; done
    [ $# -gt 0 ] || set -- "${ALL_SCENARIOS[@]}"
    for s in "$NS_GW" "$NS_CL"; do
        ip netns list | awk '{ print $1 }' | grep -qxF "$s" && die "netns $s already exists (another run?)"
    done
    detect_datapath
    WORK=$(mktemp -d /tmp/pqvpn-interop.XXXXXX)
    trap 'teardown' EXIT
    trap 'exit 130' INT TERM
    log "strongSwan $(in_chroot - "" dpkg-query -W -f '${Version}' strongswan-charon), ESP datapath $DATAPATH, pqvpn $("$PQVPN" --version), logs $WORK"
    for s in "$@"; do "scenario_$s"; done
    log "$PASSES passed, $FAILS failed in $((SECONDS - t0)) s"
    if [ "$FAILS" = 0 ] && [ -z "${KEEP_LOGS:-}" ]; then rm -rf "$WORK"; else log "logs kept in $WORK"; fi
    exit "$FAILS"
}

# Sourced by bench.sh for its helpers; run as a script, it runs the scenarios.
[ "${BASH_SOURCE[0]}" != "$0" ] || main "$@"
