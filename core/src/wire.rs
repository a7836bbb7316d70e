//! Little building blocks shared by Eddy's binary codecs: LEB128 varints (zigzag for signed
//! integers), length-prefixed strings and bytes, and a bounds-checked [`Reader`] that never panics.

use std::fmt;

/// An error from reading encoded bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireError {
    /// The input ended in the middle of a value.
    Truncated {
        /// Where the value started.
        offset: usize,
        /// What was being read.
        what: &'static str,
    },
    /// A varint longer than ten bytes or overflowing 64 bits.
    VarintOverflow {
        /// Where the varint started.
        offset: usize,
    },
    /// A length or count over its limit.
    TooLong {
        /// Where the length was read.
        offset: usize,
        /// What was being read.
        what: &'static str,
        /// The length found.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// Bytes that are not UTF-8 where a string was expected.
    InvalidUtf8 {
        /// Where the string started.
        offset: usize,
    },
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Truncated { offset, what } => {
                write!(f, "input ends inside {what} at offset {offset}")
            }
            WireError::VarintOverflow { offset } => {
                write!(f, "varint at offset {offset} overflows 64 bits")
            }
            WireError::TooLong {
                offset,
                what,
                len,
                max,
            } => {
                write!(
                    f,
                    "{what} at offset {offset} is {len} long, over the limit of {max}"
                )
            }
            WireError::InvalidUtf8 { offset } => {
                write!(f, "string at offset {offset} is not valid UTF-8")
            }
        }
    }
}

impl std::error::Error for WireError {}

/// Appends `v` as an unsigned LEB128 varint.
pub fn write_u64(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends `v` zigzag-encoded as a varint (small magnitudes take few bytes).
pub fn write_i64(out: &mut Vec<u8>, v: i64) {
    write_u64(out, ((v << 1) ^ (v >> 63)) as u64);
}

/// Appends a varint length followed by the bytes.
pub fn write_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    write_u64(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Appends a varint length followed by the UTF-8 bytes.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    write_bytes(out, s.as_bytes());
}

/// A cursor over encoded bytes; every read is bounds-checked.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, pos: 0 }
    }

    /// The current offset.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes left to read.
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// Reads one byte.
    pub fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        let b = *self.bytes.get(self.pos).ok_or(WireError::Truncated {
            offset: self.pos,
            what,
        })?;
        self.pos += 1;
        Ok(b)
    }

    /// Reads an unsigned varint.
    pub fn u64(&mut self, what: &'static str) -> Result<u64, WireError> {
        let start = self.pos;
        let mut value: u64 = 0;
        for shift in (0..70).step_by(7) {
            let b = *self.bytes.get(self.pos).ok_or(WireError::Truncated {
                offset: start,
                what,
            })?;
            self.pos += 1;
            let low = u64::from(b & 0x7f);
            if shift == 63 && low > 1 {
                return Err(WireError::VarintOverflow { offset: start });
            }
            value |= low << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(WireError::VarintOverflow { offset: start })
    }

    /// Reads a zigzag varint.
    pub fn i64(&mut self, what: &'static str) -> Result<i64, WireError> {
        let v = self.u64(what)?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    /// Reads a varint and checks it against `max` (for lengths and counts, before allocating).
    pub fn len(&mut self, what: &'static str, max: usize) -> Result<usize, WireError> {
        let offset = self.pos;
        let len = self.u64(what)?;
        if len > max as u64 {
            return Err(WireError::TooLong {
                offset,
                what,
                len,
                max: max as u64,
            });
        }
        Ok(len as usize)
    }

    /// Reads exactly `len` bytes.
    pub fn take(&mut self, len: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        let end = self
            .pos
            .checked_add(len)
            .filter(|end| *end <= self.bytes.len());
        let end = end.ok_or(WireError::Truncated {
            offset: self.pos,
            what,
        })?;
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    /// Reads a length-prefixed byte string of at most `max` bytes.
    pub fn bytes(&mut self, what: &'static str, max: usize) -> Result<&'a [u8], WireError> {
        let len = self.len(what, max)?;
        self.take(len, what)
    }

    /// Reads a length-prefixed UTF-8 string of at most `max` bytes.
    pub fn str(&mut self, what: &'static str, max: usize) -> Result<&'a str, WireError> {
        let offset = self.pos;
        let bytes = self.bytes(what, max)?;
        std::str::from_utf8(bytes).map_err(|_| WireError::InvalidUtf8 { offset })
    }

    /// The unread rest of the input.
    pub fn rest(&mut self) -> &'a [u8] {
        let rest = &self.bytes[self.pos..];
        self.pos = self.bytes.len();
        rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn varints_round_trip(u in any::<u64>(), i in any::<i64>()) {
            let mut out = Vec::new();
            write_u64(&mut out, u);
            write_i64(&mut out, i);
            let mut r = Reader::new(&out);
            prop_assert_eq!(r.u64("u").unwrap(), u);
            prop_assert_eq!(r.i64("i").unwrap(), i);
            prop_assert!(r.is_empty());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let mut r = Reader::new(&bytes);
            let _ = r.u64("a");
            let _ = r.str("b", 8);
            let _ = r.i64("c");
        }
    }

    #[test]
    fn known_encodings() {
        let mut out = Vec::new();
        write_u64(&mut out, 300);
        write_i64(&mut out, -1);
        assert_eq!(out, [0xac, 0x02, 0x01]);
        assert!(matches!(
            Reader::new(&[0xff; 11]).u64("x"),
            Err(WireError::VarintOverflow { .. })
        ));
        assert!(matches!(
            Reader::new(&[0x05, b'a']).str("s", 10),
            Err(WireError::Truncated { .. })
        ));
        assert!(matches!(
            Reader::new(&[0x05]).str("s", 4),
            Err(WireError::TooLong { .. })
        ));
    }
}
