//! Relay workers: one thread per core, each with its own single-threaded Tokio runtime.
//!
//! A connection lives its whole life on the worker whose listening socket accepted it (every
//! worker has its own `SO_REUSEPORT` socket per listener, and the kernel spreads connections
//! over them), and the HEP destinations keep one lane per worker, so tracing a connection wakes
//! a task on the same thread. Nothing crosses threads on the connection path, which is what
//! HAProxy's and Envoy's thread-per-core layouts buy; the control plane (MI, signals, reload)
//! stays on the runtime that started the agent.

use std::cell::Cell;
use std::sync::Arc;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

thread_local! {
    /// This thread's worker index; 0 on threads that are not workers.
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// The index of the worker the calling thread is (0 outside the workers), so a producer picks
/// the lane of its own thread.
pub fn current() -> usize {
    INDEX.with(Cell::get)
}

/// How many workers `workers` (`service.workers`) asks for: itself, or one per core the
/// process may use when 0 (its CPU affinity and cgroup quota).
pub fn count(workers: usize) -> usize {
    if workers > 0 {
        workers
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

/// The running workers. Dropping them stops their threads (the tasks still on them are
/// dropped); [`Workers::stop`] also waits for the threads to end.
#[derive(Debug)]
pub struct Workers {
    /// Each worker's runtime.
    handles: Arc<[Handle]>,
    /// Ends every worker's `block_on`.
    stop: CancellationToken,
    /// The threads, to join.
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Workers {
    /// Starts `n` (at least 1) worker threads, named `heptap-w<index>`.
    pub fn start(n: usize) -> std::io::Result<Self> {
        let stop = CancellationToken::new();
        let mut handles = Vec::new();
        let mut threads = Vec::new();
        for index in 0..n.max(1) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(rt.handle().clone());
            let until = stop.clone();
            let thread = std::thread::Builder::new()
                .name(format!("heptap-w{index}"))
                .spawn(move || {
                    INDEX.with(|i| i.set(index));
                    rt.block_on(until.cancelled());
                    // Not a plain drop: that would wait for a blocking write (a stdout pipe
                    // nobody reads) that shutdown has already given up on.
                    rt.shutdown_background();
                });
            match thread {
                Ok(t) => threads.push(t),
                Err(e) => {
                    stop.cancel();
                    return Err(e);
                }
            }
        }
        Ok(Self {
            handles: handles.into(),
            stop,
            threads,
        })
    }

    /// Each worker's runtime, in index order.
    pub fn handles(&self) -> &Arc<[Handle]> {
        &self.handles
    }

    /// Stops the workers and waits for their threads to end.
    pub async fn stop(mut self) {
        self.stop.cancel();
        let threads = std::mem::take(&mut self.threads);
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_worker_knows_its_index_and_stop_ends_the_threads() {
        let workers = Workers::start(3).unwrap();
        assert_eq!(workers.handles().len(), 3);
        for (i, h) in workers.handles().iter().enumerate() {
            assert_eq!(h.spawn(async { current() }).await.unwrap(), i);
        }
        assert_eq!(current(), 0);
        tokio::time::timeout(std::time::Duration::from_secs(10), workers.stop())
            .await
            .unwrap();
    }

    #[test]
    fn zero_means_one_per_core() {
        assert_eq!(count(3), 3);
        assert!(count(0) >= 1);
    }
}
