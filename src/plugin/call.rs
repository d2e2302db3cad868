//! One plugin call: a fresh `Store` with the model's memory cap and deadline, instantiate from
//! the pre-instantiated component (or, with `[reuse]`, a warm instance of the model re-armed
//! with this call's deadline and caps), call, and classify the outcome. Every way a plugin can fail
//! — rejection, trap, deadline, memory cap, malformed output — becomes a [`CallError`] that
//! costs this request only.

use std::time::{Duration, Instant};

use wasmtime::component::Instance;
use wasmtime::{Store, Trap, UpdateDeadline};

use super::Plugin;
use super::convert;
use super::host::{EPOCH_TICK, Host};
use super::sandbox::{CallTag, Sandbox};
use super::share::{Acquired, PluginKey, Share, Slot, Warm};
use super::types::{CallError, CallLimits, PluginRequest, Prepared};
use crate::reply::Reply;
use crate::tensor::NamedTensors;

/// Bytes of result metadata allowed on top of `max_output_bytes`.
const OUTPUT_ALLOWANCE: usize = 64 << 10;

/// Extra time the outer timeout allows past the epoch deadline. Epoch interruption catches
/// guest code within a tick; the outer timeout catches what epochs can't (a host call that
/// blocks, a bulk memory copy).
const OUTER_GRACE: Duration = Duration::from_millis(50);

impl Plugin {
    /// Runs `preprocess` on a request.
    pub async fn preprocess(
        &self,
        request: &PluginRequest,
        limits: CallLimits,
        tag: CallTag,
    ) -> Result<Prepared, CallError> {
        let pre = self
            .pre
            .as_ref()
            .ok_or_else(|| self.not_exported("preprocess"))?;
        let wit_request = convert::request_to_wit(request);
        let instantiated = tag
            .metrics
            .as_ref()
            .map(|m| m.pre_instantiate_seconds.clone());
        let lease = self.begin(limits, tag).await?;
        let (share, host, key) = (&self.share, &self.host, self.key);
        let answer = self
            .share
            .on_cores(async move {
                let Lease {
                    slot,
                    mut store,
                    warm,
                    calls,
                } = lease;
                let outcome = tokio::time::timeout(limits.timeout + OUTER_GRACE, async {
                    let instance = match warm {
                        Some(instance) => instance,
                        None => {
                            let started = Instant::now();
                            let instance = pre.instantiate_component(&mut store).await?;
                            if let Some(histogram) = &instantiated {
                                crate::metrics::observe(histogram, started.elapsed());
                            }
                            instance
                        }
                    };
                    let answer = pre
                        .bind(&mut store, &instance)?
                        .call_preprocess(&mut store, &wit_request)
                        .await?;
                    Ok((instance, answer))
                })
                .await;
                finish(outcome, store, slot, calls, limits, (share, host, key))
            })
            .await?;
        let prepared = answer.map_err(|e| CallError::Rejected(convert::rejection(e)))?;
        let size: usize = prepared.context.len()
            + prepared
                .inputs
                .iter()
                .map(|(_, t)| t.data.len() + t.strings.iter().map(Vec::len).sum::<usize>())
                .sum::<usize>();
        check_size(size, limits)?;
        convert::prepared_from_wit(prepared).map_err(CallError::InvalidOutput)
    }

    /// Runs `postprocess` on one request's rows of the model outputs.
    pub async fn postprocess(
        &self,
        outputs: &NamedTensors,
        context: &[u8],
        limits: CallLimits,
        tag: CallTag,
    ) -> Result<Reply, CallError> {
        let post = self
            .post
            .as_ref()
            .ok_or_else(|| self.not_exported("postprocess"))?;
        let wit_outputs = convert::tensors_to_wit(outputs);
        let instantiated = tag
            .metrics
            .as_ref()
            .map(|m| m.post_instantiate_seconds.clone());
        let lease = self.begin(limits, tag).await?;
        let (share, host, key) = (&self.share, &self.host, self.key);
        let answer = self
            .share
            .on_cores(async move {
                let Lease {
                    slot,
                    mut store,
                    warm,
                    calls,
                } = lease;
                let outcome = tokio::time::timeout(limits.timeout + OUTER_GRACE, async {
                    let instance = match warm {
                        Some(instance) => instance,
                        None => {
                            let started = Instant::now();
                            let instance = post.instantiate_component(&mut store).await?;
                            if let Some(histogram) = &instantiated {
                                crate::metrics::observe(histogram, started.elapsed());
                            }
                            instance
                        }
                    };
                    let answer = post
                        .bind(&mut store, &instance)?
                        .call_postprocess(&mut store, &wit_outputs, context)
                        .await?;
                    Ok((instance, answer))
                })
                .await;
                finish(outcome, store, slot, calls, limits, (share, host, key))
            })
            .await?;
        let response = answer.map_err(|e| CallError::Rejected(convert::rejection(e)))?;
        let size = response.body.len()
            + response
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>();
        check_size(size, limits)?;
        convert::response_from_wit(response).map_err(CallError::InvalidOutput)
    }

    /// A warm instance of the model, re-armed for this call (with `[reuse]`, when one is
    /// idle); else waits for an instance slot (the model's share, then the gateway's pool) for
    /// at most the call's `timeout_ms`, and makes the call's store, whose deadline is a whole
    /// `timeout_ms` from now: a call that waited is not started with too little time left
    /// to finish (it would only fail later, having used a slot). So a call spends at most
    /// `timeout_ms` waiting (then 503, not started) and `timeout_ms` running (then 504).
    async fn begin(&self, limits: CallLimits, tag: CallTag) -> Result<Lease, CallError> {
        let acquired = self
            .share
            .acquire(
                self.key,
                self.host.instances(),
                self.host.idlers(),
                limits.timeout,
            )
            .await?;
        Ok(match acquired {
            Acquired::Warm(Warm {
                mut store,
                instance,
                slot,
                calls,
                ..
            }) => {
                arm(&mut store, limits, tag);
                Lease {
                    slot,
                    store,
                    warm: Some(instance),
                    calls,
                }
            }
            Acquired::Slot(slot) => Lease {
                slot,
                store: new_store(&self.host, limits, tag),
                warm: None,
                calls: 0,
            },
        })
    }

    fn not_exported(&self, export: &'static str) -> CallError {
        CallError::NotExported(self.path.display().to_string(), export)
    }
}

fn check_size(size: usize, limits: CallLimits) -> Result<(), CallError> {
    if size > limits.max_output_bytes {
        return Err(CallError::InvalidOutput(format!(
            "the result ({size} bytes) is over the {} MiB output limit (limits.max_output_mb)",
            limits.max_output_bytes >> 20
        )));
    }
    Ok(())
}

/// What a call runs in: its slot, its store, the warm instance it reuses (if any) and the
/// calls that instance served before.
struct Lease {
    slot: Slot,
    store: Store<Sandbox>,
    warm: Option<Instance>,
    calls: u32,
}

/// A store for one call: the model's memory cap, and a deadline checked on every epoch tick.
fn new_store(host: &Host, limits: CallLimits, tag: CallTag) -> Store<Sandbox> {
    let mut store = Store::new(host.engine(), Sandbox::new(limits.memory_bytes));
    store.limiter(|state| &mut state.limits);
    arm(&mut store, limits, tag);
    store
}

/// Arms `store` for one call: who it is for, its output bound and its deadline, a whole
/// `timeout_ms` from now. Until the deadline a running guest yields to the async runtime each
/// tick, so a busy plugin shares its worker thread instead of holding it.
fn arm(store: &mut Store<Sandbox>, limits: CallLimits, tag: CallTag) {
    let deadline = Instant::now() + limits.timeout;
    store.data_mut().begin_call(tag, deadline);
    // Bounds what the host copies out of the guest while lifting the result, so an oversized
    // output is refused before the host allocates it (the small allowance covers names,
    // shapes and headers).
    store.set_hostcall_fuel(limits.max_output_bytes + OUTPUT_ALLOWANCE);
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        Ok(if Instant::now() >= deadline {
            UpdateDeadline::Interrupt
        } else {
            UpdateDeadline::Yield(1)
        })
    });
}

/// Settles the call. With `[reuse]`, an instance whose call returned (an answer or the
/// plugin's own error) and stayed within its caps goes back to the model's idle list with its
/// slot; otherwise the store (resetting the instance's slot) and then the slot are dropped
/// here, still on the model's cores: that reset is work done for this model.
fn finish<T>(
    outcome: Result<wasmtime::Result<(Instance, T)>, tokio::time::error::Elapsed>,
    store: Store<Sandbox>,
    slot: Slot,
    calls: u32,
    limits: CallLimits,
    (share, host, plugin): (&Share, &Host, PluginKey),
) -> Result<T, CallError> {
    let settled = settle(outcome, &store, limits);
    match settled {
        Ok((instance, answer)) if share.reuse().is_some() && store.data().reusable() => {
            share.keep_warm(
                host.idlers(),
                Warm {
                    store,
                    instance,
                    plugin,
                    slot,
                    calls: calls + 1,
                },
            );
            Ok(answer)
        }
        settled => {
            drop(store);
            drop(slot);
            settled.map(|(_, answer)| answer)
        }
    }
}

/// Turns a finished (or timed out) call into the guest's answer or a [`CallError`].
fn settle<T>(
    outcome: Result<wasmtime::Result<T>, tokio::time::error::Elapsed>,
    store: &Store<Sandbox>,
    limits: CallLimits,
) -> Result<T, CallError> {
    store.data().flush_output();
    let error = match outcome {
        Ok(Ok(answer)) => return Ok(answer),
        Err(_elapsed) => return Err(CallError::Timeout(limits.timeout)),
        Ok(Err(error)) => error,
    };
    if store.data().limits.denied.is_some() {
        return Err(CallError::MemoryLimit {
            limit_bytes: store.data().limits.max_bytes(),
        });
    }
    if error.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        return Err(CallError::Timeout(limits.timeout));
    }
    // wasmtime's "hostcall fuel" ran out while lifting the result: the output is too large.
    // (Its error type is private, so it is recognized by its message.)
    if error
        .chain()
        .any(|e| e.to_string().contains("fuel allocated for hostcalls"))
    {
        return Err(CallError::InvalidOutput(format!(
            "the result is over the {} MiB output limit (limits.max_output_mb)",
            limits.max_output_bytes >> 20
        )));
    }
    // The pooling allocator refused a slot of a kind the gateway's gate doesn't count (core
    // instances, memories, tables of a component with many): capacity, not a plugin bug.
    // (Its error type is private, so it is recognized by its message.)
    if let Some(full) = error
        .chain()
        .map(ToString::to_string)
        .find(|e| e.contains("maximum concurrent limit of"))
    {
        return Err(CallError::Busy(format!(
            "the gateway's plugin instance pool is full ({full}); retry later, or raise \
             plugins.max_instances"
        )));
    }
    tracing::warn!(error = ?error, "plugin trapped");
    // The trap's kind ("wasm `unreachable` instruction executed") is the root of the chain;
    // the outer layers are a wasm backtrace, which goes to the log, not to the client.
    let mut message = match error.downcast_ref::<Trap>() {
        Some(trap) => trap.to_string(),
        None => error.root_cause().to_string(),
    };
    if let Some(complaint) = store.data().last_complaint() {
        message = format!("{message}: {complaint}");
    }
    Err(CallError::Trap(message))
}

// The tick must stay well below any sensible plugin deadline for the deadline to be precise.
const _: () = assert!(EPOCH_TICK.as_millis() <= 10);
