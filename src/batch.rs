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

pub use shape::BatchKey;

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
    rows: usize,
    enqueued: Instant,
    deadline: Instant,
    reply: oneshot::Sender<Result<Batched, BatchError>>,
    place: QueuePlace,
}

/// One of the model's `max_enqueued` places; given back on drop.
struct QueuePlace(Arc<AtomicUsize>, prometheus_client::metrics::gauge::Gauge);

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

/// A model's batcher: one queue (and one task) per [`BatchKey`], created on first use.
pub struct Batcher {
    shared: Arc<Shared>,
    pending: Arc<AtomicUsize>,
    /// A std mutex: held only to look up or insert a queue's sender, never across an await.
    queues: Mutex<HashMap<BatchKey, mpsc::UnboundedSender<Entry>>>,
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
            queues: Mutex::new(HashMap::new()),
        }
    }

    /// Requests queued (not yet dispatched) across this model's queues.
    pub fn queued(&self) -> usize {
        self.pending.load(Ordering::Acquire)
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
        let (key, rows) = BatchKey::of(target, &inputs, config.pad_variable_length)?;
        if rows > config.max_batch_size {
            return Err(BatchError::TooManyRows {
                model: self.shared.model.clone(),
                rows,
                limit: config.max_batch_size,
            });
        }
        let place = self.take_place()?;
        let now = Instant::now();
        let (reply, answer) = oneshot::channel();
        let entry = Entry {
            inputs,
            rows,
            enqueued: now,
            deadline: now + self.shared.timeout,
            reply,
            place,
        };
        self.sender(key)
            .send(entry)
            .map_err(|_| BatchError::Stopped)?;
        answer.await.map_err(|_| BatchError::Stopped)?
    }

    fn take_place(&self) -> Result<QueuePlace, BatchError> {
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

    /// The queue for `key`, starting its task on first use. The task owns the receiver and
    /// ends when this batcher (and so every sender) is dropped, after flushing what it holds.
    fn sender(&self, key: BatchKey) -> mpsc::UnboundedSender<Entry> {
        let mut queues = self
            .queues
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        queues
            .entry(key.clone())
            .or_insert_with(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(queue::run(self.shared.clone(), key, rx));
                tx
            })
            .clone()
    }
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
