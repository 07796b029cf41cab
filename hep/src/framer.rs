//! Cutting a TCP/TLS byte stream into HEP3 frames by their length field.
//!
//! HEP has no stream framing beyond the HEP3 header's total length (spec/hep.md §1.1), so a
//! receiver reads 6 bytes, checks the magic, and takes `length` bytes. HEPv1/v2 cannot be framed
//! on a stream and are refused like any other bad magic.

use bytes::{Bytes, BytesMut};

/// Why the stream cannot be framed. The stream is unusable after this (there is no way to find
/// the next frame boundary): the error repeats on every call, and the caller should close it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The frame does not start with "HEP3" (or "EEP3").
    #[error("not a HEP3 frame at stream offset {offset}: starts with {found:02x?}")]
    BadMagic {
        /// Stream offset of the frame start (bytes returned in earlier frames).
        offset: u64,
        /// The leading bytes seen (up to four).
        found: Vec<u8>,
    },
    /// The frame's length field is below the 6-byte header.
    #[error("bad HEP3 length {len} at stream offset {offset}: minimum is 6")]
    BadLength {
        /// Stream offset of the frame start.
        offset: u64,
        /// The length field.
        len: u16,
    },
}

/// Accumulates stream bytes and hands out whole HEP3 frames (each at most 65535 bytes, the most
/// its length field can say). Push what was read, then call [`Hep3Framer::next_frame`] until it
/// returns `Ok(None)`.
#[derive(Debug, Default)]
pub struct Hep3Framer {
    /// Bytes received and not yet returned as frames.
    buf: BytesMut,
    /// Stream offset of `buf[0]`, for error messages.
    offset: u64,
}

impl Hep3Framer {
    /// An empty framer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the stream (any split: partial frames, several frames at once).
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The receive buffer, for reading from a socket straight into it (e.g. tokio's `read_buf`).
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Bytes held that do not yet form a whole frame (or were not pulled yet).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Stream offset of the next frame: the total size of the frames returned so far.
    pub fn stream_offset(&self) -> u64 {
        self.offset
    }

    /// The next whole frame, `Ok(None)` when more bytes are needed.
    ///
    /// A bad magic is reported as soon as the first differing byte arrives, a bad length as soon
    /// as the 6-byte header is complete.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        let head = &self.buf[..self.buf.len().min(4)];
        if !b"HEP3".starts_with(head) && !b"EEP3".starts_with(head) {
            return Err(FrameError::BadMagic {
                offset: self.offset,
                found: head.to_vec(),
            });
        }
        if self.buf.len() < 6 {
            return Ok(None);
        }
        let len = u16::from_be_bytes([self.buf[4], self.buf[5]]);
        if len < 6 {
            return Err(FrameError::BadLength {
                offset: self.offset,
                len,
            });
        }
        if self.buf.len() < usize::from(len) {
            return Ok(None);
        }
        self.offset += u64::from(len);
        Ok(Some(self.buf.split_to(usize::from(len)).freeze()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_six_byte_frame_is_the_smallest_and_comes_out_whole() {
        let mut f = Hep3Framer::new();
        f.push(b"HEP3\x00");
        assert_eq!(f.next_frame(), Ok(None));
        f.push(b"\x06HEP");
        assert_eq!(
            f.next_frame(),
            Ok(Some(Bytes::from_static(b"HEP3\x00\x06")))
        );
        assert_eq!(f.next_frame(), Ok(None));
        assert_eq!(f.buffered(), 3);
        assert_eq!(f.stream_offset(), 6);
    }

    #[test]
    fn bad_magic_is_reported_at_the_first_wrong_byte_with_its_stream_offset() {
        let mut f = Hep3Framer::new();
        f.push(b"HEP3\x00\x06HX");
        assert!(f.next_frame().unwrap().is_some());
        assert_eq!(
            f.next_frame(),
            Err(FrameError::BadMagic {
                offset: 6,
                found: b"HX".to_vec()
            })
        );
        assert_eq!(
            f.next_frame().unwrap_err().to_string(),
            "not a HEP3 frame at stream offset 6: starts with [48, 58]"
        );
    }

    #[test]
    fn a_length_below_six_is_an_error_not_a_wait() {
        let mut f = Hep3Framer::new();
        f.push(b"HEP3\x00\x05");
        assert_eq!(
            f.next_frame(),
            Err(FrameError::BadLength { offset: 0, len: 5 })
        );
    }

    #[test]
    fn hepv2_on_a_stream_is_a_bad_magic() {
        let mut f = Hep3Framer::new();
        f.push(&[2, 16, 2, 17]);
        assert!(matches!(
            f.next_frame(),
            Err(FrameError::BadMagic { offset: 0, .. })
        ));
    }

    #[test]
    fn a_65535_byte_frame_is_accepted() {
        let mut frame = b"HEP3\xff\xff".to_vec();
        frame.resize(65535, 0);
        let mut f = Hep3Framer::new();
        f.push(&frame[..65534]);
        assert_eq!(f.next_frame(), Ok(None));
        f.push(&frame[65534..]);
        assert_eq!(f.next_frame().unwrap().unwrap().len(), 65535);
    }
}
