//! Linux imp of [`firewall`](super::firewall): the [`Ruleset`] as nf_tables netlink messages,
//! sent as one batch (one transaction) on a `NETLINK_NETFILTER` socket.
//!
//! Blocking, like [`netlink`](super::netlink): it runs from `Drop`, `recover` and the CLI.

use std::io;
use std::net::IpAddr;
use std::time::Duration;

use netlink_packet_core::{
    DefaultNla, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REQUEST, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_netfilter::nftables::{
    Bitwise, ChainAttribute, ChainMessage, Cmp, DataAttribute, ExpressionAttribute, Expressions,
    Hook as HookAttribute, HookNumber, Immediate, InetHookNumber, ListAttribute, Meta, MetaKey,
    NfTablesMessage, Operator, Payload, Register, RuleAttribute, RuleMessage, TableAttribute,
    TableMessage, Verdict as NftVerdict, VerdictAttribute,
};
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterProtoFamily};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};

use super::firewall::{Chain, Hook, Match, Rule, Ruleset, TABLE, Verdict};

/// `NFNL_SUBSYS_NFTABLES`: the batch messages' resource id.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// `NFPROTO_IPV4`, `NFPROTO_IPV6`: `meta nfproto` values.
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;
/// `enum nft_payload_bases`.
const PAYLOAD_NETWORK: u32 = 1;
const PAYLOAD_TRANSPORT: u32 = 2;
/// `NF_DROP`, `NF_ACCEPT`.
const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;
/// `NFTA_CT_DREG`, `NFTA_CT_KEY` (`enum nft_ct_attributes`), `NFT_CT_STATE`, `NFT_REG_1`.
const NFTA_CT_DREG: u16 = 1;
const NFTA_CT_KEY: u16 = 2;
const NFT_CT_STATE: u32 = 0;
const NFT_REG_1: u32 = 1;
/// `NF_CT_STATE_BIT(IP_CT_ESTABLISHED)`, `NF_CT_STATE_BIT(IP_CT_RELATED)`: the state is a
/// host-order `u32` bit set.
const CT_STATE_ESTABLISHED: u32 = 1 << 1;
const CT_STATE_RELATED: u32 = 1 << 2;
/// `IFNAMSIZ`: interface names are compared as 16 NUL-padded bytes.
const IFNAMSIZ: usize = 16;
/// How long to wait for the kernel's answer.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Replaces our table with `ruleset` in one transaction (creating it if missing).
pub(super) fn replace(ruleset: &Ruleset) -> io::Result<()> {
    let mut messages = vec![
        (new_table(), NLM_F_CREATE),
        (delete_table(), 0),
        (new_table(), NLM_F_CREATE),
    ];
    for chain in &ruleset.chains {
        messages.push((new_chain(chain), NLM_F_CREATE));
        for rule in &chain.rules {
            messages.push((new_rule(chain.hook, rule)?, NLM_F_CREATE | NLM_F_APPEND));
        }
    }
    transact(messages)
}

/// Deletes our table; nothing happens when it is not there.
pub(super) fn delete() -> io::Result<()> {
    transact(vec![(new_table(), NLM_F_CREATE), (delete_table(), 0)])
}

fn inet(message: NfTablesMessage) -> NetfilterMessage {
    NetfilterMessage::new(
        NetfilterHeader::new(NetfilterProtoFamily::Inet, 0, 0),
        message,
    )
}

fn new_table() -> NetfilterMessage {
    inet(NfTablesMessage::NewTable(TableMessage {
        attributes: vec![TableAttribute::Name(TABLE.into())],
    }))
}

fn delete_table() -> NetfilterMessage {
    inet(NfTablesMessage::DeleteTable(TableMessage {
        attributes: vec![TableAttribute::Name(TABLE.into())],
    }))
}

fn new_chain(chain: &Chain) -> NetfilterMessage {
    let hook = match chain.hook {
        Hook::Input => InetHookNumber::LocalIn,
        Hook::Output => InetHookNumber::LocalOut,
        Hook::Forward => InetHookNumber::Forward,
    };
    inet(NfTablesMessage::NewChain(ChainMessage {
        attributes: vec![
            ChainAttribute::Table(TABLE.into()),
            ChainAttribute::Name(chain.hook.name().into()),
            ChainAttribute::Hook(vec![
                HookAttribute::Number(HookNumber::Inet(hook)),
                HookAttribute::Priority(0),
            ]),
            ChainAttribute::Policy(verdict_code(chain.policy)),
            ChainAttribute::Type("filter".into()),
        ],
    }))
}

fn new_rule(hook: Hook, rule: &Rule) -> io::Result<NetfilterMessage> {
    let mut expressions = Vec::new();
    for condition in &rule.matches {
        encode(condition, &mut expressions)?;
    }
    if rule.counter {
        expressions.push(ListAttribute::Element(vec![ExpressionAttribute::Name(
            "counter".into(),
        )]));
    }
    expressions.push(
        Expressions::Immediate(vec![
            Immediate::DestinationRegister(Register::Verdict),
            Immediate::Data(DataAttribute::Verdict(vec![VerdictAttribute::Code(
                NftVerdict::Other(verdict_code(rule.verdict)),
            )])),
        ])
        .into(),
    );
    Ok(inet(NfTablesMessage::NewRule(RuleMessage {
        attributes: vec![
            RuleAttribute::Table(TABLE.into()),
            RuleAttribute::Chain(hook.name().into()),
            RuleAttribute::Expressions(expressions),
        ],
    })))
}

fn verdict_code(verdict: Verdict) -> u32 {
    match verdict {
        Verdict::Accept => NF_ACCEPT,
        Verdict::Drop => NF_DROP,
    }
}

/// Appends the expressions that test `condition` (register 1, then compare).
fn encode(condition: &Match, out: &mut Vec<ListAttribute<ExpressionAttribute>>) -> io::Result<()> {
    match condition {
        Match::Oifname(name) => {
            out.push(meta(MetaKey::Oifname));
            out.push(equal(interface_name(name)?));
        }
        Match::Iifname(name) => {
            out.push(meta(MetaKey::Iifname));
            out.push(equal(interface_name(name)?));
        }
        Match::Daddr(address, prefix) => {
            let offset = if address.is_ipv4() { 16 } else { 24 };
            address_match(*address, *prefix, offset, out);
        }
        Match::Saddr(address, prefix) => {
            let offset = if address.is_ipv4() { 12 } else { 8 };
            address_match(*address, *prefix, offset, out);
        }
        Match::Protocol(protocol) => {
            out.push(meta(MetaKey::L4Proto));
            out.push(equal(vec![protocol.number()]));
        }
        Match::Dport(port) => {
            out.push(payload(PAYLOAD_TRANSPORT, 2, 2));
            out.push(equal(port.to_be_bytes().to_vec()));
        }
        Match::Sport(port) => {
            out.push(payload(PAYLOAD_TRANSPORT, 0, 2));
            out.push(equal(port.to_be_bytes().to_vec()));
        }
        Match::Mark(mark) => {
            out.push(meta(MetaKey::Mark));
            // The packet mark is compared in host byte order.
            out.push(equal(mark.to_ne_bytes().to_vec()));
        }
        Match::IcmpType(kind) => {
            out.push(payload(PAYLOAD_TRANSPORT, 0, 1));
            out.push(equal(vec![*kind]));
        }
        Match::Established => {
            // `ct state` into register 1, masked to the two bits, not zero.
            out.push(
                Expressions::Other {
                    expression_type: "ct".into(),
                    attributes: vec![
                        DefaultNla::new(NFTA_CT_DREG, NFT_REG_1.to_be_bytes().to_vec()),
                        DefaultNla::new(NFTA_CT_KEY, NFT_CT_STATE.to_be_bytes().to_vec()),
                    ],
                }
                .into(),
            );
            let mask = (CT_STATE_ESTABLISHED | CT_STATE_RELATED)
                .to_ne_bytes()
                .to_vec();
            out.push(
                Expressions::Bitwise(vec![
                    Bitwise::SourceRegister(Register::Reg1),
                    Bitwise::DestinationRegister(Register::Reg1),
                    Bitwise::Length(4),
                    Bitwise::Mask(DataAttribute::Value(mask)),
                    Bitwise::Xor(DataAttribute::Value(vec![0; 4])),
                ])
                .into(),
            );
            out.push(
                Expressions::Cmp(vec![
                    Cmp::SourceRegister(Register::Reg1),
                    Cmp::Op(Operator::NotEqual),
                    Cmp::Data(DataAttribute::Value(vec![0; 4])),
                ])
                .into(),
            );
        }
    }
    Ok(())
}

/// `meta nfproto FAMILY`, then the address at `offset` of the network header, masked to
/// `prefix` bits when shorter than the address.
fn address_match(
    address: IpAddr,
    prefix: u8,
    offset: u32,
    out: &mut Vec<ListAttribute<ExpressionAttribute>>,
) {
    let (family, octets) = match address {
        IpAddr::V4(v4) => (NFPROTO_IPV4, v4.octets().to_vec()),
        IpAddr::V6(v6) => (NFPROTO_IPV6, v6.octets().to_vec()),
    };
    out.push(meta(MetaKey::Nfproto));
    out.push(equal(vec![family]));
    let length = u32::try_from(octets.len()).unwrap_or(16);
    out.push(payload(PAYLOAD_NETWORK, offset, length));
    let mask = prefix_mask(octets.len(), prefix);
    let network: Vec<u8> = octets.iter().zip(&mask).map(|(a, m)| a & m).collect();
    if mask.iter().any(|&m| m != 0xff) {
        out.push(
            Expressions::Bitwise(vec![
                Bitwise::SourceRegister(Register::Reg1),
                Bitwise::DestinationRegister(Register::Reg1),
                Bitwise::Length(length),
                Bitwise::Mask(DataAttribute::Value(mask)),
                Bitwise::Xor(DataAttribute::Value(vec![0; octets.len()])),
            ])
            .into(),
        );
    }
    out.push(equal(network));
}

/// A netmask of `prefix` one bits over `length` bytes.
fn prefix_mask(length: usize, prefix: u8) -> Vec<u8> {
    let mut remaining = usize::from(prefix);
    (0..length)
        .map(|_| {
            let bits = remaining.min(8);
            remaining -= bits;
            // `bits` ≤ 8, so the shift fits.
            u8::try_from((0xff_u16 << (8 - bits)) & 0xff).unwrap_or(0)
        })
        .collect()
}

fn interface_name(name: &str) -> io::Result<Vec<u8>> {
    if name.is_empty() || name.len() >= IFNAMSIZ || name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a valid interface name"),
        ));
    }
    let mut bytes = name.as_bytes().to_vec();
    bytes.resize(IFNAMSIZ, 0);
    Ok(bytes)
}

fn meta(key: MetaKey) -> ListAttribute<ExpressionAttribute> {
    Expressions::Meta(vec![
        Meta::Key(key),
        Meta::DestinationRegister(Register::Reg1),
    ])
    .into()
}

fn payload(base: u32, offset: u32, length: u32) -> ListAttribute<ExpressionAttribute> {
    Expressions::Payload(vec![
        Payload::DestinationRegister(Register::Reg1),
        Payload::Base(base),
        Payload::Offset(offset),
        Payload::Len(length),
    ])
    .into()
}

fn equal(value: Vec<u8>) -> ListAttribute<ExpressionAttribute> {
    Expressions::Cmp(vec![
        Cmp::SourceRegister(Register::Reg1),
        Cmp::Op(Operator::Equal),
        Cmp::Data(DataAttribute::Value(value)),
    ])
    .into()
}

/// Sends `messages` (each with its extra flags) between a batch begin and end, and waits for
/// the kernel's answer to each: the transaction is applied whole or not at all.
fn transact(messages: Vec<(NetfilterMessage, u16)>) -> io::Result<()> {
    let mut socket = Socket::new(NETLINK_NETFILTER)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    socket2::SockRef::from(&socket).set_read_timeout(Some(TIMEOUT))?;

    let batch = |inner: ControlMessage| {
        NetfilterMessage::new(
            NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, NFNL_SUBSYS_NFTABLES),
            inner,
        )
    };
    let base = std::process::id().wrapping_mul(1 << 10);
    let expected = messages.len();
    let mut all = Vec::with_capacity(expected.saturating_add(2));
    all.push((batch(ControlMessage::BatchBegin), 0, false));
    all.extend(
        messages
            .into_iter()
            .map(|(message, flags)| (message, flags | NLM_F_ACK, true)),
    );
    all.push((batch(ControlMessage::BatchEnd), 0, false));

    let mut buffer = Vec::new();
    let mut sequence = base;
    for (message, flags, _) in all {
        let mut message = NetlinkMessage::from(message);
        message.header.flags = NLM_F_REQUEST | flags;
        message.header.sequence_number = sequence;
        sequence = sequence.wrapping_add(1);
        message.finalize();
        let start = buffer.len();
        buffer.resize(start + message.buffer_len(), 0);
        if let Some(slot) = buffer.get_mut(start..) {
            message.serialize(slot);
        }
    }
    socket.send(&buffer, 0)?;

    let mut answered = 0;
    while answered < expected {
        let (datagram, _) = socket.recv_from_full().map_err(|error| {
            if error.kind() == io::ErrorKind::WouldBlock {
                io::Error::new(io::ErrorKind::TimedOut, "nf_tables did not answer")
            } else {
                error
            }
        })?;
        let mut rest = datagram.as_slice();
        while !rest.is_empty() {
            let reply = NetlinkMessage::<NetfilterMessage>::deserialize(rest)
                .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))?;
            let length = usize::try_from(reply.header.length).unwrap_or(usize::MAX);
            rest = rest.get(length.max(1)..).unwrap_or_default();
            let ours = reply.header.sequence_number.wrapping_sub(base);
            if usize::try_from(ours).unwrap_or(usize::MAX) > expected.saturating_add(1) {
                continue;
            }
            if let NetlinkPayload::Error(error) = reply.payload {
                match error.code {
                    None => answered += 1,
                    // The transaction was aborted: nothing of it is in force.
                    Some(_) => return Err(error.to_io()),
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::prefix_mask;

    #[test]
    fn prefix_masks() {
        assert_eq!(prefix_mask(4, 12), vec![0xff, 0xf0, 0, 0]);
        assert_eq!(prefix_mask(4, 32), vec![0xff; 4]);
        assert_eq!(prefix_mask(4, 0), vec![0; 4]);
        assert_eq!(prefix_mask(16, 10), {
            let mut m = vec![0; 16];
            m[0] = 0xff;
            m[1] = 0xc0;
            m
        });
    }
}
