//! A bounds-checked cursor over received octets.

use super::error::ParseError;

/// A cursor over a byte slice that reads big-endian integers and sub-slices.
///
/// Every read that runs past the end returns [`ParseError::Truncated`] naming the structure
/// the reader was created for; nothing panics and nothing allocates.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    rest: &'a [u8],
    consumed: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// Creates a reader over `bytes`; `what` names the structure in truncation errors.
    pub fn new(bytes: &'a [u8], what: &'static str) -> Self {
        Self {
            rest: bytes,
            consumed: 0,
            what,
        }
    }

    /// Reads one octet.
    ///
    /// # Errors
    ///
    /// [`ParseError::Truncated`] if no octet is left.
    pub fn u8(&mut self) -> Result<u8, ParseError> {
        self.array::<1>().map(u8::from_be_bytes)
    }

    /// Reads a big-endian 16-bit integer.
    ///
    /// # Errors
    ///
    /// [`ParseError::Truncated`] if fewer than 2 octets are left.
    pub fn u16(&mut self) -> Result<u16, ParseError> {
        self.array().map(u16::from_be_bytes)
    }

    /// Reads a big-endian 32-bit integer.
    ///
    /// # Errors
    ///
    /// [`ParseError::Truncated`] if fewer than 4 octets are left.
    pub fn u32(&mut self) -> Result<u32, ParseError> {
        self.array().map(u32::from_be_bytes)
    }

    /// Reads a big-endian 64-bit integer.
    ///
    /// # Errors
    ///
    /// [`ParseError::Truncated`] if fewer than 8 octets are left.
    pub fn u64(&mut self) -> Result<u64, ParseError> {
        self.array().map(u64::from_be_bytes)
    }

    /// Reads exactly `N` octets into an array.
    ///
    /// # Errors
    ///
    /// [`ParseError::Truncated`] if fewer than `N` octets are left.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], ParseError> {
        let bytes = self.take(N)?;
        <[u8; N]>::try_from(bytes).map_err(|_| self.truncated())
    }

    /// Reads the next `n` octets as a sub-slice.
    ///
    /// # Errors
    ///
    /// [`ParseError::Truncated`] if fewer than `n` octets are left; the reader is unchanged.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], ParseError> {
        let (head, tail) = self
            .rest
            .split_at_checked(n)
            .ok_or_else(|| self.truncated())?;
        self.rest = tail;
        self.consumed = self.consumed.saturating_add(n);
        Ok(head)
    }

    /// Reads the next `n` octets as a new reader whose errors name `what`.
    ///
    /// # Errors
    ///
    /// [`ParseError::Truncated`] (naming this reader's structure) if fewer than `n` octets are
    /// left.
    pub fn sub(&mut self, n: usize, what: &'static str) -> Result<Self, ParseError> {
        self.take(n).map(|bytes| Self::new(bytes, what))
    }

    /// Reads all remaining octets.
    pub fn rest(&mut self) -> &'a [u8] {
        let rest = self.rest;
        self.consumed = self.consumed.saturating_add(rest.len());
        self.rest = &[];
        rest
    }

    /// The remaining octets, without consuming them.
    pub fn peek_rest(&self) -> &'a [u8] {
        self.rest
    }

    /// The number of octets left.
    pub fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// Whether every octet has been read.
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// The number of octets read so far.
    pub fn position(&self) -> usize {
        self.consumed
    }

    /// Fails with [`ParseError::TrailingData`] unless every octet has been read.
    ///
    /// # Errors
    ///
    /// [`ParseError::TrailingData`] naming this reader's structure.
    pub fn finish(&self) -> Result<(), ParseError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(ParseError::TrailingData { what: self.what })
        }
    }

    /// The truncation error for this reader's structure.
    pub fn truncated(&self) -> ParseError {
        ParseError::Truncated { what: self.what }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_big_endian_and_tracks_position() {
        let bytes = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17];
        let mut r = Reader::new(&bytes, "test");
        assert_eq!(r.u8(), Ok(1));
        assert_eq!(r.u16(), Ok(0x0203));
        assert_eq!(r.u32(), Ok(0x0405_0607));
        assert_eq!(r.u64(), Ok(0x0809_0a0b_0c0d_0e0f));
        assert_eq!(r.position(), 15);
        assert_eq!(r.remaining(), 2);
        assert_eq!(r.finish(), Err(ParseError::TrailingData { what: "test" }));
        assert_eq!(r.peek_rest(), &[16, 17]);
        assert_eq!(r.rest(), &[16, 17]);
        assert!(r.is_empty());
        assert_eq!(r.finish(), Ok(()));
        assert_eq!(r.position(), 17);
    }

    #[test]
    fn short_reads_fail_without_consuming() {
        let mut r = Reader::new(&[1, 2, 3], "thing");
        let err = ParseError::Truncated { what: "thing" };
        assert_eq!(r.u32(), Err(err));
        assert_eq!(r.u64(), Err(err));
        assert_eq!(r.take(4), Err(err));
        assert_eq!(r.sub(4, "inner").err(), Some(err));
        assert_eq!(r.remaining(), 3);
        let mut inner = r.sub(2, "inner").unwrap();
        assert_eq!(inner.u16(), Ok(0x0102));
        assert_eq!(inner.u8(), Err(ParseError::Truncated { what: "inner" }));
        assert_eq!(r.u16(), Err(err));
        assert_eq!(r.u8(), Ok(3));
        assert_eq!(r.u8(), Err(err));
        assert_eq!(r.take(0), Ok(&[][..]));
    }
}
