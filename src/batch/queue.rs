//! One batch queue's task: gather requests into a batch (size, timeout or idle-backend
//! trigger, within the row and byte bounds), wait for a free backend slot, drop requests
//! whose client left or whose deadline passed, and dispatch the batch on its own task so the
//! next one can form while it runs. A queue idle for [`QUEUE_IDLE`] closes itself.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};
use tokio::time::Instant;

use super::shape::{self, BatchKey, Footprint};
use super::{BatchError, Batched, Entry, QUEUE_IDLE, Queues, Shared, lock};
use crate::tensor::NamedTensors;

/// How a queue's task takes its queue out of the model's map when it goes idle.
pub(super) struct Closer {
    pub queues: Weak<std::sync::Mutex<Queues>>,
    /// The queue's id: the map's entry for the key may already be a newer queue.
    pub id: u64,
}

impl Closer {
    /// Removes this queue from the map if nothing is waiting in it; false if something is
    /// (it arrived while the idle timer fired) and the queue must go on.
    fn close_if_empty(&self, key: &BatchKey, queue: &mpsc::UnboundedReceiver<Entry>) -> bool {
        let Some(queues) = self.queues.upgrade() else {
            // The batcher is gone, and with it every sender: nothing can arrive any more.
            return queue.is_empty();
        };
        let mut queues = lock(&queues);
        // Senders send under this lock, so an empty channel seen here stays empty once the
        // entry is gone from the map.
        if !queue.is_empty() {
            return false;
        }
        if queues.map.get(key).is_some_and(|q| q.id == self.id) {
            queues.map.remove(key);
        }
        true
    }
}

/// Counts the queue in `infergate_batch_queues` while its task runs.
struct Open(prometheus_client::metrics::gauge::Gauge);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

pub(super) async fn run(
    shared: Arc<Shared>,
    closer: Closer,
    key: BatchKey,
    mut queue: mpsc::UnboundedReceiver<Entry>,
) {
    shared.metrics.batch_queues.inc();
    let _open = Open(shared.metrics.batch_queues.clone());
    let names: Arc<Vec<String>> = Arc::new(key.inputs.iter().map(|(n, ..)| n.clone()).collect());
    let key = Arc::new(key);
    let window = Duration::from_micros(shared.config.batch_timeout_us);
    // A request that didn't fit the previous batch opens the next one.
    let mut carry: Option<Entry> = None;
    loop {
        let first = match carry.take() {
            Some(entry) => entry,
            None => match tokio::time::timeout(QUEUE_IDLE, queue.recv()).await {
                Ok(Some(entry)) => entry,
                // Every sender is gone: the route was replaced or the gateway stopped.
                Ok(None) => return,
                Err(_idle) if closer.close_if_empty(&key, &queue) => return,
                Err(_idle) => continue,
            },
        };
        let closes_at = first.enqueued + window;
        let mut batch = Gathering::new(first, &shared);
        // Whatever is already queued joins without waiting.
        while batch.open() {
            match queue.try_recv() {
                Ok(entry) => batch.offer(entry, &mut carry),
                Err(_) => break,
            }
        }
        // With no call in flight, waiting for company only adds latency: send now, and let
        // the next batch form while this one runs. The window applies while the backend is
        // busy, which is exactly when batches have something to gain.
        let idle = shared.config.dispatch_when_idle
            && shared.permits.available_permits() == shared.config.max_concurrent_batches;
        while batch.open() && !idle {
            tokio::select! {
                // Take what is already queued before looking at the clock, so a zero
                // timeout still batches requests that arrived together.
                biased;
                next = queue.recv() => match next {
                    Some(entry) => batch.offer(entry, &mut carry),
                    None => break,
                },
                _ = tokio::time::sleep_until(closes_at) => break,
            }
        }
        let batch = batch.entries;
        // At most `max_concurrent_batches` calls in flight; while we wait here, later
        // requests keep queueing and form the next batch.
        let Ok(permit) = shared.permits.clone().acquire_owned().await else {
            return;
        };
        let batch = still_wanted(batch);
        if !batch.is_empty() {
            tokio::spawn(dispatch(
                shared.clone(),
                key.clone(),
                names.clone(),
                batch,
                permit,
            ));
        }
    }
}

/// A batch being gathered: entries and their combined footprint, up to `max_batch_size`
/// rows and `max_batch_bytes` bytes as sent.
struct Gathering<'a> {
    entries: Vec<Entry>,
    size: Footprint,
    shared: &'a Shared,
    /// Set once an entry didn't fit: the batch is closed.
    full: bool,
}

impl<'a> Gathering<'a> {
    fn new(first: Entry, shared: &'a Shared) -> Self {
        Self {
            size: first.footprint.clone(),
            entries: vec![first],
            shared,
            full: false,
        }
    }

    fn open(&self) -> bool {
        !self.full && self.size.rows < self.shared.config.max_batch_size
    }

    /// Adds `entry`, or closes the batch and leaves the entry in `carry` to open the next
    /// one. An entry that fits on its own (the batcher checked) always opens one.
    fn offer(&mut self, entry: Entry, carry: &mut Option<Entry>) {
        let config = &self.shared.config;
        let size = self.size.merge(&entry.footprint);
        let fits = size.rows <= config.max_batch_size
            && size
                .bytes(&config.allowed_batch_sizes)
                .is_some_and(|b| b <= config.max_batch_bytes);
        if fits {
            self.size = size;
            self.entries.push(entry);
        } else {
            *carry = Some(entry);
            self.full = true;
        }
    }
}

/// Drops requests whose client went away, and answers those past their deadline.
fn still_wanted(batch: Vec<Entry>) -> Vec<Entry> {
    let now = Instant::now();
    batch
        .into_iter()
        .filter_map(|entry| {
            if entry.reply.is_closed() {
                return None;
            }
            if now >= entry.deadline {
                let waited = now - entry.enqueued;
                let _ = entry.reply.send(Err(BatchError::QueueTimeout(waited)));
                return None;
            }
            Some(entry)
        })
        .collect()
}

/// Sends one batch and fans the answer (or the error) out to its requests.
pub(super) async fn dispatch(
    shared: Arc<Shared>,
    key: Arc<BatchKey>,
    names: Arc<Vec<String>>,
    batch: Vec<Entry>,
    permit: OwnedSemaphorePermit,
) {
    let deadline = batch
        .iter()
        .map(|e| e.deadline)
        .min()
        .unwrap_or_else(Instant::now);
    let rows: Vec<usize> = batch.iter().map(Entry::rows).collect();
    let metrics = &shared.metrics;
    let sent_at = Instant::now();
    let mut inputs: Vec<NamedTensors> = Vec::with_capacity(batch.len());
    let mut replies = Vec::with_capacity(batch.len());
    for entry in batch {
        // Dropping `place` here frees the queue slot: the request is no longer waiting.
        let Entry {
            inputs: i,
            reply,
            home,
            place,
            enqueued,
            ..
        } = entry;
        drop(place);
        let queued = sent_at - enqueued;
        crate::metrics::observe(&metrics.queue_seconds, queued);
        inputs.push(i);
        replies.push((reply, home, queued));
    }
    let total: usize = rows.iter().sum();
    metrics.batch_rows.observe(total as f64);
    let mut backend_time = std::time::Duration::ZERO;
    let sent_rows = shape::padded_rows(total, &shared.config.allowed_batch_sizes);
    let pad_inner = shared
        .config
        .pad_variable_length
        .then_some(shared.config.pad_value);
    let refs: Vec<&NamedTensors> = inputs.iter().collect();
    let result = match shape::concat(&refs, &names, pad_inner, sent_rows - total) {
        Err(e) => Err(BatchError::Unbatchable(e)),
        Ok(batch_inputs) => {
            drop(inputs);
            let called_at = Instant::now();
            let remaining = deadline.saturating_duration_since(called_at);
            let answer = shared
                .backend
                .predict(&key.target, &batch_inputs, Some(remaining))
                .await;
            backend_time = called_at.elapsed();
            crate::metrics::observe(&metrics.backend_seconds, backend_time);
            match answer {
                Ok(outputs) => {
                    shape::split(&outputs, &rows, sent_rows).map_err(BatchError::BadOutputs)
                }
                Err(e) => Err(BatchError::Backend(e)),
            }
        }
    };
    // The backend slot is free again before anyone hears back: a client that answers with its
    // next request at once must find the model idle, not racing this task's exit.
    drop(permit);
    if let Err(error) = &result {
        tracing::debug!(model = %shared.model, rows = total, "batch failed: {error}");
    }
    let mut answers = Answers::default();
    match result {
        Ok(parts) => {
            for ((reply, home, queued), outputs) in replies.into_iter().zip(parts) {
                let batched = Batched {
                    outputs,
                    queued,
                    backend: backend_time,
                    batch_rows: total,
                };
                answers.send(reply, home, Ok(batched));
            }
        }
        Err(error) => {
            for (reply, home, _) in replies {
                answers.send(reply, home, Err(error.clone()));
            }
        }
    }
    answers.deliver();
}

type Answer = (
    oneshot::Sender<Result<Batched, BatchError>>,
    Result<Batched, BatchError>,
);

/// A batch's answers, sent at once to the requests waiting on this thread and gathered per
/// worker for the others: one cross-thread wake-up per worker and batch instead of one per
/// request (see [`crate::workers`]).
#[derive(Default)]
struct Answers {
    away: Vec<(crate::workers::Home, Vec<Answer>)>,
}

impl Answers {
    fn send(
        &mut self,
        reply: oneshot::Sender<Result<Batched, BatchError>>,
        home: Option<crate::workers::Home>,
        answer: Result<Batched, BatchError>,
    ) {
        match home {
            Some(home) if !home.is_here() => {
                match self
                    .away
                    .iter_mut()
                    .find(|(h, _)| h.index() == home.index())
                {
                    Some((_, answers)) => answers.push((reply, answer)),
                    None => self.away.push((home, vec![(reply, answer)])),
                }
            }
            _ => {
                let _ = reply.send(answer);
            }
        }
    }

    fn deliver(self) {
        for (home, answers) in self.away {
            home.run(move || {
                for (reply, answer) in answers {
                    let _ = reply.send(answer);
                }
            });
        }
    }
}
