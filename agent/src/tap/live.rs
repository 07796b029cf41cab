//! The relayed connections as they are now, for the MI's `list_tcp_conns`: each connection's
//! task registers itself once its client leg has an id and is removed when the task ends
//! (dropped or aborted alike).
//!
//! The table is sharded per worker: a worker only ever locks its own shard (one uncontended
//! lock at a connection's start and one at its end); the MI locks each shard in turn to list.
//! What changes during a connection's life (state, upstream leg, bytes) lives in the entry, in
//! atomics the relay updates without a lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Instant, SystemTime};

use heptap_hep::NetProto;
use heptap_mi::{ConnLeg, ConnState, TcpConnInfo, TcpConnList};

use super::pump::Idle;

/// Every relayed connection of the process, one shard per worker.
#[derive(Clone, Debug)]
pub struct LiveConns {
    /// Connections by client-leg id; a worker registers in shard `worker % len`.
    shards: Arc<[Mutex<Shard>]>,
}

/// One worker's connections, by client-leg id.
type Shard = HashMap<u64, Arc<LiveConn>>;

/// One relayed connection: what `list_tcp_conns` shows of it.
#[derive(Debug)]
pub struct LiveConn {
    /// The listener it came in on.
    listener: String,
    /// The client leg.
    client: ConnLeg,
    /// When it was accepted.
    since: SystemTime,
    /// [`ConnState`] as a number (see [`state_code`]).
    state: AtomicU8,
    /// The upstream leg, set once connected.
    upstream: OnceLock<ConnLeg>,
    /// Bytes relayed client -> upstream.
    pub bytes_in: AtomicU64,
    /// Bytes relayed upstream -> client.
    pub bytes_out: AtomicU64,
    /// The connection's `idle_timeout` clock, which the relay touches; tells `Lifetime`.
    pub idle: Option<Idle>,
}

/// Removes its connection from the table when dropped.
#[derive(Debug)]
pub struct Listed {
    /// The table.
    conns: LiveConns,
    /// The shard it is in.
    shard: usize,
    /// The entry, shared with the table.
    pub conn: Arc<LiveConn>,
}

impl LiveConns {
    /// A table for `workers` workers.
    pub fn new(workers: usize) -> Self {
        Self {
            shards: (0..workers.max(1))
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
        }
    }

    /// Registers a connection just accepted on `listener` (in the calling worker's shard).
    pub fn register(&self, listener: &str, client: ConnLeg, idle: Option<Idle>) -> Listed {
        let shard = crate::workers::current() % self.shards.len();
        let conn = Arc::new(LiveConn {
            listener: listener.to_owned(),
            client,
            since: SystemTime::now(),
            state: AtomicU8::new(state_code(ConnState::Accepting)),
            upstream: OnceLock::new(),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            idle,
        });
        self.shard(shard).insert(conn.client.conn_id, conn.clone());
        Listed {
            conns: self.clone(),
            shard,
            conn,
        }
    }

    fn shard(&self, i: usize) -> std::sync::MutexGuard<'_, Shard> {
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// At most `max` connections (of `proto` when given), oldest first, and how many match.
    pub fn list(&self, proto: Option<NetProto>, max: usize) -> TcpConnList {
        let mut all: Vec<Arc<LiveConn>> = (0..self.shards.len())
            .flat_map(|i| {
                self.shard(i)
                    .values()
                    .filter(|c| proto.is_none_or(|p| c.client.proto == p))
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect();
        all.sort_by_key(|c| (c.since, c.client.conn_id));
        let total = all.len();
        let listed = all.iter().take(max).map(|c| c.info()).collect();
        TcpConnList { listed, total }
    }
}

impl LiveConn {
    /// Where the connection is now.
    pub fn set_state(&self, state: ConnState) {
        self.state.store(state_code(state), Ordering::Relaxed);
    }

    /// The upstream leg, once connected.
    pub fn set_upstream(&self, leg: ConnLeg) {
        let _ = self.upstream.set(leg);
    }

    fn info(&self) -> TcpConnInfo {
        let state = match self.state.load(Ordering::Relaxed) {
            0 => ConnState::Accepting,
            1 => ConnState::Connecting,
            _ => ConnState::Relaying,
        };
        let expires = self.idle.as_ref().map(|idle| {
            let left = idle.deadline().saturating_duration_since(Instant::now());
            SystemTime::now() + left
        });
        TcpConnInfo {
            listener: self.listener.clone(),
            state,
            client: self.client.clone(),
            upstream: self.upstream.get().cloned(),
            expires,
            since: self.since,
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
        }
    }
}

/// The state as stored.
fn state_code(state: ConnState) -> u8 {
    match state {
        ConnState::Accepting => 0,
        ConnState::Connecting => 1,
        ConnState::Relaying => 2,
    }
}

impl Drop for Listed {
    fn drop(&mut self) {
        self.conns
            .shard(self.shard)
            .remove(&self.conn.client.conn_id);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn leg(id: u64, proto: NetProto) -> ConnLeg {
        ConnLeg {
            conn_id: id,
            proto,
            remote: "127.0.0.1:40000".parse().unwrap(),
            local: "127.0.0.1:5062".parse().unwrap(),
        }
    }

    #[test]
    fn a_connection_is_listed_while_registered() {
        let conns = LiveConns::new(2);
        let a = conns.register("edge", leg(1, NetProto::Tcp), None);
        let b = conns.register("edge", leg(2, NetProto::Tls), None);
        a.conn.set_state(ConnState::Relaying);
        a.conn.bytes_in.fetch_add(5, Ordering::Relaxed);
        let list = conns.list(None, 10);
        assert_eq!(list.total, 2);
        assert_eq!(list.listed[0].state, ConnState::Relaying);
        assert_eq!(list.listed[0].bytes_in, 5);
        assert_eq!(conns.list(Some(NetProto::Tls), 10).total, 1);
        assert_eq!(conns.list(None, 1).listed.len(), 1);
        drop(b);
        drop(a);
        assert_eq!(conns.list(None, 10).total, 0);
    }
}
