//! The `reassembly` target: RFC 7383 fragment sequences, authentic and forged.

use super::*;

/// Most records one [`reassembly`] input is cut into.
const MAX_RECORDS: usize = 64;
/// Most records of one input whose chunk is stretched 256-fold.
const MAX_BIG_RECORDS: usize = 4;
/// What a [`Reassembly`] may hold, as `Debug` output: 64 KiB of plaintext (the documented
/// limit) plus one fragment, at most 6 characters per octet, and the bookkeeping.
const MAX_HELD_DEBUG: usize = 6 * (64 + 64) * 1024 + 16 * 1024;

/// Per fragment number, the chunks delivered for it.
type Slots = Vec<Vec<Vec<u8>>>;

/// Drives RFC 7383 reassembly with fragment sequences: each record is sealed with the real SK
/// key of the receiving `SkCipher`, so the fuzzer reaches the logic past the AEAD.
///
/// `data[0] & 3` picks the AEAD. Then records `kind | number | total | len | chunk (len)`:
/// `kind` bits 0-1 are the Message ID, bit 2 the Response flag, bits 3-4 the action
/// (0, 1: an authentic fragment `number` of `total`; 2: the same with a broken ICV; 3: `chunk`
/// parsed as a payload chain and protected as a whole genuine fragment set of at most
/// `64 + total` octets each, delivered rotated by `number` with its first fragment twice),
/// bit 5 stretches `chunk` 256-fold, bits 6-7 the first inner type of fragment 1.
///
/// Invariants: nothing panics; a forged fragment is refused and changes nothing; a message
/// completes only once every fragment `1..=total` of its Message ID, flag and total was
/// delivered authentically, and its plaintext is those chunks in order; a genuine fragment set
/// completes to exactly its payloads; what is held stays bounded.
pub fn reassembly(data: &[u8]) {
    let Some((&flags, mut records)) = data.split_first() else {
        return;
    };
    let algorithm = match flags & 3 {
        0 => AeadAlgorithm::Aes128Gcm16,
        1 => AeadAlgorithm::Aes256Gcm16,
        _ => AeadAlgorithm::ChaCha20Poly1305,
    };
    let provider = DeterministicProvider::new(3);
    let len = algorithm.keymat_len();
    let a = SecretBytes::new((0..len).map(|i| i as u8).collect());
    let b = SecretBytes::new((0..len).map(|i| (i as u8).wrapping_add(0x80)).collect());
    let (Ok(mut sender), Ok(receiver), Ok(key)) = (
        SkCipher::new(&provider, algorithm, &a, &b),
        SkCipher::new(&provider, algorithm, &b, &a),
        AeadKey::new(&provider, algorithm, a.expose()),
    ) else {
        return;
    };
    let mut reassembly = Reassembly::default();
    // Per (Message ID, Response, Total Fragments): the chunks delivered authentically for each
    // fragment number since that message last completed.
    let mut delivered: HashMap<(u32, bool, u16), Slots> = HashMap::new();
    let mut iv = FORGED_IV;
    let mut genuine_id = 0x1000u32;
    let mut big = 0;
    for _ in 0..MAX_RECORDS {
        let Some((&[kind, number, total, len], rest)) = records.split_first_chunk::<4>() else {
            break;
        };
        let (chunk, rest) = rest.split_at(usize::from(len).min(rest.len()));
        records = rest;
        let message_id = u32::from(kind & 3);
        let response = kind & 4 != 0;
        let first = [
            PayloadType::Notify,
            PayloadType::IdentificationInitiator,
            PayloadType::SecurityAssociation,
            PayloadType::Unknown(0xfe),
        ]
        .get(usize::from(kind >> 6))
        .copied()
        .unwrap_or(PayloadType::Notify);
        let flags = Flags {
            initiator: !response,
            version: false,
            response,
        };
        let action = (kind >> 3) & 3;
        if action == 3 {
            genuine_id += 1;
            let header = Header::new(
                IkeSpi(1),
                IkeSpi(2),
                ExchangeType::IkeAuth,
                flags,
                MessageId(genuine_id),
            );
            genuine_set(
                &mut sender,
                &receiver,
                &mut reassembly,
                &header,
                number,
                total,
                first,
                chunk,
            );
            continue;
        }
        let chunk = if kind & 0x20 != 0 && big < MAX_BIG_RECORDS {
            big += 1;
            chunk.repeat(256)
        } else {
            chunk.to_vec()
        };
        let Ok(numbers) = FragmentNumbers::new(u16::from(number), u16::from(total)) else {
            continue; // cannot be on the wire: the parser refuses it
        };
        let header = Header::new(
            IkeSpi(1),
            IkeSpi(2),
            ExchangeType::IkeAuth,
            flags,
            MessageId(message_id),
        );
        let next = if number == 1 {
            first
        } else {
            PayloadType::NoNextPayload
        };
        let mut datagram = seal(&key, &header, next, Some(numbers), &chunk, iv);
        iv += 1;
        let forged = action == 2;
        if forged && let Some(last) = datagram.last_mut() {
            *last ^= 1;
        }
        let view = locate_encrypted(&datagram);
        assert!(
            matches!(view, Ok(Some(_))),
            "a fragment the harness sealed does not parse"
        );
        let Ok(Some(view)) = view else {
            continue;
        };
        if forged {
            // Refused, or ignored as a duplicate of a fragment held: never a completion.
            let before = format!("{reassembly:?}");
            assert!(
                matches!(reassembly.add(&receiver, &view), Err(_) | Ok(None)),
                "forged fragment completed a message"
            );
            assert_eq!(
                before,
                format!("{reassembly:?}"),
                "forged fragment changed state"
            );
            continue;
        }
        let message = (message_id, response, numbers.total_fragments);
        let slots = delivered
            .entry(message)
            .or_insert_with(|| vec![Vec::new(); usize::from(numbers.total_fragments)]);
        if let Some(slot) = slots.get_mut(usize::from(number) - 1)
            && !slot.contains(&chunk)
        {
            slot.push(chunk);
        }
        if let Ok(Some(u)) = reassembly.add(&receiver, &view) {
            assert_eq!(
                u.header.message_id,
                MessageId(message_id),
                "completed another message"
            );
            assert_eq!(
                u.header.flags.response, response,
                "completed another message"
            );
            let slots = delivered.remove(&message).unwrap_or_default();
            assert!(
                is_concatenation(&u.plaintext, &slots),
                "completed without every fragment, or with other octets"
            );
        }
    }
    assert!(
        format!("{reassembly:?}").len() <= MAX_HELD_DEBUG,
        "reassembly holds more than its limit"
    );
}

/// Whether `plaintext` is one candidate of `slots[0]`, then one of `slots[1]`, … in order.
fn is_concatenation(plaintext: &[u8], slots: &Slots) -> bool {
    let mut offsets = vec![0usize];
    for candidates in slots {
        let mut next: Vec<usize> = offsets
            .iter()
            .flat_map(|&at| {
                candidates.iter().filter_map(move |c| {
                    let end = at.checked_add(c.len())?;
                    (plaintext.get(at..end) == Some(c.as_slice())).then_some(end)
                })
            })
            .collect();
        next.sort_unstable();
        next.dedup();
        offsets = next;
    }
    offsets.contains(&plaintext.len())
}

/// Action 3 of [`reassembly`]: `chunk` as a payload chain, fragmented by our own sender and
/// delivered whole, must come back as exactly those payloads.
#[expect(clippy::too_many_arguments, reason = "one record of the input")]
fn genuine_set(
    sender: &mut SkCipher,
    receiver: &SkCipher,
    reassembly: &mut Reassembly,
    header: &Header,
    rotate: u8,
    size: u8,
    first: PayloadType,
    chunk: &[u8],
) {
    let Ok(payloads) = parse_payloads(first, chunk) else {
        return;
    };
    let max = Header::LEN + 48 + 16 + usize::from(size);
    let Ok(protected) = sender.protect(header, &payloads, Some(max)) else {
        return;
    };
    let mut order = protected.datagrams;
    if order.len() < 2 {
        return;
    }
    let n = order.len();
    order.rotate_left(usize::from(rotate) % n);
    if let Some(d) = order.first().cloned() {
        order.insert(1, d);
    }
    let last = order.len() - 1;
    for (i, d) in order.iter().enumerate() {
        let view = locate_encrypted(d);
        assert!(
            matches!(view, Ok(Some(_))),
            "a fragment we protected does not parse"
        );
        let Ok(Some(view)) = view else {
            return;
        };
        let result = reassembly.add(receiver, &view);
        if i < last {
            assert!(
                matches!(result, Ok(None)),
                "genuine set completed early or failed: {result:?}"
            );
        } else {
            assert!(
                matches!(result, Ok(Some(_))),
                "genuine fragment set did not complete: {result:?}"
            );
            let Ok(Some(u)) = result else {
                return;
            };
            assert_eq!(
                u.payloads, payloads,
                "genuine set reassembled to other payloads"
            );
            assert_eq!(
                u.plaintext, protected.plaintext,
                "genuine set plaintext differs"
            );
        }
    }
}
