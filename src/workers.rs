//! The connection workers (`server.workers`): single-threaded tokio runtimes, each owning the
//! connections handed to it for their whole life, as Envoy's and nginx's workers do.
//!
//! A work-stealing runtime spreads every task over every core, so a request bounces between
//! threads (parked workers woken to steal, wake-ups across threads on every hop, a model's
//! core share handed from thread to thread), and on a busy machine that costs a good part of
//! the request: on 2 cores with the digits plugins, 166 against 127 µs of CPU per request with
//! two workers, 86 with one (BENCHMARKS.md). Here a connection's parsing, plugin calls and
//! answer all run on the thread that accepted it, and threads meet only where requests of
//! different connections do (a model's batch queue, a backend connection), where a batch's
//! answers cross in one wake-up per worker.
//!
//! What it gives up, and why it is opt-in: a request whose worker is busy with a long plugin
//! call (until the call yields at an epoch tick, or for the whole of an uninterruptible host
//! copy) waits for it instead of being stolen by an idle thread, so a misbehaving model
//! raises the tail latency of the requests that share its worker.
//!
//! The thread that calls [`Workers::start`] is worker 0: the runtime it runs (the gateway's
//! main one, with the accept loops, reloads and backend health checks) takes connections too,
//! so `workers = N` uses N threads, not N + 1.

use std::cell::RefCell;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio::sync::watch;

thread_local! {
    /// The worker this thread is, on worker threads (and on the thread that started them).
    static HOME: RefCell<Option<Home>> = const { RefCell::new(None) };
}

/// A worker, as a task running on it knows it: where to send what should wake it.
#[derive(Clone)]
pub struct Home {
    index: usize,
    handle: Handle,
}

impl Home {
    /// The worker the calling thread is, if it is one. A current-thread runtime polls its
    /// tasks only on the thread inside its `block_on`, so this is also the task's worker.
    pub fn current() -> Option<Home> {
        HOME.with(|home| home.borrow().clone())
    }

    /// Whether the calling thread is this worker.
    pub fn is_here(&self) -> bool {
        HOME.with(|home| {
            home.borrow()
                .as_ref()
                .is_some_and(|h| h.index == self.index)
        })
    }

    /// Runs `f` on this worker. Waking a task from another thread costs a syscall on the
    /// waking side (the worker's event fd) each time; a batch's answers for one worker's
    /// requests go over in one of these, and wake them from there for nothing.
    pub fn run<F: FnOnce() + Send + 'static>(&self, f: F) {
        self.handle.spawn(async move { f() });
    }

    pub fn index(&self) -> usize {
        self.index
    }
}

/// The runtimes connections are spread over. Cloning is cheap; the extra threads stop when
/// the last clone is dropped.
#[derive(Clone)]
pub struct Workers {
    inner: Arc<Inner>,
}

struct Inner {
    workers: Vec<Worker>,
    stop: watch::Sender<bool>,
    threads: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

struct Worker {
    handle: Handle,
    /// Connections running on this worker now: a new one goes to the least loaded.
    open: Arc<AtomicUsize>,
}

impl Workers {
    /// `count` workers: the calling thread's runtime (which must be running: call it from
    /// inside it) and `count - 1` threads of their own, named `infergate-worker-<i>`.
    pub fn start(count: usize) -> std::io::Result<Workers> {
        let (stop, stopped) = watch::channel(false);
        let mut workers = vec![Worker {
            handle: Handle::current(),
            open: Arc::default(),
        }];
        let count = count.max(1);
        if count > 1 {
            HOME.with(|home| {
                *home.borrow_mut() = Some(Home {
                    index: 0,
                    handle: Handle::current(),
                });
            });
        }
        let mut threads = Vec::new();
        for i in 1..count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            workers.push(Worker {
                handle: runtime.handle().clone(),
                open: Arc::default(),
            });
            let mut stopped = stopped.clone();
            let home = Home {
                index: i,
                handle: runtime.handle().clone(),
            };
            threads.push(
                std::thread::Builder::new()
                    .name(format!("infergate-worker-{i}"))
                    .spawn(move || {
                        HOME.with(|h| *h.borrow_mut() = Some(home));
                        // A current-thread runtime runs its tasks (and its I/O and timers)
                        // only while a thread is inside `block_on`: this thread's whole job.
                        runtime.block_on(async move {
                            let _ = stopped.wait_for(|stop| *stop).await;
                        });
                    })?,
            );
        }
        Ok(Workers {
            inner: Arc::new(Inner {
                workers,
                stop,
                threads: std::sync::Mutex::new(threads),
            }),
        })
    }

    /// How many runtimes connections are spread over.
    pub fn len(&self) -> usize {
        self.inner.workers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.workers.is_empty()
    }

    /// Connections open on each worker now, worker 0 first.
    pub fn connections(&self) -> Vec<usize> {
        let open = |w: &Worker| w.open.load(Ordering::Relaxed);
        self.inner.workers.iter().map(open).collect()
    }

    /// Runs the future `make` builds on the least loaded worker, counted as one of its
    /// connections until it ends. `make` runs on that worker, so what it registers (a socket
    /// made from a std one, timers) belongs to that worker's runtime.
    pub fn spawn_connection<M, F>(&self, make: M)
    where
        M: FnOnce() -> F + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let worker = self
            .inner
            .workers
            .iter()
            .min_by_key(|w| w.open.load(Ordering::Relaxed))
            .expect("at least one worker");
        let open = worker.open.clone();
        open.fetch_add(1, Ordering::Relaxed);
        let counted = Counted(open);
        worker.handle.spawn(async move {
            let _counted = counted;
            make().await;
        });
    }
}

/// Counts a connection off its worker when it ends (or is dropped with the runtime).
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        let threads = std::mem::take(
            &mut *self
                .threads
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for thread in threads {
            // Not from one of the workers themselves: joining its own thread would never end.
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread_name() -> String {
        std::thread::current().name().unwrap_or("").to_string()
    }

    /// A new connection goes to the worker with the fewest, runs on that worker's thread (which
    /// knows itself as that worker), and is counted off when it ends.
    #[tokio::test]
    async fn connections_go_to_the_least_loaded_worker() {
        let workers = Workers::start(2).unwrap();
        assert_eq!(workers.len(), 2);
        let (release, released) = watch::channel(false);
        let (ran, mut runs) = tokio::sync::mpsc::unbounded_channel();
        for _ in 0..3 {
            let (ran, mut released) = (ran.clone(), released.clone());
            workers.spawn_connection(move || async move {
                let home = Home::current().map(|h| h.index());
                ran.send((home, thread_name())).unwrap();
                let _ = released.wait_for(|r| *r).await;
            });
        }
        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.push(runs.recv().await.unwrap());
        }
        seen.sort();
        let main = thread_name();
        assert_eq!(
            seen,
            vec![
                (Some(0), main.clone()),
                (Some(0), main),
                (Some(1), "infergate-worker-1".to_string()),
            ]
        );
        assert_eq!(workers.connections(), vec![2, 1]);
        release.send(true).unwrap();
        for _ in 0..500 {
            if workers.connections() == [0, 0] {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        panic!("still counted: {:?}", workers.connections());
    }

    /// `Home::run` runs on that worker; a thread that is no worker has no home.
    #[tokio::test]
    async fn home_runs_on_its_worker() {
        let workers = Workers::start(2).unwrap();
        // The first connection holds worker 0 (this thread), so the second goes to worker 1.
        workers.spawn_connection(std::future::pending::<()>);
        let (tx, rx) = tokio::sync::oneshot::channel();
        workers.spawn_connection(move || async move {
            let _ = tx.send(Home::current().expect("a worker"));
        });
        let home = rx.await.unwrap();
        assert_eq!(home.index(), 1);
        assert!(!home.is_here());
        let (tx, rx) = tokio::sync::oneshot::channel();
        home.run(move || {
            let _ = tx.send((thread_name(), Home::current().map(|h| h.is_here())));
        });
        assert_eq!(
            rx.await.unwrap(),
            ("infergate-worker-1".to_string(), Some(true))
        );
        let elsewhere = std::thread::spawn(|| Home::current().is_none());
        assert!(elsewhere.join().unwrap());
    }
}
