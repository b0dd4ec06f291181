//! The anti-replay window ([RFC 4303 §3.4.3], Appendix A) and ESN inference (Appendix A2).
//!
//! The bitmap is a ring of 64-bit words indexed by `seq / 64` (the [RFC 6479] layout): a packet
//! costs one word test, and advancing the window clears at most one ring's worth of words
//! instead of shifting the whole bitmap.
//!
//! [RFC 4303 §3.4.3]: https://www.rfc-editor.org/rfc/rfc4303#section-3.4.3
//! [RFC 6479]: https://www.rfc-editor.org/rfc/rfc6479

use super::Error;

/// Window size used unless configured otherwise; RFC 4303 §3.4.3 says 64 SHOULD be the default.
pub const DEFAULT_REPLAY_WINDOW: u32 = 64;
/// The smallest window: RFC 4303 §3.4.3 requires 32 to be supported.
pub const MIN_REPLAY_WINDOW: u32 = 32;
/// The largest window this implementation accepts.
pub const MAX_REPLAY_WINDOW: u32 = 4096;

const WORD_BITS: u64 = u64::BITS as u64;

/// Sliding anti-replay window for one inbound Child SA ([RFC 4303 §3.4.3]).
///
/// Call [`check`](Self::check) before the ICV is verified and [`update`](Self::update) only
/// after it succeeds, so forged packets cannot advance the window. Sequence numbers are 64-bit;
/// without ESN only the low 32 bits are ever used. Sequence number 0 is never sent (the
/// counter starts at 1), so it always reads as a replay.
///
/// [RFC 4303 §3.4.3]: https://www.rfc-editor.org/rfc/rfc4303#section-3.4.3
#[derive(Clone, PartialEq, Eq)]
pub struct ReplayWindow {
    /// Ring of `ceil(size / 64) + 1` words; bit `seq % 64` of word `(seq / 64) % len`.
    bits: Box<[u64]>,
    /// Window size W in packets.
    size: u32,
    /// The highest sequence number authenticated so far (T).
    top: u64,
}

impl ReplayWindow {
    /// A window of `size` packets, nothing received yet.
    ///
    /// # Errors
    ///
    /// [`Error::ApiMisuse`] unless `size` lies in
    /// [`MIN_REPLAY_WINDOW`]`..=`[`MAX_REPLAY_WINDOW`].
    pub fn new(size: u32) -> Result<Self, Error> {
        if !(MIN_REPLAY_WINDOW..=MAX_REPLAY_WINDOW).contains(&size) {
            return Err(Error::ApiMisuse("replay window must be 32 to 4096 packets"));
        }
        // One spare word so the W bits below `top` never share a word with bits ahead of it.
        let words = size.div_ceil(u64::BITS) as usize + 1;
        let mut bits = vec![0u64; words].into_boxed_slice();
        // Sequence number 0 counts as received.
        if let Some(first) = bits.first_mut() {
            *first = 1;
        }
        Ok(Self { bits, size, top: 0 })
    }

    /// The window size W in packets.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// The highest sequence number accepted so far, 0 before the first packet.
    pub fn top(&self) -> u64 {
        self.top
    }

    /// Checks whether `seq` may be accepted, without changing the window.
    ///
    /// # Errors
    ///
    /// [`Error::TooOld`] below the window, [`Error::Replay`] if `seq` was already received.
    pub fn check(&self, seq: u64) -> Result<(), Error> {
        if seq > self.top {
            return Ok(());
        }
        if self.top - seq >= u64::from(self.size) {
            return Err(Error::TooOld(seq));
        }
        let (word, mask) = self.position(seq);
        if self.bits.get(word).is_some_and(|w| w & mask != 0) {
            return Err(Error::Replay(seq));
        }
        Ok(())
    }

    /// Marks `seq` as received, advancing the window if it is ahead.
    ///
    /// Call only after `seq`'s packet passed the ICV check. A number below the window is
    /// ignored.
    pub fn update(&mut self, seq: u64) {
        if seq > self.top {
            self.advance(seq);
        } else if self.top - seq >= u64::from(self.size) {
            return;
        }
        let (word, mask) = self.position(seq);
        if let Some(w) = self.bits.get_mut(word) {
            *w |= mask;
        }
    }

    /// Infers the full 64-bit sequence number of a packet carrying `seq_low` with ESN
    /// ([RFC 4303 Appendix A2.2]).
    ///
    /// Numbers in or ahead of the window map to the current 2^32 block; numbers far below the
    /// window's low edge are taken to have wrapped into the next block. While the window still
    /// straddles the start of the counter (nothing before block 0 exists), the current block is
    /// used.
    ///
    /// [RFC 4303 Appendix A2.2]: https://www.rfc-editor.org/rfc/rfc4303#appendix-A.2.2
    pub fn infer_esn(&self, seq_low: u32) -> u64 {
        let top_low = self.top as u32;
        let top_high = (self.top >> 32) as u32;
        let window = self.size;
        let bottom = top_low.wrapping_sub(window).wrapping_add(1);
        let high = if top_low >= window - 1 {
            // Case A: the window lies within one block.
            if seq_low >= bottom {
                top_high
            } else {
                top_high.wrapping_add(1)
            }
        } else if seq_low >= bottom {
            // Case B: the window spans two blocks and `seq_low` is in the upper part of the
            // previous one.
            top_high.checked_sub(1).unwrap_or(top_high)
        } else {
            top_high
        };
        (u64::from(high) << 32) | u64::from(seq_low)
    }

    fn position(&self, seq: u64) -> (usize, u64) {
        let words = self.bits.len() as u64;
        let word = (seq / WORD_BITS) % words;
        (word as usize, 1u64 << (seq % WORD_BITS))
    }

    /// Moves `top` to `seq`, clearing the words that enter the window.
    fn advance(&mut self, seq: u64) {
        let words = self.bits.len() as u64;
        let old_block = self.top / WORD_BITS;
        let new_block = seq / WORD_BITS;
        let steps = new_block - old_block;
        if steps >= words {
            self.bits.fill(0);
        } else {
            for block in old_block + 1..=new_block {
                if let Some(w) = self.bits.get_mut((block % words) as usize) {
                    *w = 0;
                }
            }
        }
        self.top = seq;
    }
}

impl core::fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ReplayWindow")
            .field("size", &self.size)
            .field("top", &self.top)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn esp_replay_sizes_outside_the_range_are_refused() {
        for size in [0, 31, 4097, u32::MAX] {
            assert!(matches!(ReplayWindow::new(size), Err(Error::ApiMisuse(_))));
        }
        for size in [32, 63, 64, 65, 1000, 4096] {
            assert_eq!(ReplayWindow::new(size).unwrap().size(), size);
        }
    }

    #[test]
    fn esp_replay_zero_is_never_accepted() {
        let w = ReplayWindow::new(64).unwrap();
        assert_eq!(w.check(0), Err(Error::Replay(0)));
        assert_eq!(w.check(1), Ok(()));
    }

    #[test]
    fn esp_replay_duplicates_are_rejected_only_after_update() {
        let mut w = ReplayWindow::new(64).unwrap();
        assert_eq!(w.check(5), Ok(()));
        // A check alone (a packet that then fails its ICV) leaves the window as it was.
        assert_eq!(w.check(5), Ok(()));
        w.update(5);
        assert_eq!(w.check(5), Err(Error::Replay(5)));
        assert_eq!(w.check(4), Ok(()));
        assert_eq!(w.top(), 5);
    }

    #[test]
    fn esp_replay_window_edge() {
        for size in [32, 64, 100, 4096] {
            let mut w = ReplayWindow::new(size).unwrap();
            let top = 10_000;
            w.update(top);
            let lowest = top - u64::from(size) + 1;
            assert_eq!(w.check(lowest), Ok(()), "W={size}");
            assert_eq!(
                w.check(lowest - 1),
                Err(Error::TooOld(lowest - 1)),
                "W={size}"
            );
            w.update(lowest);
            assert_eq!(w.check(lowest), Err(Error::Replay(lowest)));
            // One step forward pushes `lowest` out of the window.
            w.update(top + 1);
            assert_eq!(w.check(lowest), Err(Error::TooOld(lowest)));
            assert_eq!(w.check(lowest + 1), Ok(()));
        }
    }

    #[test]
    fn esp_replay_large_jumps_clear_stale_bits() {
        let mut w = ReplayWindow::new(64).unwrap();
        for seq in 1..=64 {
            w.update(seq);
        }
        // Jump by exactly the ring size and by more: no old bit may survive at the new index.
        for jump in [128, 192, 5000, 1 << 40] {
            let top = w.top() + jump;
            w.update(top);
            for seq in top - 63..top {
                assert_eq!(w.check(seq), Ok(()), "jump {jump}, seq {seq}");
            }
            assert_eq!(w.check(top), Err(Error::Replay(top)));
            for seq in top - 63..top {
                w.update(seq);
            }
        }
    }

    #[test]
    fn esp_replay_update_below_the_window_is_ignored() {
        let mut w = ReplayWindow::new(64).unwrap();
        w.update(1000);
        let before = w.clone();
        w.update(900);
        assert_eq!(w, before);
    }

    #[test]
    fn esp_replay_esn_inference_follows_appendix_a2() {
        let mut w = ReplayWindow::new(64).unwrap();
        // Start: the window straddles the counter start; there is no block before 0.
        assert_eq!(w.infer_esn(1), 1);
        assert_eq!(w.infer_esn(u32::MAX), u64::from(u32::MAX));
        // Case A, just before the wrap: in-window and ahead stay, far below wraps forward.
        w.update(0xffff_fff0);
        assert_eq!(w.infer_esn(0xffff_ffb1), 0xffff_ffb1);
        assert_eq!(w.infer_esn(0xffff_ffff), 0xffff_ffff);
        assert_eq!(w.infer_esn(2), (1 << 32) | 2);
        // Case B, just after the wrap: the upper part of the old block stays in block 0.
        w.update((1 << 32) | 2);
        assert_eq!(w.infer_esn(0xffff_fff0), 0xffff_fff0);
        assert_eq!(w.infer_esn(1), (1 << 32) | 1);
        assert_eq!(w.infer_esn(3), (1 << 32) | 3);
        assert_eq!(w.infer_esn(0x8000_0000), (1 << 32) | 0x8000_0000);
        // The top of the 64-bit space.
        let mut w = ReplayWindow::new(64).unwrap();
        w.update(u64::MAX - 5);
        assert_eq!(w.infer_esn(u32::MAX), u64::MAX);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// The ring bitmap against a set of every received number.
        #[test]
        fn esp_replay_matches_a_naive_model(
            size in MIN_REPLAY_WINDOW..=300u32,
            steps in proptest::collection::vec((0u64..400, any::<bool>(), any::<bool>()), 1..300),
        ) {
            let mut w = ReplayWindow::new(size).unwrap();
            let mut seen = BTreeSet::from([0u64]);
            let mut top = 0u64;
            for (delta, forward, accept) in steps {
                let seq = if forward { top + delta } else { top.saturating_sub(delta) };
                let expected = if seq + u64::from(size) <= top {
                    Err(Error::TooOld(seq))
                } else if seen.contains(&seq) {
                    Err(Error::Replay(seq))
                } else {
                    Ok(())
                };
                prop_assert_eq!(w.check(seq), expected.clone());
                if expected.is_ok() && accept {
                    w.update(seq);
                    seen.insert(seq);
                    top = top.max(seq);
                }
                prop_assert_eq!(w.top(), top);
            }
        }
    }
}
