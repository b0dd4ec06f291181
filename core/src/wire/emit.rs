//! Helpers shared by the emitters: length fields written after their contents.

/// Converts a length to a 16-bit field, saturating at `u16::MAX`.
///
/// Emitters are infallible; a structure too large for its length field yields octets that the
/// parser rejects rather than a panic.
pub(super) fn len16(len: usize) -> u16 {
    u16::try_from(len).unwrap_or(u16::MAX)
}

/// Converts a count to an 8-bit field, saturating at `u8::MAX`.
pub(super) fn count8(n: usize) -> u8 {
    u8::try_from(n).unwrap_or(u8::MAX)
}

/// Overwrites the 16-bit big-endian field at `at` (does nothing if out of range).
pub(super) fn patch_u16(out: &mut [u8], at: usize, value: u16) {
    if let Some(dst) = out.get_mut(at..at.saturating_add(2)) {
        dst.copy_from_slice(&value.to_be_bytes());
    }
}

/// Overwrites the 32-bit big-endian field at `at` (does nothing if out of range).
pub(super) fn patch_u32(out: &mut [u8], at: usize, value: u32) {
    if let Some(dst) = out.get_mut(at..at.saturating_add(4)) {
        dst.copy_from_slice(&value.to_be_bytes());
    }
}

/// Overwrites the octet at `at` (does nothing if out of range).
pub(super) fn patch_u8(out: &mut [u8], at: usize, value: u8) {
    if let Some(dst) = out.get_mut(at) {
        *dst = value;
    }
}

/// Patches the 16-bit length field at `at` with the number of octets written since `start`.
pub(super) fn close_len16(out: &mut [u8], at: usize, start: usize) {
    let len = len16(out.len().saturating_sub(start));
    patch_u16(out, at, len);
}
