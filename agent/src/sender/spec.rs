//! What a destination is: the config's [`Destination`] (where, over which transport, with which
//! TLS settings) plus what the agent adds to it, the encoder and the queue limits.

use std::time::Duration;

use heptap_config::Destination;
use heptap_hep::Encoder;

use super::error::SenderError;
use super::file::FileOwner;

/// Queue sizes and timings of a destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most packets held (queued or being written) at once; the newest is dropped beyond it.
    pub queue_packets: usize,
    /// Most bytes held at once, estimated from the messages (see `docs/senders.md`); bounds the
    /// memory a slow collector can cost whatever the message sizes.
    pub queue_bytes: usize,
    /// Largest UDP datagram sent; a bigger packet is dropped as `oversize`, never truncated.
    pub max_udp_size: usize,
    /// Bound on resolving the host and establishing the connection (TLS handshake included).
    pub connect_timeout: Duration,
    /// A write that makes no progress for this long means the collector is stuck: reconnect.
    pub write_timeout: Duration,
    /// First delay before reconnecting after a failure.
    pub backoff_initial: Duration,
    /// Longest delay between reconnection attempts; attempts never stop.
    pub backoff_max: Duration,
    /// UDP: packets per second (all lanes together) at which what queued during an outage is
    /// sent after the reconnection, so the collector's receive buffer is not overrun; 0: no
    /// limit.
    pub udp_replay_rate: u32,
    /// While the collector stays unreachable, a "still disconnected" warning this often;
    /// zero: only the first failure (and changes of error) are warned about.
    pub down_log_interval: Duration,
}

impl Limits {
    /// The largest UDP payload an IPv4 datagram can carry, and heplify-server's input cap.
    pub const MAX_UDP_SIZE: usize = 65507;

    /// Refuses limits no destination can work with (destination `name`, for the error).
    pub(crate) fn check(&self, name: &str) -> Result<(), SenderError> {
        let invalid = |reason| SenderError::InvalidLimits {
            name: name.to_owned(),
            reason,
        };
        if self.queue_packets == 0 {
            return Err(invalid("queue_packets must be at least 1"));
        }
        if self.queue_packets > u32::MAX as usize {
            return Err(invalid("queue_packets is too large"));
        }
        if self.queue_bytes == 0 {
            return Err(invalid("queue_bytes must be at least 1"));
        }
        if self.max_udp_size < 6 {
            return Err(invalid("max_udp_size is smaller than any HEP packet"));
        }
        Ok(())
    }
}

impl Default for Limits {
    /// The `[hep]` defaults of docs/configuration.md: 10000 packets or 16 MiB, datagrams up to
    /// 65507 bytes, 2 s timeouts, backoff from 100 ms to 10 s, a reminder every minute.
    fn default() -> Self {
        Limits {
            queue_packets: 10_000,
            queue_bytes: 16 * 1024 * 1024,
            max_udp_size: Limits::MAX_UDP_SIZE,
            connect_timeout: Duration::from_secs(2),
            write_timeout: Duration::from_secs(2),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            udp_replay_rate: 10_000,
            down_log_interval: Duration::from_secs(60),
        }
    }
}

/// Everything needed to start one destination: the config's destination (where, over what, with
/// which TLS settings) and what the agent adds to it (how to encode, how much to queue). Two
/// equal specs describe the same destination, so a reload can keep its task (and its queue and
/// connection) running.
#[derive(Clone, Debug)]
pub struct DestinationSpec {
    /// The destination name (`hep_id` name, `stdout`, `file:<path>`); names the statistics group
    /// `hep_<name>` and the log lines.
    pub name: String,
    /// Where the packets go: a HEP collector (host, port, transport, TLS), stdout or a file.
    pub destination: Destination,
    /// Version, payload mode, capture id, auth key and node name of this destination; its
    /// version is the one sent (the agent builds it from the `hep_id`'s).
    pub encoder: Encoder,
    /// Queue sizes and timings (the agent takes them from `[hep]` and the `hep_id`'s
    /// overrides).
    pub limits: Limits,
    /// Who a `file:` output belongs to (the service user): a new file is created for them, an
    /// existing one must be theirs or root's. Other destinations ignore it.
    pub file_owner: FileOwner,
}

impl PartialEq for DestinationSpec {
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (&self.encoder, &other.encoder);
        self.name == other.name
            && self.destination == other.destination
            && self.limits == other.limits
            && self.file_owner == other.file_owner
            && a.version == b.version
            && a.mode == b.mode
            && a.capture_id == b.capture_id
            && a.auth_key == b.auth_key
            && a.node_name == b.node_name
    }
}

impl Eq for DestinationSpec {}
