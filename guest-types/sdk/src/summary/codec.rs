//! The primitives of the summary encodings: a tag byte, little-endian `f64`s, LEB128
//! `varint`s, length-prefixed UTF-8 texts and length-prefixed bytes (another summary's
//! encoding, nested).

use std::fmt;

/// Why a summary did not decode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError(String);

impl DecodeError {
    /// An error saying `what` is wrong.
    pub fn new(what: impl Into<String>) -> Self {
        Self(what.into())
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DecodeError {}

/// Writes an encoding.
#[derive(Debug, Default)]
pub struct Writer {
    bytes: Vec<u8>,
}

impl Writer {
    /// An encoding starting with `tag`.
    pub fn new(tag: u8) -> Self {
        Self { bytes: vec![tag] }
    }

    /// One byte.
    pub fn u8(&mut self, byte: u8) {
        self.bytes.push(byte);
    }

    /// A little-endian IEEE 754 double.
    pub fn f64(&mut self, n: f64) {
        self.bytes.extend_from_slice(&n.to_le_bytes());
    }

    /// An unsigned LEB128 number.
    pub fn varint(&mut self, mut n: u64) {
        loop {
            let low = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                self.bytes.push(low);
                return;
            }
            self.bytes.push(low | 0x80);
        }
    }

    /// A `varint` byte length, then the UTF-8 bytes.
    pub fn text(&mut self, text: &str) {
        self.varint(text.len() as u64);
        self.bytes.extend_from_slice(text.as_bytes());
    }

    /// A `varint` byte length, then the bytes: how a summary nests another's encoding
    /// (read back with [`Reader::bytes`]).
    pub fn bytes(&mut self, bytes: &[u8]) {
        self.varint(bytes.len() as u64);
        self.bytes.extend_from_slice(bytes);
    }

    /// The bytes as they are, without a length: to append another summary's whole encoding
    /// at the end of this one (read back with [`Reader::rest`]).
    ///
    /// ```
    /// use komoku_guest::summary::{Reader, Writer};
    /// let inner = vec![b'N', 1, 2];
    /// let mut w = Writer::new(b'P');
    /// w.f64(12.5);
    /// w.raw(&inner);
    /// let bytes = w.finish();
    /// let mut r = Reader::new(&bytes, b'P')?;
    /// assert_eq!(r.f64()?, 12.5);
    /// assert_eq!(r.rest(), &inner[..]);
    /// # Ok::<(), komoku_guest::summary::DecodeError>(())
    /// ```
    pub fn raw(&mut self, bytes: &[u8]) {
        self.bytes.extend_from_slice(bytes);
    }

    /// The encoding.
    pub fn finish(self) -> Vec<u8> {
        self.bytes
    }
}

/// Reads an encoding written by [`Writer`].
#[derive(Debug)]
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `bytes`, which must start with `tag`.
    pub fn new(bytes: &'a [u8], tag: u8) -> Result<Self, DecodeError> {
        match bytes.split_first() {
            Some((&found, rest)) if found == tag => Ok(Self { rest }),
            Some((&found, _)) => Err(DecodeError::new(format!(
                "tag {:?} instead of {:?}",
                char::from(found),
                char::from(tag)
            ))),
            None => Err(DecodeError::new("empty summary")),
        }
    }

    /// The next `n` bytes.
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.rest.len() < n {
            return Err(DecodeError::new("summary cut short"));
        }
        let (taken, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(taken)
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    /// A little-endian IEEE 754 double.
    pub fn f64(&mut self) -> Result<f64, DecodeError> {
        let bytes: [u8; 8] = self.take(8)?.try_into().expect("took exactly 8 bytes");
        Ok(f64::from_le_bytes(bytes))
    }

    /// An unsigned LEB128 number.
    pub fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.u8()?;
            n |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(DecodeError::new("varint too long"))
    }

    /// A `varint` length, then that many bytes of UTF-8.
    pub fn text(&mut self) -> Result<String, DecodeError> {
        let len = usize::try_from(self.varint()?)
            .map_err(|_| DecodeError::new("text length too large"))?;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::new("text is not UTF-8"))
    }

    /// A `varint` length, then that many bytes (written by [`Writer::bytes`]).
    pub fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = usize::try_from(self.varint()?)
            .map_err(|_| DecodeError::new("byte length too large"))?;
        self.take(len)
    }

    /// Everything not read yet (another summary's encoding appended with [`Writer::raw`]);
    /// the reader is used up.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }

    /// Checks that nothing is left.
    pub fn finish(self) -> Result<(), DecodeError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::new(format!(
                "{} trailing bytes",
                self.rest.len()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primitives_round_trip() -> Result<(), DecodeError> {
        let mut w = Writer::new(b'X');
        w.u8(7);
        w.f64(-1.5);
        for n in [0, 127, 128, 300, u64::MAX] {
            w.varint(n);
        }
        w.text("héllo");
        w.bytes(&[b'N', 0, 1]);
        let bytes = w.finish();
        let mut r = Reader::new(&bytes, b'X')?;
        assert_eq!(r.u8()?, 7);
        assert_eq!(r.f64()?, -1.5);
        for n in [0, 127, 128, 300, u64::MAX] {
            assert_eq!(r.varint()?, n);
        }
        assert_eq!(r.text()?, "héllo");
        assert_eq!(r.bytes()?, &[b'N', 0, 1]);
        r.finish()?;
        assert!(Reader::new(&bytes, b'Y').is_err());
        assert!(Reader::new(&bytes[..bytes.len() - 1], b'X').is_ok());
        Ok(())
    }

    #[test]
    fn reader_refuses_short_and_trailing_input() -> Result<(), DecodeError> {
        let mut r = Reader::new(&[b'X', 1, 2], b'X')?;
        assert!(r.f64().is_err());
        let r = Reader::new(&[b'X', 1], b'X')?;
        assert!(r.finish().is_err());
        Ok(())
    }
}
