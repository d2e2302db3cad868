//! One batch queue's task: gather requests into a batch (size or timeout trigger), wait for a
//! free backend slot, drop requests whose client left or whose deadline passed, and dispatch
//! the batch on its own task so the next one can form while it runs.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::time::Instant;

use super::shape::{self, BatchKey};
use super::{BatchError, Entry, Shared};
use crate::tensor::NamedTensors;

pub(super) async fn run(
    shared: Arc<Shared>,
    key: BatchKey,
    mut queue: mpsc::UnboundedReceiver<Entry>,
) {
    let names: Arc<Vec<String>> = Arc::new(key.inputs.iter().map(|(n, ..)| n.clone()).collect());
    let key = Arc::new(key);
    let window = Duration::from_micros(shared.config.batch_timeout_us);
    let max_rows = shared.config.max_batch_size;
    // A request that didn't fit the previous batch opens the next one.
    let mut carry: Option<Entry> = None;
    loop {
        let first = match carry.take() {
            Some(entry) => entry,
            None => match queue.recv().await {
                Some(entry) => entry,
                // Every sender is gone: the route was replaced or the gateway stopped.
                None => return,
            },
        };
        let closes_at = first.enqueued + window;
        let mut rows = first.rows;
        let mut batch = vec![first];
        while rows < max_rows {
            tokio::select! {
                // Take what is already queued before looking at the clock, so a zero
                // timeout still batches requests that arrived together.
                biased;
                next = queue.recv() => match next {
                    Some(entry) if rows + entry.rows <= max_rows => {
                        rows += entry.rows;
                        batch.push(entry);
                    }
                    Some(entry) => {
                        carry = Some(entry);
                        break;
                    }
                    None => break,
                },
                _ = tokio::time::sleep_until(closes_at) => break,
            }
        }
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
async fn dispatch(
    shared: Arc<Shared>,
    key: Arc<BatchKey>,
    names: Arc<Vec<String>>,
    batch: Vec<Entry>,
    _permit: OwnedSemaphorePermit,
) {
    let deadline = batch
        .iter()
        .map(|e| e.deadline)
        .min()
        .unwrap_or_else(Instant::now);
    let rows: Vec<usize> = batch.iter().map(|e| e.rows).collect();
    let mut inputs: Vec<NamedTensors> = Vec::with_capacity(batch.len());
    let mut replies = Vec::with_capacity(batch.len());
    for entry in batch {
        // Dropping `place` here frees the queue slot: the request is no longer waiting.
        let Entry {
            inputs: i,
            reply,
            place,
            ..
        } = entry;
        drop(place);
        inputs.push(i);
        replies.push(reply);
    }
    let total: usize = rows.iter().sum();
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
            let remaining = deadline.saturating_duration_since(Instant::now());
            match shared
                .backend
                .predict(&key.target, &batch_inputs, Some(remaining))
                .await
            {
                Ok(outputs) => {
                    shape::split(&outputs, &rows, sent_rows).map_err(BatchError::BadOutputs)
                }
                Err(e) => Err(BatchError::Backend(e)),
            }
        }
    };
    match result {
        Ok(parts) => {
            for (reply, part) in replies.into_iter().zip(parts) {
                let _ = reply.send(Ok(part));
            }
        }
        Err(error) => {
            tracing::debug!(model = %shared.model, rows = total, "batch failed: {error}");
            for reply in replies {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}
