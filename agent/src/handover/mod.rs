//! Hand-over to a new process (SIGUSR2): a new heptap, started from the binary on disk, takes
//! the listening sockets over while the old one drains, so an upgrade or a restart refuses no
//! connection attempt and cuts no relayed connection.
//!
//! The protocol, over a Unix `SOCK_SEQPACKET` channel in the abstract namespace
//! ([`channel`]), whose name the new process finds in `$HEPTAP_HANDOVER`:
//!
//! 1. the old process binds the channel and starts the new one ([`old::launch`]) with its own
//!    arguments, from the path it was started as ([`Image`]);
//! 2. the new process connects ([`new::Incoming`]); each side checks who the other is
//!    (`SO_PEERCRED`: the child the old one started, the parent of the new one);
//! 3. the old process sends the [`Offer`] and every listening socket, each listener's socket of
//!    every worker (`SO_REUSEPORT` spreads new connections over all of them, and a closed one
//!    would reset the connections queued on it), the MI's HTTP socket, and names its FIFO;
//! 4. the new process loads its config, builds everything, accepts on every socket it was
//!    given and says `Ready`, or `Failed` with the reason (the old one also sees it exit, or
//!    not answer within `handover_timeout`, and then keeps serving as before);
//! 5. on `Ready` the old process stops accepting (the sockets stay open in the new process:
//!    connections queued on them are accepted there), stops its MI, tells systemd the new main
//!    pid, and says `Released`; the new process then writes the pid file and says `READY=1`;
//! 6. the old process relays and traces its live connections until they close or
//!    `drain_timeout` passes, delivers its HEP queues, and exits.
//!
//! `heptap upgrade` ([`client`]) watches an attempt through [`watch`].

mod channel;
pub mod client;
mod new;
mod old;
mod protocol;
mod watch;

pub use new::Incoming;
pub use old::Upgrades;
pub use protocol::{ENV, Image, Inherited, ListenerSockets, Offer, offer};
