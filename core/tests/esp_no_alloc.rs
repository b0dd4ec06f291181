//! `seal` and `open` never allocate: a counting global allocator watches this thread while
//! packets of every supported cipher go through both directions.

#![expect(unsafe_code, reason = "a GlobalAlloc wrapper is an unsafe trait impl")]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use pqvpn_core::crypto::{AeadAlgorithm, RustCrypto, SecretBytes};
use pqvpn_core::esp::{
    Error, EspSpi, Inbound, InboundSa, OutboundSa, PAYLOAD_OFFSET, SaConfig, sealed_len,
};

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

struct Counting;

// SAFETY: every call is forwarded unchanged to `System`; the counter only reads and writes a
// const-initialised thread-local `Cell`, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: the caller's contract for `alloc` is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: the caller's contract for `realloc` is passed on unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn esp_seal_and_open_do_not_allocate() {
    // The counter itself works.
    let probe = allocations();
    drop(std::hint::black_box(Vec::<u8>::with_capacity(16)));
    assert!(allocations() > probe, "the counting allocator sees nothing");

    let provider = RustCrypto::new();
    for algorithm in [
        AeadAlgorithm::Aes128Gcm16,
        AeadAlgorithm::Aes256Gcm16,
        AeadAlgorithm::ChaCha20Poly1305,
    ] {
        for esn in [false, true] {
            let mut config = SaConfig::new(algorithm);
            config.esn = esn;
            let keymat = SecretBytes::new(vec![7; algorithm.keymat_len()]);
            let spi = EspSpi(0x4242);
            let mut tx = OutboundSa::new(&provider, &config, spi, &keymat).unwrap();
            let mut rx = InboundSa::new(&provider, &config, spi, &keymat).unwrap();
            let mut packet = vec![0x11u8; 1400];
            packet[0] = 0x45;
            packet[2..4].copy_from_slice(&1400u16.to_be_bytes());
            let mut datagram = vec![0u8; sealed_len(1400)];
            let mut tun = vec![0u8; sealed_len(1400)];
            let mut buf = vec![0u8; sealed_len(1400)];
            buf[PAYLOAD_OFFSET..][..1400].copy_from_slice(&packet);

            let before = allocations();
            for _ in 0..100 {
                let n = tx.seal(&packet, &mut datagram).unwrap();
                assert!(matches!(
                    rx.open(&datagram[..n], &mut tun),
                    Ok(Inbound::Ipv4(_))
                ));
                // Drop paths: a replay, then a forgery.
                assert_eq!(
                    rx.open(&datagram[..n], &mut tun),
                    Err(Error::Replay(tx.sequence_number()))
                );
                let n = tx.seal(&packet, &mut datagram).unwrap();
                datagram[30] ^= 1;
                assert_eq!(
                    rx.open(&datagram[..n], &mut tun),
                    Err(Error::AuthenticationFailed)
                );
                // The zero-copy pair; opening puts the packet back at PAYLOAD_OFFSET.
                let n = tx.seal_in_place(&mut buf, 1400).unwrap();
                assert!(matches!(
                    rx.open_in_place(&mut buf[..n]),
                    Ok(Inbound::Ipv4(_))
                ));
            }
            assert_eq!(allocations() - before, 0, "{algorithm} esn={esn}");
        }
    }
}
