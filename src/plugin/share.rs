//! A model's share of the plugin runtime, so one model's plugins — however they misbehave —
//! can't take what the others need:
//!
//! - **slots**: plugin calls of the model that may hold an instance at once
//!   (`limits.max_concurrent_calls`). An instance costs a pooling slot and up to
//!   `limits.memory_mb` of memory, so this bounds the model's memory and its part of
//!   `plugins.max_instances`. A call that finds the slots taken waits for one (first come, first
//!   served) for up to its `timeout_ms`, then gives up with [`CallError::Busy`] (503).
//! - **cores**: calls of the model that may *execute* at once (`limits.max_running_calls`).
//!   A running call gives its core back at every epoch tick (a plugin yields to the async
//!   runtime once per tick) and takes one again before it goes on, so a plugin that loops
//!   until its deadline keeps at most this many cores busy, and the model's other calls take
//!   turns with it tick by tick instead of waiting for it to time out.
//!   On the default share (no `max_running_calls` given) the bound is kept for calls that
//!   run long: while the model's calls each run in short stretches (under [`LONG_POLL`]), a
//!   call that finds the model's cores taken runs anyway, on whichever runtime thread polls
//!   it — short calls take turns with everything else on the threads like any other task, and
//!   queueing them for a core only cost wake-ups. The second stretch within [`STRICT_FOR`]
//!   that runs long (a loop, a slow native op), or one that runs very long ([`HOLD_AT_ONCE`]),
//!   makes the model keep strictly to its share for the next [`STRICT_FOR`], so a
//!   misbehaving model goes past it by at most two stretches per call in flight, and then by
//!   none while it keeps running long. One long stretch alone doesn't: a well-behaved
//!   model's calls read one now and then ([`LONG_POLL`]).
//!   An explicit `max_running_calls` is always a hard bound.
//!
//! - **warm instances** (opt-in, `[reuse] max_calls` in model.toml): an instance whose call
//!   returned normally goes back to the model's idle list, still holding its slot, and serves
//!   the model's next call, up to `max_calls` calls; a trap, a deadline or a memory-cap hit
//!   discards it. An instance is one instance of the plugin's component, so when one file
//!   is both the model's pre and post plugin (`plugin = …`) the same instance serves both
//!   calls of a request. Under load the instance is handed over: a call of the model waiting
//!   for a slot takes it, warm, so reuse keeps working when the model's slots are all busy
//!   — which is when it matters. Idle instances never make a call wait: one that no waiting
//!   call can use (another plugin file's) is discarded to free its slot, and a call that
//!   finds the gateway's pool full discards every model's idle ones ([`Idlers`]). The idle
//!   list is the model's own, so an instance never serves two models.
//!
//! The host adds one gate shared by every model: `plugins.max_instances`, the pooling
//! allocator's slots, so the sum of the models' slots can exceed it without a call ever
//! failing for want of a slot — it waits, like a call waiting for its model's slots.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::sandbox::Sandbox;
use super::types::CallError;

/// A stretch of a call (one poll: guest code between two epoch ticks, or a native op) that
/// keeps its thread on a core at least this long is a long call. Half the epoch tick: a
/// looping plugin's stretches last a tick, a well-behaved call's whole run a fraction of this.
/// A well-behaved call's stretch still reads this long now and then: the thread's CPU clock
/// also counts what the kernel does in its time (page faults, interrupts; on some kernels, time
/// the hypervisor took the vCPU away). On a 2-core VM under the digits benchmark's load, one
/// stretch every 2 to 7 seconds read 2.5–8 ms. So it takes two within [`STRICT_FOR`] (or one
/// of [`HOLD_AT_ONCE`]) to hold a model to its share.
pub const LONG_POLL: Duration = Duration::from_micros(2_500);

/// How long a model keeps strictly to its share of the cores after a second long stretch
/// within this long (or one of [`HOLD_AT_ONCE`]).
pub const STRICT_FOR: Duration = Duration::from_secs(1);

/// A stretch this long holds the model to its share by itself: far past what a well-behaved
/// call's stretch ever read (2.5–8 ms), and what a slow native op takes. Without it, calls
/// that each ran one such op and ended more than [`STRICT_FOR`] apart would never be held.
pub const HOLD_AT_ONCE: Duration = Duration::from_millis(25);

/// How many plugin calls of one model may hold an instance, and execute, at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShareConfig {
    /// `limits.max_concurrent_calls`.
    pub max_concurrent_calls: u32,
    /// `limits.max_running_calls`; at most `max_concurrent_calls`.
    pub max_running_calls: u32,
    /// Whether short calls may run past `max_running_calls` while the model's calls stay
    /// short (the default share; an explicit `max_running_calls` is a hard bound).
    pub burst: bool,
}

impl ShareConfig {
    /// The defaults: half the cores (rounded up) for running calls, so one model's plugins
    /// leave the other half to the rest of the gateway, and four instances per running call
    /// for the slots, so short calls can take turns with a long one — but never more than
    /// half of `max_instances`, so one model can't hold the whole pool.
    pub fn defaults(cores: usize, max_instances: u32) -> ShareConfig {
        let running = (cores.div_ceil(2).max(1)).min(u32::MAX as usize) as u32;
        let slots = running
            .saturating_mul(4)
            .min((max_instances / 2).max(1))
            .max(1);
        ShareConfig {
            max_concurrent_calls: slots,
            max_running_calls: running.min(slots),
            burst: true,
        }
    }

    /// The defaults for this machine (`std::thread::available_parallelism`).
    pub fn machine_defaults(max_instances: u32) -> ShareConfig {
        Self::defaults(cores(), max_instances)
    }
}

/// The cores this process may use.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// One model's share: its slots and its cores. Cloning is cheap; the pre and post plugins of
/// a model hold the same share.
#[derive(Clone, Debug)]
pub struct Share {
    inner: Option<Arc<Inner>>,
}

#[derive(Debug)]
struct Inner {
    config: ShareConfig,
    slots: Arc<Semaphore>,
    cores: Arc<Semaphore>,
    /// Until when (nanoseconds past [`BASE`]) the model keeps strictly to its cores, since
    /// two stretches of its calls ran long within [`STRICT_FOR`] (or one [`HOLD_AT_ONCE`]);
    /// 0: never did.
    strict_until: AtomicU64,
    /// When (nanoseconds past [`BASE`]) a stretch of the model's calls last ran long; 0: none.
    last_long: AtomicU64,
    /// Calls waiting for one of the slots now.
    waiting: AtomicUsize,
    /// `[reuse] max_calls`: calls one instance may serve; `None`, a fresh instance per call.
    reuse: Option<u32>,
    /// Warm instances between calls, each holding its slot, and the calls waiting for one.
    idle: Mutex<Idle>,
    /// Tells waiting calls that an instance they can use was just kept.
    kept: Notify,
}

/// A model's warm instances between calls, and the calls waiting for a slot, by plugin: an
/// instance serves calls of the plugin (component) it is an instance of.
#[derive(Default)]
pub(super) struct Idle {
    instances: Vec<Warm>,
    /// (plugin, calls of it waiting for a slot); a model has one or two plugins.
    waiting: Vec<(PluginKey, usize)>,
}

/// Which loaded plugin an instance belongs to: unique per [`super::Plugin`] load.
pub(super) type PluginKey = u64;

impl Idle {
    fn waiting_for(&self, plugin: PluginKey) -> usize {
        self.waiting
            .iter()
            .find(|(p, _)| *p == plugin)
            .map_or(0, |(_, n)| *n)
    }

    fn count_waiter(&mut self, plugin: PluginKey, up: bool) {
        match self.waiting.iter_mut().find(|(p, _)| *p == plugin) {
            Some((_, n)) if up => *n += 1,
            Some((_, n)) => *n = n.saturating_sub(1),
            None if up => self.waiting.push((plugin, 1)),
            None => {}
        }
        self.waiting.retain(|(_, n)| *n > 0);
    }

    fn take(&mut self, plugin: PluginKey) -> Option<Warm> {
        let at = self.instances.iter().rposition(|w| w.plugin == plugin)?;
        Some(self.instances.swap_remove(at))
    }

    /// Removes the instances no waiting call can use, for the caller to drop outside the lock.
    fn unwanted(&mut self) -> Vec<Warm> {
        let (keep, unwanted): (Vec<Warm>, Vec<Warm>) = std::mem::take(&mut self.instances)
            .into_iter()
            .partition(|w| self.waiting_for(w.plugin) > 0);
        self.instances = keep;
        unwanted
    }
}

impl std::fmt::Debug for Idle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idle")
            .field("instances", &self.instances.len())
            .field("waiting", &self.waiting)
            .finish()
    }
}

/// An instance kept for the model's next call: its store (memory, globals and all), the
/// component instance (which export a call uses is bound per call), the plugin it is an
/// instance of, the slot it holds, and the calls it has served.
pub(super) struct Warm {
    pub store: wasmtime::Store<Sandbox>,
    pub instance: wasmtime::component::Instance,
    pub plugin: PluginKey,
    pub slot: Slot,
    pub calls: u32,
}

/// What a call got to run in: a warm instance of its plugin (which holds its slot), or a
/// slot for a fresh one.
pub(super) enum Acquired {
    Warm(Warm),
    Slot(Slot),
}

/// Counts a call as waiting for a slot of its model (under the idle list's lock, which keeping
/// an instance also takes) until dropped, however the wait ends: a slot, a warm instance, the
/// deadline, or the call being cancelled.
struct Waiting<'a> {
    inner: &'a Inner,
    plugin: PluginKey,
}

impl<'a> Waiting<'a> {
    fn start(inner: &'a Inner, plugin: PluginKey) -> Self {
        let mut idle = lock(&inner.idle);
        idle.count_waiter(plugin, true);
        inner.waiting.fetch_add(1, Ordering::SeqCst);
        drop(idle);
        Waiting { inner, plugin }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut idle = lock(&self.inner.idle);
        idle.count_waiter(self.plugin, false);
        self.inner.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Every model's idle lists, so a call finding the gateway's pool full can free the slots
/// they hold (the host keeps one).
#[derive(Default)]
pub struct Idlers {
    shares: Mutex<Vec<Weak<Inner>>>,
    /// Calls waiting for the gateway's pool now.
    waiting: AtomicUsize,
}

impl Idlers {
    /// Lets calls that find the pool full discard `share`'s idle instances.
    pub(super) fn register(&self, share: &Share) {
        if let Some(inner) = &share.inner
            && inner.reuse.is_some()
        {
            let mut shares = lock(&self.shares);
            shares.retain(|w| w.strong_count() > 0);
            shares.push(Arc::downgrade(inner));
        }
    }

    /// Discards every model's idle instances (outside the locks: dropping a store resets its
    /// slot).
    fn evict_all(&self) {
        let shares: Vec<Arc<Inner>> = lock(&self.shares)
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        for inner in shares {
            drop(std::mem::take(&mut lock(&inner.idle).instances));
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding it leaves only plain lists behind.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Share {
    pub fn new(config: ShareConfig) -> Share {
        let slots = config.max_concurrent_calls.max(1);
        let running = config.max_running_calls.clamp(1, slots);
        Share {
            inner: Some(Arc::new(Inner {
                config,
                slots: Arc::new(Semaphore::new(slots as usize)),
                cores: Arc::new(Semaphore::new(running as usize)),
                strict_until: AtomicU64::new(0),
                last_long: AtomicU64::new(0),
                waiting: AtomicUsize::new(0),
                reuse: None,
                idle: Mutex::default(),
                kept: Notify::new(),
            })),
        }
    }

    /// Lets one instance serve up to `max_calls` of the model's calls (`[reuse]`); `None`
    /// (the default) keeps a fresh instance per call. Call it before the share is cloned.
    pub fn with_reuse(mut self, max_calls: Option<u32>) -> Share {
        if let Some(inner) = self.inner.as_mut().and_then(Arc::get_mut) {
            inner.reuse = max_calls.filter(|n| *n > 1);
        }
        self
    }

    /// Calls one instance may serve, when reuse is on.
    pub fn reuse(&self) -> Option<u32> {
        self.inner.as_ref().and_then(|i| i.reuse)
    }

    /// Idle warm instances now.
    pub fn idle(&self) -> usize {
        self.inner
            .as_ref()
            .map_or(0, |i| lock(&i.idle).instances.len())
    }

    /// A warm instance of `plugin` for the next call, if one is idle.
    fn take_warm(&self, plugin: PluginKey) -> Option<Warm> {
        let inner = self.inner.as_ref()?;
        inner.reuse?;
        lock(&inner.idle).take(plugin)
    }

    /// Keeps `warm` for the model's next call, handing it to a waiting call of its plugin if
    /// there is one — unless reuse is off, it has served its `max_calls`, or only calls that
    /// can't use it wait (another model for the gateway's pool, or the model's other plugin
    /// for a slot): then it is dropped here, which frees its slot for them.
    pub(super) fn keep_warm(&self, idlers: &Idlers, warm: Warm) {
        let Some(inner) = &self.inner else { return };
        let Some(max_calls) = inner.reuse else { return };
        if warm.calls >= max_calls || idlers.waiting.load(Ordering::SeqCst) > 0 {
            return;
        }
        let mut idle = lock(&inner.idle);
        // Under the lock a waiter counts itself in and looks for an instance, so an instance
        // is never left idle while a call that can't use it waits for its slot.
        let wanted = idle.waiting_for(warm.plugin) > 0;
        if !wanted && inner.waiting.load(Ordering::SeqCst) > 0 {
            drop(idle);
            return;
        }
        idle.instances.push(warm);
        drop(idle);
        if wanted {
            inner.kept.notify_waiters();
        }
    }

    /// No bounds of its own: only the host's pool applies (plugins loaded outside a gateway,
    /// benchmarks).
    pub fn unbounded() -> Share {
        Share { inner: None }
    }

    pub fn config(&self) -> Option<ShareConfig> {
        self.inner.as_ref().map(|i| i.config)
    }

    /// Calls of the model waiting for a slot now, and the slots in use.
    pub fn load(&self) -> (usize, u32) {
        self.inner.as_ref().map_or((0, 0), |i| {
            let free = i.slots.available_permits() as u32;
            (
                i.waiting.load(Ordering::Relaxed),
                i.config.max_concurrent_calls.saturating_sub(free),
            )
        })
    }

    /// A warm instance of `plugin` (the calling plugin load) if one is idle (`[reuse]`), else
    /// one of the model's slots, then one of the host's, waiting for at most `wait`: first
    /// come, first served for the slots, and a warm instance the model keeps meanwhile goes
    /// to a waiting call at once. The slot is held until the returned instance or [`Slot`]
    /// drops.
    pub(super) async fn acquire(
        &self,
        plugin: PluginKey,
        pool: &Arc<Semaphore>,
        idlers: &Idlers,
        wait: Duration,
    ) -> Result<Acquired, CallError> {
        if let Some(warm) = self.take_warm(plugin) {
            return Ok(Acquired::Warm(warm));
        }
        self.slot(plugin, pool, idlers, wait).await
    }

    /// Waits for one of the model's slots, or a warm instance the model keeps meanwhile, then
    /// (for a slot) one of the host's; for at most `wait` in all.
    async fn slot(
        &self,
        plugin: PluginKey,
        pool: &Arc<Semaphore>,
        idlers: &Idlers,
        wait: Duration,
    ) -> Result<Acquired, CallError> {
        // The fast path takes no timer: both are free.
        let model = match &self.inner {
            None => None,
            Some(inner) => inner.slots.clone().try_acquire_owned().ok(),
        };
        let fast = match (&self.inner, &model) {
            (Some(_), None) => None,
            _ => pool.clone().try_acquire_owned().ok(),
        };
        if let Some(pool_permit) = fast {
            return Ok(Acquired::Slot(Slot {
                _model: model,
                _pool: pool_permit,
            }));
        }
        // One deadline for both waits: the call's own.
        let deadline = tokio::time::Instant::now() + wait;
        let model = match (&self.inner, model) {
            (Some(inner), None) => {
                let waiting = Waiting::start(inner, plugin);
                let waited =
                    tokio::time::timeout_at(deadline, Self::model_slot(inner, plugin)).await;
                drop(waiting);
                match waited.map_err(|_| self.busy(wait))? {
                    Ok(permit) => Some(permit),
                    Err(warm) => return Ok(Acquired::Warm(warm)),
                }
            }
            (_, model) => model,
        };
        let pool = match pool.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                idlers.waiting.fetch_add(1, Ordering::SeqCst);
                // Every model's idle instances give their pool slots to the waiting call.
                idlers.evict_all();
                let waited = tokio::time::timeout_at(deadline, acquire(pool)).await;
                idlers.waiting.fetch_sub(1, Ordering::SeqCst);
                waited.map_err(|_| pool_busy(wait))?
            }
        };
        Ok(Acquired::Slot(Slot {
            _model: model,
            _pool: pool,
        }))
    }

    /// A slot for a fresh instance (the unit tests' view of [`Share::slot`]: they keep no
    /// instances).
    #[cfg(test)]
    async fn fresh_slot(
        &self,
        pool: &Arc<Semaphore>,
        idlers: &Idlers,
        wait: Duration,
    ) -> Result<Slot, CallError> {
        match self.slot(0, pool, idlers, wait).await? {
            Acquired::Slot(slot) => Ok(slot),
            Acquired::Warm(_) => unreachable!("nothing was kept warm"),
        }
    }

    /// The wait for a model slot: a permit, or (`Err`) a warm instance kept meanwhile.
    async fn model_slot(inner: &Inner, plugin: PluginKey) -> Result<OwnedSemaphorePermit, Warm> {
        loop {
            // Registered before looking, so an instance kept after the look still wakes us.
            let kept = inner.kept.notified();
            tokio::pin!(kept);
            kept.as_mut().enable();
            // Idle instances no waiting call can use give their slots to the waiting calls
            // (dropped outside the lock: dropping a store resets its slot). A block, not
            // `drop`, ends the guard: the future must not hold it across the await below.
            let unwanted = {
                let mut idle = lock(&inner.idle);
                if let Some(warm) = idle.take(plugin) {
                    return Err(warm);
                }
                idle.unwanted()
            };
            drop(unwanted);
            tokio::select! {
                permit = acquire(&inner.slots) => return Ok(permit),
                () = &mut kept => {}
            }
        }
    }

    fn busy(&self, waited: Duration) -> CallError {
        let slots = self.config().map_or(0, |c| c.max_concurrent_calls);
        CallError::Busy(format!(
            "the model's {slots} plugin slots (limits.max_concurrent_calls) stayed busy for \
             {} ms (limits.timeout_ms); the call did not start: retry later, or raise \
             limits.max_concurrent_calls",
            waited.as_millis()
        ))
    }

    /// Runs `call`, holding one of the model's cores only while it is being polled, i.e.
    /// while its guest code runs (between two epoch ticks at most) — or, on a bursting share
    /// whose calls stay short, running without one when they are all taken.
    pub(super) fn on_cores<F: Future>(&self, call: F) -> OnCores<F> {
        OnCores {
            inner: self.inner.clone(),
            waiting: None,
            call: Box::pin(call),
        }
    }

    /// Whether the model keeps strictly to its cores now: its share doesn't burst, or within
    /// the past [`STRICT_FOR`] a stretch of its calls ran long within [`STRICT_FOR`] of the one
    /// before (or ran [`HOLD_AT_ONCE`]).
    pub fn strict(&self) -> bool {
        self.inner.as_ref().is_some_and(|i| !i.may_burst())
    }
}

/// The clock `strict_until` counts from.
static BASE: LazyLock<Instant> = LazyLock::new(Instant::now);

fn nanos_since_base(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(*BASE).as_nanos()).unwrap_or(u64::MAX)
}

/// When a stretch of a call began: by the wall clock, and by its thread's CPU clock, so that
/// time the thread spent preempted (routine on a machine with more runnable threads than
/// cores) doesn't make a short call look long. Where the CPU clock can't be read, the wall
/// clock decides.
struct Stretch {
    wall: Instant,
    cpu: Option<cpu_time::ThreadTime>,
}

impl Stretch {
    fn start() -> Stretch {
        Stretch {
            wall: Instant::now(),
            cpu: cpu_time::ThreadTime::try_now().ok(),
        }
    }

    /// How long the stretch kept its thread on a core, if that was [`LONG_POLL`] or more.
    fn ran_long(&self) -> Option<Duration> {
        // A thread's CPU time never passes the wall time, so a stretch short by the wall
        // clock (every stretch of a well-behaved plugin) is short without a second read of
        // the CPU clock, which is a system call.
        let wall = self.wall.elapsed();
        if wall < LONG_POLL {
            return None;
        }
        match self.cpu.as_ref().map(cpu_time::ThreadTime::try_elapsed) {
            Some(Ok(cpu)) => (cpu >= LONG_POLL).then_some(cpu),
            _ => Some(wall),
        }
    }
}

impl Inner {
    /// Whether a call finding the cores taken may run anyway now.
    fn may_burst(&self) -> bool {
        self.config.burst
            && nanos_since_base(Instant::now()) >= self.strict_until.load(Ordering::Relaxed)
    }

    /// A stretch has just ended: if it ran long within [`STRICT_FOR`] of the model's last
    /// long one, or ran [`HOLD_AT_ONCE`], the model keeps to its cores for the next
    /// [`STRICT_FOR`].
    fn stretch_ended(&self, stretch: &Stretch) {
        if let Some(length) = stretch.ran_long() {
            self.ran_long_at(nanos_since_base(Instant::now()), length >= HOLD_AT_ONCE);
        }
    }

    /// A stretch ended long at `now` (nanoseconds past [`BASE`]); `at_once`: long enough
    /// ([`HOLD_AT_ONCE`]) to hold the model without a second one.
    fn ran_long_at(&self, now: u64, at_once: bool) {
        let now = now.max(1); // 0 is "none yet"
        let window = STRICT_FOR.as_nanos() as u64;
        let last = self.last_long.swap(now, Ordering::Relaxed);
        if at_once || (last != 0 && now.saturating_sub(last) < window) {
            self.strict_until
                .fetch_max(now.saturating_add(window), Ordering::Relaxed);
        }
    }
}

/// The gateway's instance pool stayed full for the call's whole wait.
pub(super) fn pool_busy(waited: Duration) -> CallError {
    CallError::Busy(format!(
        "every plugin instance of the gateway (plugins.max_instances) stayed busy for {} ms \
         (limits.timeout_ms); the call did not start: retry later, or raise \
         plugins.max_instances",
        waited.as_millis()
    ))
}

/// A held instance slot: the model's and the host's.
#[derive(Debug)]
pub(super) struct Slot {
    _model: Option<OwnedSemaphorePermit>,
    _pool: OwnedSemaphorePermit,
}

async fn acquire(semaphore: &Arc<Semaphore>) -> OwnedSemaphorePermit {
    // The semaphores are never closed.
    semaphore
        .clone()
        .acquire_owned()
        .await
        .expect("plugin share semaphores are never closed")
}

type Acquire = Pin<Box<dyn Future<Output = OwnedSemaphorePermit> + Send>>;

/// A future run on the model's cores: each poll first takes a core (waiting in line behind
/// the model's other calls, unless the share bursts), polls the call, and gives the core back.
pub(super) struct OnCores<F> {
    inner: Option<Arc<Inner>>,
    /// The place in line while waiting for a core.
    waiting: Option<Acquire>,
    call: Pin<Box<F>>,
}

impl<F: Future> Future for OnCores<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let Some(inner) = &this.inner else {
            return this.call.as_mut().poll(cx);
        };
        let permit = match this.waiting.as_mut() {
            Some(waiting) => match waiting.as_mut().poll(cx) {
                Poll::Ready(permit) => {
                    this.waiting = None;
                    Some(permit)
                }
                Poll::Pending => return Poll::Pending,
            },
            // Fails while others wait: a freed core goes to the first in line, not to
            // whoever asks next.
            None => match inner.cores.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) if inner.may_burst() => None,
                Err(_) => {
                    let cores = inner.cores.clone();
                    let mut waiting: Acquire = Box::pin(async move { acquire(&cores).await });
                    match waiting.as_mut().poll(cx) {
                        Poll::Ready(permit) => Some(permit),
                        Poll::Pending => {
                            this.waiting = Some(waiting);
                            return Poll::Pending;
                        }
                    }
                }
            },
        };
        // Only a bursting share times its stretches (a poll spent waiting in line is none).
        let stretch = inner.config.burst.then(Stretch::start);
        let polled = this.call.as_mut().poll(cx);
        if let Some(stretch) = &stretch {
            inner.stretch_ended(stretch);
        }
        drop(permit);
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two cores: one running call, four slots; one core: the same; many cores: half of
    /// them, four slots each, bounded by half the pool.
    #[test]
    fn defaults_follow_the_cores_and_the_pool() {
        let d = ShareConfig::defaults;
        assert_eq!(d(2, 1000), config(4, 1));
        assert_eq!(d(1, 1000), config(4, 1));
        assert_eq!(d(3, 1000), config(8, 2));
        assert_eq!(d(16, 1000), config(32, 8));
        assert_eq!(d(16, 20), config(10, 8));
        assert_eq!(d(16, 1), config(1, 1));
    }

    fn config(slots: u32, running: u32) -> ShareConfig {
        ShareConfig {
            max_concurrent_calls: slots,
            max_running_calls: running,
            burst: true,
        }
    }

    fn poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
        Pin::new(future).poll(&mut Context::from_waker(std::task::Waker::noop()))
    }

    /// Keeps the thread on its core for `length` of its CPU time, as a loop or a slow op would.
    fn on_core_for(length: Duration) {
        let start = cpu_time::ThreadTime::now();
        while start.elapsed() < length {
            std::hint::spin_loop();
        }
    }

    /// Takes one of the model's cores, as a call running elsewhere would.
    fn hold_a_core(share: &Share) -> OwnedSemaphorePermit {
        let inner = share.inner.as_ref().unwrap();
        inner.cores.clone().try_acquire_owned().unwrap()
    }

    /// A short call that finds the model's only core taken runs anyway on the default share,
    /// and waits its turn on an explicit one.
    #[test]
    fn short_calls_run_past_a_default_share_but_not_an_explicit_one() {
        let bursting = Share::new(config(4, 1));
        let held = hold_a_core(&bursting);
        let mut call = bursting.on_cores(async { 7 });
        assert_eq!(poll_once(&mut call), Poll::Ready(7));
        assert!(!bursting.strict());
        drop(held);

        let explicit = Share::new(ShareConfig {
            burst: false,
            ..config(4, 1)
        });
        assert!(explicit.strict());
        let held = hold_a_core(&explicit);
        let mut call = explicit.on_cores(async { 7 });
        assert!(poll_once(&mut call).is_pending(), "waits for the core");
        drop(held);
        assert_eq!(poll_once(&mut call), Poll::Ready(7), "runs once it is free");
    }

    /// Two stretches of the model's calls running long on their core within [`STRICT_FOR`]
    /// (a loop between epoch ticks, a slow native op) hold the model to its share: the next
    /// call finding the core taken waits. One alone does not (a well-behaved call reads one
    /// now and then), nor does a stretch whose thread sleeps (or is preempted) as long.
    #[test]
    fn long_stretches_hold_the_model_to_its_share() {
        let share = Share::new(config(4, 1));
        let mut asleep = share.on_cores(async {
            std::thread::sleep(2 * LONG_POLL);
        });
        assert!(poll_once(&mut asleep).is_ready());
        assert!(!share.strict(), "time off the core is not a long call");

        let long = || share.on_cores(async { on_core_for(2 * LONG_POLL) });
        assert!(poll_once(&mut long()).is_ready());
        assert!(
            !share.strict(),
            "one long stretch is not yet a long-running model"
        );
        assert!(poll_once(&mut long()).is_ready());
        assert!(
            share.strict(),
            "strict for {STRICT_FOR:?} after a second long stretch"
        );
        let held = hold_a_core(&share);
        let mut next = share.on_cores(async { 1 });
        assert!(poll_once(&mut next).is_pending(), "waits for the core");
        drop(held);
        assert_eq!(poll_once(&mut next), Poll::Ready(1));
        // Another model's share is its own.
        assert!(!Share::new(config(4, 1)).strict());
    }

    /// Long stretches further apart than [`STRICT_FOR`] never hold the model; two closer
    /// together hold it for [`STRICT_FOR`] from the second.
    #[test]
    fn long_stretches_far_apart_leave_the_model_bursting() {
        let share = Share::new(config(4, 1));
        let inner = share.inner.as_ref().unwrap();
        let window = STRICT_FOR.as_nanos() as u64;
        let strict_until = || inner.strict_until.load(Ordering::Relaxed);
        let t = 100 * window;
        inner.ran_long_at(t, false);
        inner.ran_long_at(t + window, false);
        inner.ran_long_at(t + 2 * window + 1, false);
        assert_eq!(strict_until(), 0, "one long stretch a second");
        inner.ran_long_at(t + 3 * window, false);
        assert_eq!(strict_until(), t + 4 * window, "two within a second");
        // A very long one holds the model by itself.
        inner.ran_long_at(t + 10 * window, true);
        assert_eq!(strict_until(), t + 11 * window, "one of HOLD_AT_ONCE");
    }

    /// One stretch of [`HOLD_AT_ONCE`] (a slow native op) holds the model by itself.
    #[test]
    fn a_very_long_stretch_holds_the_model_at_once() {
        let share = Share::new(config(4, 1));
        let mut op = share.on_cores(async { on_core_for(HOLD_AT_ONCE) });
        assert!(poll_once(&mut op).is_ready());
        assert!(share.strict(), "held after one stretch of {HOLD_AT_ONCE:?}");
    }

    /// With its slots taken, a call waits; once one frees up within the wait it goes on, and
    /// past the wait it is refused as busy — both ways of the bound.
    #[tokio::test(start_paused = true)]
    async fn a_call_waits_for_a_slot_within_its_deadline() {
        let share = Share::new(config(1, 1));
        let pool = Arc::new(Semaphore::new(10));
        let held = share
            .fresh_slot(&pool, &Idlers::default(), Duration::from_secs(1))
            .await
            .unwrap();
        let refused = share
            .fresh_slot(&pool, &Idlers::default(), Duration::from_millis(100))
            .await;
        let Err(CallError::Busy(message)) = refused else {
            panic!("{refused:?}")
        };
        assert!(
            message.contains("1 plugin slots (limits.max_concurrent_calls)"),
            "{message}"
        );
        let waiter = tokio::spawn({
            let (share, pool) = (share.clone(), pool.clone());
            async move {
                share
                    .fresh_slot(&pool, &Idlers::default(), Duration::from_secs(1))
                    .await
                    .is_ok()
            }
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        drop(held);
        assert!(waiter.await.unwrap(), "the freed slot went to the waiter");
        assert_eq!(pool.available_permits(), 10, "every slot came back");
    }

    /// The host's pool is a gate of its own: a model with free slots still waits for it.
    #[tokio::test(start_paused = true)]
    async fn the_hosts_pool_bounds_every_model() {
        let pool = Arc::new(Semaphore::new(1));
        let (a, b) = (Share::new(config(4, 1)), Share::new(config(4, 1)));
        let held = a
            .fresh_slot(&pool, &Idlers::default(), Duration::from_secs(1))
            .await
            .unwrap();
        let refused = b
            .fresh_slot(&pool, &Idlers::default(), Duration::from_millis(10))
            .await;
        let Err(CallError::Busy(message)) = refused else {
            panic!("{refused:?}")
        };
        assert!(message.contains("plugins.max_instances"), "{message}");
        drop(held);
        assert!(
            b.fresh_slot(&pool, &Idlers::default(), Duration::from_millis(10))
                .await
                .is_ok()
        );
        let unbounded = Share::unbounded();
        let _held = unbounded
            .fresh_slot(&pool, &Idlers::default(), Duration::from_secs(1))
            .await
            .unwrap();
        assert!(matches!(
            unbounded
                .fresh_slot(&pool, &Idlers::default(), Duration::from_millis(10))
                .await,
            Err(CallError::Busy(_))
        ));
    }

    /// While one call of an explicit one-core share is being polled (its guest running),
    /// another call of the model does not run; with two cores it does.
    #[tokio::test]
    async fn a_models_calls_run_on_its_cores_only() {
        for (cores, runs_alongside) in [(1, false), (2, true)] {
            let share = Share::new(ShareConfig {
                burst: false,
                ..config(2, cores)
            });
            let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let flag = ran.clone();
            let mut other = Box::pin(share.on_cores(async move {
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
            }));
            let done = share
                .on_cores(async { futures::poll!(other.as_mut()).is_ready() })
                .await;
            assert_eq!(done, runs_alongside, "cores = {cores}");
            if !done {
                other.await;
            }
            assert!(
                ran.load(std::sync::atomic::Ordering::SeqCst),
                "it ran once the core was free"
            );
        }
    }
}
