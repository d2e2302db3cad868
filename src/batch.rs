//! Cross-request batching: concurrent requests for the same model, version, signature and
//! input shapes are coalesced into one backend `Predict`, and each request gets back exactly
//! its own rows. The gateway-side counterpart of TF Serving's `--enable_batching` and
//! Triton's dynamic batcher.
//!
//! A request joins the queue of its [`BatchKey`]. A batch leaves when it holds
//! `max_batch_size` rows or when its oldest request has waited `batch_timeout_us` — or at
//! once, with whatever is queued, when the model has no backend call in flight
//! (`dispatch_when_idle`, on by default): a lone request on an idle backend pays no window. Inputs are
//! concatenated along dim 0, optionally padded (to an allowed batch size, or inner dims to a
//! common length), outputs are split back by each request's rows. Batching off is
//! `max_batch_size = 1`: the same path, batches of one.

mod queue;
mod shape;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;

use crate::backend::{Backend, BackendError, ModelTarget};
use crate::config::BatchingConfig;
use crate::metrics::ModelMetrics;
use crate::tensor::{DType, NamedTensors, half};

pub use shape::{BatchKey, Footprint};

/// A batch queue that has had no request for this long closes (its task ends); the next
/// request of its key opens a new one. Keys are chosen by clients (versions, shapes), so
/// queues must not live as long as the route.
pub const QUEUE_IDLE: Duration = Duration::from_secs(10);

/// Why a request did not get its rows back from a batch.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BatchError {
    /// The model's queues already hold `max_enqueued` requests.
    #[error("model `{model}` is at capacity ({limit} requests queued); retry later")]
    QueueFull { model: String, limit: usize },
    /// One request with more rows than a batch may hold.
    #[error(
        "request has {rows} rows but model `{model}` takes at most {limit} per batch (batching.max_batch_size)"
    )]
    TooManyRows {
        model: String,
        rows: usize,
        limit: usize,
    },
    /// One request whose tensors alone, as a batch, take more than `max_batch_bytes`.
    #[error(
        "request's tensors take {} bytes as a batch, but model `{model}` takes at most {limit} \
         (batching.max_batch_bytes); send fewer rows or smaller tensors",
        bytes.map_or_else(|| "more than 2^64".to_string(), |b| b.to_string())
    )]
    TooLarge {
        model: String,
        /// `None`: so large that counting them overflowed.
        bytes: Option<usize>,
        limit: usize,
    },
    /// The request's tensors can't be batched (no dim 0, inputs disagree on it).
    #[error("{0}")]
    Unbatchable(String),
    /// The request's deadline passed while it waited in the queue.
    #[error("request waited {}ms in the batch queue, past its deadline", .0.as_millis())]
    QueueTimeout(Duration),
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The backend's outputs can't be split back into the batch's requests.
    #[error("{0}")]
    BadOutputs(String),
    /// The batcher stopped (the gateway is shutting down).
    #[error("the batcher for this model stopped")]
    Stopped,
}

/// A request's rows of a batch's outputs, and where its time went.
#[derive(Debug)]
pub struct Batched {
    pub outputs: NamedTensors,
    /// From joining the queue to the batch being sent.
    pub queued: Duration,
    /// The backend call of the batch it rode in.
    pub backend: Duration,
    /// Rows in that batch, padding excluded.
    pub batch_rows: usize,
}

/// A request waiting in a queue. Dropping it (dispatched or abandoned) frees its place.
struct Entry {
    inputs: NamedTensors,
    footprint: Footprint,
    enqueued: Instant,
    deadline: Instant,
    reply: oneshot::Sender<Result<Batched, BatchError>>,
    /// The worker the request waits on, where its answer is delivered from.
    home: Option<crate::workers::Home>,
    place: QueuePlace,
}

impl Entry {
    fn rows(&self) -> usize {
        self.footprint.rows
    }
}

/// One of the model's `max_enqueued` places, held by a request waiting for the backend (in
/// a batch queue, or for the signature metadata that types its JSON); given back on drop.
pub struct QueuePlace(Arc<AtomicUsize>, prometheus_client::metrics::gauge::Gauge);

impl Drop for QueuePlace {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
        self.1.dec();
    }
}

/// Everything a model's queues share.
struct Shared {
    model: String,
    config: BatchingConfig,
    backend: Arc<dyn Backend>,
    /// In-flight backend calls for this model (`max_concurrent_batches`).
    permits: Arc<Semaphore>,
    /// How long a request may wait for its batch's answer, queue time included.
    timeout: Duration,
    metrics: ModelMetrics,
}

/// The open queues of a model, by key.
#[derive(Default)]
struct Queues {
    map: HashMap<BatchKey, Queue>,
    /// Tells a queue's task whether the map's entry for its key is still its own.
    next_id: u64,
}

struct Queue {
    tx: mpsc::UnboundedSender<Entry>,
    id: u64,
}

/// A model's batcher: one queue (and one task) per [`BatchKey`], opened on first use, closed
/// after [`QUEUE_IDLE`], at most `max_queues` at once.
pub struct Batcher {
    shared: Arc<Shared>,
    pending: Arc<AtomicUsize>,
    /// A std mutex: held only to look up, open or close a queue and hand it an entry, never
    /// across an await. Queue tasks hold it weakly, so dropping the batcher drops every
    /// sender and the tasks end after flushing what they hold.
    queues: Arc<Mutex<Queues>>,
}

impl Batcher {
    pub fn new(
        model: &str,
        config: BatchingConfig,
        backend: Arc<dyn Backend>,
        timeout: Duration,
        metrics: ModelMetrics,
    ) -> Self {
        let permits = Arc::new(Semaphore::new(config.max_concurrent_batches));
        let shared = Arc::new(Shared {
            model: model.to_string(),
            config,
            backend,
            permits,
            timeout,
            metrics,
        });
        Self {
            shared,
            pending: Arc::new(AtomicUsize::new(0)),
            queues: Arc::new(Mutex::new(Queues::default())),
        }
    }

    /// Requests queued (not yet dispatched) across this model's queues.
    pub fn queued(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    /// Batch queues open now (at most `max_queues`).
    pub fn queue_count(&self) -> usize {
        lock(&self.queues).map.len()
    }

    /// Queues `inputs` for `target` and waits for this request's rows of the outputs.
    pub async fn submit(
        &self,
        target: ModelTarget,
        inputs: NamedTensors,
    ) -> Result<NamedTensors, BatchError> {
        self.submit_timed(target, inputs).await.map(|b| b.outputs)
    }

    /// [`Batcher::submit`], also saying how long the request queued and the backend took.
    pub async fn submit_timed(
        &self,
        target: ModelTarget,
        inputs: NamedTensors,
    ) -> Result<Batched, BatchError> {
        let config = &self.shared.config;
        let (key, footprint) = BatchKey::of(target, &inputs, config.pad_variable_length)?;
        if footprint.rows > config.max_batch_size {
            return Err(BatchError::TooManyRows {
                model: self.shared.model.clone(),
                rows: footprint.rows,
                limit: config.max_batch_size,
            });
        }
        let bytes = footprint.bytes(&config.allowed_batch_sizes);
        if bytes.is_none_or(|b| b > config.max_batch_bytes) {
            return Err(BatchError::TooLarge {
                model: self.shared.model.clone(),
                bytes,
                limit: config.max_batch_bytes,
            });
        }
        let place = self.reserve()?;
        let now = Instant::now();
        let (reply, answer) = oneshot::channel();
        let entry = Entry {
            inputs,
            footprint,
            enqueued: now,
            deadline: now + self.shared.timeout,
            reply,
            home: crate::workers::Home::current(),
            place,
        };
        if let Err((key, entry)) = self.enqueue(key, entry) {
            return self.unbatched(key, entry, answer).await;
        }
        answer.await.map_err(|_| BatchError::Stopped)?
    }

    /// Takes one of the model's `max_enqueued` places, or fails with 429 when none is free.
    /// Requests take one to join a queue; the pipeline takes one while a request waits for
    /// signature metadata, so those waits are bounded like queued requests.
    pub fn reserve(&self) -> Result<QueuePlace, BatchError> {
        let limit = self.shared.config.max_enqueued;
        let taken = self
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            });
        match taken {
            Ok(_) => {
                self.shared.metrics.queue_depth.inc();
                Ok(QueuePlace(
                    self.pending.clone(),
                    self.shared.metrics.queue_depth.clone(),
                ))
            }
            Err(_) => Err(BatchError::QueueFull {
                model: self.shared.model.clone(),
                limit,
            }),
        }
    }

    /// Hands `entry` to the queue of `key`, opening it (and starting its task) if there is
    /// none. Gives the entry back when the model already has `max_queues` open.
    ///
    /// The send happens under the lock, and a queue's task closes only under it and only
    /// when its channel is empty: so an entry is never handed to a queue that is closing.
    #[allow(
        clippy::result_large_err,
        reason = "the entry is handed back by value, once, on the over-max_queues path; boxing it would cost every request an allocation"
    )]
    fn enqueue(&self, key: BatchKey, entry: Entry) -> Result<(), (BatchKey, Entry)> {
        let mut queues = lock(&self.queues);
        let mut entry = entry;
        if let Some(queue) = queues.map.get(&key) {
            match queue.tx.send(entry) {
                Ok(()) => return Ok(()),
                // Its task is gone (it can only have panicked): replace the queue.
                Err(mpsc::error::SendError(back)) => {
                    entry = back;
                    queues.map.remove(&key);
                }
            }
        }
        if queues.map.len() >= self.shared.config.max_queues {
            return Err((key, entry));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let id = queues.next_id;
        queues.next_id += 1;
        if tx.send(entry).is_err() {
            unreachable!("the receiver is alive: it is in this scope");
        }
        queues.map.insert(key.clone(), Queue { tx, id });
        let closer = queue::Closer {
            queues: Arc::downgrade(&self.queues),
            id,
        };
        tokio::spawn(queue::run(self.shared.clone(), closer, key, rx));
        Ok(())
    }

    /// A request whose key would open a queue past `max_queues`: sent on its own as soon as
    /// a backend slot is free (within its deadline), like a batch of one.
    async fn unbatched(
        &self,
        key: BatchKey,
        entry: Entry,
        answer: oneshot::Receiver<Result<Batched, BatchError>>,
    ) -> Result<Batched, BatchError> {
        let permits = self.shared.permits.clone();
        let permit = match tokio::time::timeout_at(entry.deadline, permits.acquire_owned()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(BatchError::Stopped),
            Err(_) => return Err(BatchError::QueueTimeout(entry.enqueued.elapsed())),
        };
        let names = Arc::new(key.inputs.iter().map(|(n, ..)| n.clone()).collect());
        queue::dispatch(
            self.shared.clone(),
            Arc::new(key),
            names,
            vec![entry],
            permit,
        )
        .await;
        answer.await.map_err(|_| BatchError::Stopped)?
    }
}

/// Locks a std mutex, carrying on past a poisoned one (the data is a plain map).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A pad value converted to a dtype's little-endian bytes.
fn pad_bytes(dtype: DType, value: f64) -> Vec<u8> {
    match dtype {
        DType::F32 => (value as f32).to_le_bytes().to_vec(),
        DType::F64 => value.to_le_bytes().to_vec(),
        DType::I8 => (value as i8).to_le_bytes().to_vec(),
        DType::I16 => (value as i16).to_le_bytes().to_vec(),
        DType::I32 => (value as i32).to_le_bytes().to_vec(),
        DType::I64 => (value as i64).to_le_bytes().to_vec(),
        DType::U8 => (value as u8).to_le_bytes().to_vec(),
        DType::U16 => (value as u16).to_le_bytes().to_vec(),
        DType::U32 => (value as u32).to_le_bytes().to_vec(),
        DType::U64 => (value as u64).to_le_bytes().to_vec(),
        DType::Bool => vec![(value != 0.0) as u8],
        DType::F16 => half::f16_bits(value).to_le_bytes().to_vec(),
        DType::BF16 => half::bf16_bits(value as f32).to_le_bytes().to_vec(),
        DType::Str => Vec::new(),
    }
}
