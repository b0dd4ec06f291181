# Sourced by the bench scripts: two network namespaces $gw and $cl joined by a veth
# (198.18.0.1/24 and 198.18.0.2/24), each with its own resolv.conf and the loopback up.
#   netns_pair GW CL ID      # ID names the veth ends gID and cID
#   netns_pair_del GW CL     # removes both (and their /etc/netns dirs); quiet if absent
netns_pair() {
    local gw=$1 cl=$2 id=$3 ns
    for ns in "$gw" "$cl"; do
        ip netns add "$ns"
        mkdir -p "/etc/netns/$ns"; echo "nameserver 192.0.2.53" >"/etc/netns/$ns/resolv.conf"
        ip -n "$ns" link set lo up
    done
    ip link add "g$id" netns "$gw" type veth peer name "c$id" netns "$cl"
    ip -n "$gw" addr add 198.18.0.1/24 dev "g$id"; ip -n "$cl" addr add 198.18.0.2/24 dev "c$id"
    ip -n "$gw" link set "g$id" up; ip -n "$cl" link set "c$id" up
}
netns_pair_del() {
    local ns
    for ns in "$@"; do
        ip netns del "$ns" 2>/dev/null || true
        rm -rf "/etc/netns/$ns"
    done
}
