//! The signature metadata a route's REST and tensor requests are typed with, asked of the
//! backend once per version and kept on the route: bounded (the version comes from the URL,
//! so a client could otherwise grow it with every number), and fetched once however many
//! requests want it at the same moment.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared, WeakShared};

use crate::backend::{Backend, BackendError, ModelMetadata, ModelTarget, VersionChoice};
use crate::rest::InputSpec;

/// Versions whose metadata a route keeps; the oldest is dropped for a new one. A model
/// serves a handful of versions; anything past this is a client trying numbers.
pub const MAX_CACHED_VERSIONS: usize = 16;

/// The inputs of one signature, by name, as REST JSON decoding needs them.
pub type Signature = BTreeMap<String, InputSpec>;

/// One version's signatures by name: their inputs, or why REST can't type them (an input
/// of a dtype the gateway can't carry).
pub type Signatures = BTreeMap<String, Result<Arc<Signature>, String>>;

type LookupFuture = BoxFuture<'static, Result<Arc<Signatures>, BackendError>>;
type Lookup = Shared<LookupFuture>;

/// A route's cache of signature metadata by version.
#[derive(Default)]
pub struct SpecCache {
    /// A std mutex: held for map lookups and inserts, never across an await.
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    done: HashMap<VersionChoice, Arc<Signatures>>,
    /// Insertion order of `done`, oldest first.
    order: VecDeque<VersionChoice>,
    /// Lookups under way. Held weakly, so one whose every waiter went away is dropped
    /// (cancelling its backend call) rather than kept.
    pending: HashMap<VersionChoice, WeakShared<LookupFuture>>,
}

impl SpecCache {
    /// The version's signatures if they are cached.
    pub fn cached(&self, version: &VersionChoice) -> Option<Arc<Signatures>> {
        self.lock().done.get(version).cloned()
    }

    /// The version's signatures, from the cache or from `backend` (one metadata call for
    /// every request that asks while it runs). Failures are not cached: a version that
    /// doesn't exist costs a call each time, and the caller bounds how many wait at once.
    pub async fn get(
        &self,
        backend: &Arc<dyn Backend>,
        target: ModelTarget,
    ) -> Result<Arc<Signatures>, BackendError> {
        let version = target.version.clone();
        let lookup = {
            let mut inner = self.lock();
            if let Some(done) = inner.done.get(&version) {
                return Ok(done.clone());
            }
            match inner.pending.get(&version).and_then(WeakShared::upgrade) {
                Some(lookup) => lookup,
                None => {
                    let backend = backend.clone();
                    let lookup: Lookup = async move {
                        let metadata = backend.metadata(&target).await?;
                        Ok(Arc::new(signatures(&metadata)))
                    }
                    .boxed()
                    .shared();
                    // Forget lookups nobody waits for any more, so the map stays as small
                    // as the number of lookups in flight.
                    inner.pending.retain(|_, weak| weak.upgrade().is_some());
                    if let Some(weak) = lookup.downgrade() {
                        inner.pending.insert(version.clone(), weak);
                    }
                    lookup
                }
            }
        };
        let result = lookup.clone().await;
        let mut inner = self.lock();
        let ours = inner
            .pending
            .get(&version)
            .and_then(WeakShared::upgrade)
            .is_some_and(|p| p.ptr_eq(&lookup));
        if ours {
            inner.pending.remove(&version);
        }
        if let Ok(signatures) = &result
            && !inner.done.contains_key(&version)
        {
            if inner.done.len() >= MAX_CACHED_VERSIONS
                && let Some(oldest) = inner.order.pop_front()
            {
                inner.done.remove(&oldest);
            }
            inner.done.insert(version.clone(), signatures.clone());
            inner.order.push_back(version);
        }
        result
    }

    /// Versions cached now (at most [`MAX_CACHED_VERSIONS`]).
    pub fn len(&self) -> usize {
        self.lock().done.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Every signature of `metadata`, typed for REST.
fn signatures(metadata: &ModelMetadata) -> Signatures {
    metadata
        .signatures
        .iter()
        .map(|(name, info)| {
            let typed = info
                .inputs
                .iter()
                .map(|(input, spec)| {
                    let dtype = spec.dtype.ok_or_else(|| {
                        format!(
                            "input `{input}` has dtype {}, which REST JSON can't carry",
                            spec.dtype_name
                        )
                    })?;
                    let shape = spec.shape.clone();
                    Ok((input.clone(), InputSpec { dtype, shape }))
                })
                .collect::<Result<Signature, String>>()
                .map(Arc::new);
            (name.clone(), typed)
        })
        .collect()
}
