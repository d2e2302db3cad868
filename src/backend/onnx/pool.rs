//! The inference pool of an `onnx` backend: a fixed set of OS threads, one per core by
//! default, that run model calls so CPU-heavy inference never occupies the async runtime's
//! worker threads (which would stall every other request's I/O while a batch computes).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

type Job = Box<dyn FnOnce() + Send>;

/// Runs closures on `threads` dedicated threads. At most `threads` jobs are queued or running
/// at once: a caller past that waits (asynchronously) for a slot, so the queue is bounded and
/// a slow model pushes back on the batcher instead of piling up work.
pub struct Pool {
    jobs: mpsc::Sender<Job>,
    slots: Arc<Semaphore>,
    threads: usize,
}

/// Why a job produced no result.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("the inference pool has stopped")]
    Stopped,
    #[error("inference panicked: {0}")]
    Panicked(String),
}

impl Pool {
    /// Starts `threads` threads named `{name}-{i}`. They exit when the pool is dropped (the
    /// job channel closes), after finishing the job in hand.
    pub fn new(name: &str, threads: usize) -> std::io::Result<Self> {
        let threads = threads.max(1);
        let (jobs, queue) = mpsc::channel::<Job>();
        // One receiver shared by all threads: whichever is idle takes the next job. A std
        // mutex, held only while waiting for a job, never while running one.
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..threads {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    loop {
                        let next = queue
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .recv();
                        match next {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                })?;
        }
        Ok(Self {
            jobs,
            slots: Arc::new(Semaphore::new(threads)),
            threads,
        })
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `job` on a pool thread and waits for its result. If the caller stops waiting
    /// (a timeout), the job still runs to the end and keeps its slot until then: inference
    /// can't be interrupted, and the slot count must reflect the cores actually busy.
    pub async fn run<T, F>(&self, job: F) -> Result<T, PoolError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let slot: OwnedSemaphorePermit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| PoolError::Stopped)?;
        let (done, result) = oneshot::channel();
        let wrapped: Job = Box::new(move || {
            let outcome = catch_unwind(AssertUnwindSafe(job)).map_err(|panic| {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(std::string::ToString::to_string)
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "no message".into());
                PoolError::Panicked(message)
            });
            drop(slot);
            let _ = done.send(outcome);
        });
        self.jobs.send(wrapped).map_err(|_| PoolError::Stopped)?;
        result.await.map_err(|_| PoolError::Stopped)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// Jobs run off the calling thread, and never more at once than the pool has threads.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jobs_run_on_pool_threads_bounded_by_its_size() {
        let pool = Arc::new(Pool::new("test-pool", 2).unwrap());
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let calls = (0..8).map(|_| {
            let (pool, running, peak) = (pool.clone(), running.clone(), peak.clone());
            tokio::spawn(async move {
                pool.run(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(20));
                    running.fetch_sub(1, Ordering::SeqCst);
                    std::thread::current().name().map(str::to_string)
                })
                .await
            })
        });
        for call in calls.collect::<Vec<_>>() {
            let name = call.await.unwrap().unwrap().unwrap();
            assert!(name.starts_with("test-pool-"), "{name}");
        }
        assert_eq!(peak.load(Ordering::SeqCst), 2);
    }

    /// A panicking job is reported as an error and the thread keeps serving.
    #[tokio::test]
    async fn a_panic_is_an_error_not_a_lost_thread() {
        let pool = Pool::new("test-panic", 1).unwrap();
        let err = pool.run(|| -> u32 { panic!("boom") }).await.unwrap_err();
        assert!(
            matches!(err, PoolError::Panicked(ref m) if m == "boom"),
            "{err}"
        );
        assert_eq!(pool.run(|| 7).await.unwrap(), 7);
    }
}
