//! The HTTP MI's connection slots: `max` connections served, plus one slot kept for a new
//! connection. Once the kept slot is taken, the connection that has waited longest for an
//! answer is closed to free a slot again (as Apache's event MPM closes idle keep-alives at
//! capacity), provided it has waited at least `grace` and runs no command. So an operator
//! always gets in, whatever holds the other slots, and clients that never finish a request
//! cannot turn the MI over faster than `max + 1` connections per `grace`.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::conn::ConnState;

/// The slots of one HTTP listener.
#[derive(Debug)]
pub(crate) struct Slots {
    /// Connections served before the kept slot is used.
    max: usize,
    /// How long a connection must have waited for an answer before it may be closed to make
    /// room.
    grace: Duration,
    /// The connections holding a slot.
    conns: Mutex<Vec<Arc<ConnState>>>,
    /// Signalled whenever a connection gives its slot back.
    released: Notify,
}

/// What [`Slots::room`] found.
enum Room {
    /// A new connection may be accepted.
    Free,
    /// Every slot is taken; check again at this instant (or when a slot is given back).
    WaitUntil(Instant),
}

impl Slots {
    pub(crate) fn new(max: usize, grace: Duration) -> Arc<Self> {
        Arc::new(Slots {
            max,
            grace,
            conns: Mutex::new(Vec::with_capacity(max + 1)),
            released: Notify::new(),
        })
    }

    fn conns(&self) -> MutexGuard<'_, Vec<Arc<ConnState>>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Returns once a new connection may be accepted: at most `max` connections hold a slot
    /// (the kept one is free). While the kept slot is taken, closes the connection that has
    /// waited longest for an answer as soon as it has waited `grace`.
    pub(crate) async fn room(&self) {
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            match self.make_room(Instant::now()) {
                Room::Free => return,
                Room::WaitUntil(at) => {
                    tokio::select! {
                        () = released => {}
                        () = tokio::time::sleep_until(at.into()) => {}
                    }
                }
            }
        }
    }

    /// One look at the slots: free, or over `max` and someone to close now, or when to look
    /// again.
    fn make_room(&self, now: Instant) -> Room {
        let mut conns = self.conns();
        if conns.len() <= self.max {
            return Room::Free;
        }
        let longest = conns
            .iter()
            .enumerate()
            .filter(|(_, c)| !c.is_executing())
            .min_by_key(|(_, c)| c.waiting_since())
            .map(|(i, c)| (i, c.waiting_since() + self.grace));
        match longest {
            Some((i, due)) if due <= now => {
                let closed = conns.swap_remove(i);
                closed.evict();
                tracing::debug!("MI HTTP connection closed to make room for a new one");
                if conns.len() <= self.max {
                    Room::Free
                } else {
                    Room::WaitUntil(now)
                }
            }
            Some((_, due)) => Room::WaitUntil(due),
            // Every connection runs a command: look again after a while.
            None => Room::WaitUntil(now + self.grace),
        }
    }

    /// Gives a slot to a new connection (call after [`Slots::room`]).
    pub(crate) fn admit(self: &Arc<Self>) -> Slot {
        let state = ConnState::new();
        self.conns().push(Arc::clone(&state));
        Slot {
            slots: Arc::clone(self),
            state,
        }
    }

    /// Connections holding a slot.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.conns().len()
    }
}

/// A connection's slot, given back when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    /// Where it is held.
    slots: Arc<Slots>,
    /// The connection's state.
    state: Arc<ConnState>,
}

impl Slot {
    pub(crate) fn state(&self) -> &Arc<ConnState> {
        &self.state
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.conns().retain(|c| !Arc::ptr_eq(c, &self.state));
        self.slots.released.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closed(slot: &Slot) -> bool {
        slot.state().is_evicted()
    }

    #[test]
    fn the_kept_slot_is_freed_by_closing_the_longest_waiting_connection() {
        let grace = Duration::from_secs(1);
        let slots = Slots::new(2, grace);
        let first = slots.admit();
        let second = slots.admit();
        let now = Instant::now();
        assert!(matches!(slots.make_room(now), Room::Free));
        // The kept slot: a third connection is taken in at once...
        let third = slots.admit();
        assert_eq!(slots.held(), 3);
        // ...and nobody is closed before the longest-waiting one has waited `grace`...
        assert!(matches!(slots.make_room(now), Room::WaitUntil(_)));
        assert!(!closed(&first));
        // ...then that one is.
        assert!(matches!(slots.make_room(now + grace), Room::Free));
        assert!(closed(&first));
        assert!(!closed(&second) && !closed(&third));
        assert_eq!(slots.held(), 2);
    }

    #[test]
    fn an_answer_puts_a_connection_back_in_the_queue() {
        let grace = Duration::from_millis(100);
        let slots = Slots::new(1, grace);
        let answered = slots.admit();
        let waiting = slots.admit();
        answered.state().answered();
        assert!(matches!(
            slots.make_room(Instant::now() + grace * 2),
            Room::Free
        ));
        assert!(closed(&waiting));
        assert!(!closed(&answered));
    }

    #[test]
    fn a_connection_running_a_command_is_never_closed_to_make_room() {
        let grace = Duration::from_millis(100);
        let slots = Slots::new(1, grace);
        let busy = slots.admit();
        let _running = busy.state().executing();
        let waiting = slots.admit();
        assert!(matches!(
            slots.make_room(Instant::now() + grace * 2),
            Room::Free
        ));
        assert!(!closed(&busy));
        assert!(closed(&waiting));
        let _also = waiting.state().executing();
        let _third = slots.admit();
        let _fourth = slots.admit();
        assert_eq!(slots.held(), 3);
    }

    #[tokio::test]
    async fn a_slot_given_back_makes_room_at_once() {
        let slots = Slots::new(1, Duration::from_secs(60));
        let a = slots.admit();
        let b = slots.admit();
        let room = tokio::spawn({
            let slots = Arc::clone(&slots);
            async move { slots.room().await }
        });
        tokio::task::yield_now().await;
        assert!(!room.is_finished());
        drop(b);
        tokio::time::timeout(Duration::from_secs(5), room)
            .await
            .unwrap_or_else(|_| panic!("no room after a slot was given back"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!closed(&a));
    }
}
