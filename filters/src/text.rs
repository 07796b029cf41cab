//! A fixed-size text buffer on the stack, so regex matches against `$si` need no allocation.

use std::fmt;

/// Room for the longest variable text: an IPv6 address with an embedded IPv4 part is 45 bytes.
const CAPACITY: usize = 64;

/// Text written with `write!` into a stack array; writing past the end fails instead of growing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StackText {
    /// The bytes written so far (always whole UTF-8 characters).
    buf: [u8; CAPACITY],
    /// How many bytes of `buf` are used.
    len: usize,
}

impl StackText {
    pub(crate) const fn new() -> Self {
        StackText {
            buf: [0; CAPACITY],
            len: 0,
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        // Only whole `&str`s are ever copied in, so this cannot fail; "" keeps it total.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl fmt::Write for StackText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        let slot = self.buf.get_mut(self.len..end).ok_or(fmt::Error)?;
        slot.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt::Write as _;
    use std::net::IpAddr;

    #[test]
    fn longest_ipv6_text_fits() {
        let ip: IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
            .parse()
            .unwrap();
        let mut text = StackText::new();
        write!(text, "{ip}").unwrap();
        assert_eq!(text.as_str(), ip.to_string());
    }

    #[test]
    fn overflow_is_an_error_not_a_panic() {
        let mut text = StackText::new();
        assert!(text.write_str(&"x".repeat(CAPACITY + 1)).is_err());
        assert_eq!(text.as_str(), "");
    }
}
