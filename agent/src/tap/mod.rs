//! Taps: listeners that relay every client connection to the upstream proxy, byte for byte, and
//! trace what happens on both legs. Tracing happens beside the data, never in its way: events are
//! built and `offer`ed to the destinations' queues, which never block.
//!
//! One job per file, and no file imports a file that imports it back:
//!
//! - `listener`: binding (one `SO_REUSEPORT` socket per worker), the accept loops, the
//!   connection limit; a running listener changed or stopped on its own (reload).
//! - `session`: per connection, accept -> open upstream -> relay -> close.
//! - `transport` (with `certs`): TCP or TLS, server and client side.
//! - `transparent`: the upstream leg opened from the client's address (`upstream_source =
//!   "client"`), and the start-up check of what that needs.
//! - `upgrade` and `proxy_protocol`: the handshakes on top of the transport (the WebSocket
//!   upgrade both ways, the PROXY header toward the upstream).
//! - `relay`: both directions of a connection in one loop, for bytes and messages alike.
//! - `pump`: per read, the byte pump of TCP and TLS.
//! - `ws_relay`: per message, the WebSocket relay of WS and WSS.
//! - `ws_frames`: per read on WS and WSS, where messages begin and end, to time them.
//! - `events`: per event, the legs' `net` packets and the typed end of a connection.
//! - `sip`: per SIP message, its trace.
//! - `spec` and `error`: what a listener is and shares with its sessions (the per-listener
//!   counters, the `active` gauge's guard), and why it cannot be set up.

mod certs;
mod error;
mod events;
mod listener;
mod proxy_protocol;
mod pump;
mod relay;
mod session;
pub mod sip;
mod spec;
mod transparent;
mod transport;
mod upgrade;
mod ws_frames;
mod ws_relay;

pub use error::{ListenError, TapError};
pub use listener::{BoundListener, Listener};
pub use spec::{ListenerSpec, Tap, TapContext, check};
pub use transparent::routing_warnings;
