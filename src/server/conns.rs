//! The open connections of one listener: admission under the connection cap (shedding the
//! connection idle the longest to make room, refusing when none is idle), which connections
//! are idle and since when, and a wait for all of them to close (drain).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// One connection's state, shared by its task, its requests and the table.
pub struct ConnState {
    /// Requests being handled on it (HTTP/2: streams).
    active: AtomicUsize,
    /// When it last became idle, in ms after the table's `base`.
    idle_since_ms: AtomicU64,
    /// Changes of `active` between zero and not.
    activity: Notify,
    /// Set when the table asks it to close for a newer connection (see [`Conns::admit`]).
    shed: AtomicBool,
    shed_now: Notify,
    /// Set when it is closed for being idle: there is no request data left to read, so the
    /// socket closes at once rather than lingering (see `linger.rs`).
    closed_idle: AtomicBool,
}

impl ConnState {
    /// Counts a request as in flight until the guard drops.
    pub fn begin_request(self: &Arc<Self>, conns: &Conns) -> RequestGuard {
        if self.active.fetch_add(1, Ordering::AcqRel) == 0 {
            self.activity.notify_waiters();
        }
        RequestGuard {
            state: self.clone(),
            base: conns.base,
        }
    }

    /// Resolves when the table asks this connection to make room.
    pub async fn shed_requested(&self) {
        let notified = self.shed_now.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.shed.load(Ordering::Acquire) {
            return;
        }
        notified.await;
    }

    /// Resolves once the connection has had no request in flight for `timeout`.
    pub async fn idle_for(&self, base: Instant, timeout: Duration) {
        loop {
            let changed = self.activity.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.active.load(Ordering::Acquire) > 0 {
                changed.await;
                continue;
            }
            let since = self.idle_since_ms.load(Ordering::Acquire);
            let deadline = base + Duration::from_millis(since) + timeout;
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => {
                    if self.active.load(Ordering::Acquire) == 0
                        && self.idle_since_ms.load(Ordering::Acquire) == since
                    {
                        return;
                    }
                }
                () = &mut changed => {}
            }
        }
    }

    /// Marks the connection as closed for idleness (no lingering close needed).
    pub fn mark_closed_idle(&self) {
        self.closed_idle.store(true, Ordering::Release);
    }

    pub fn closed_idle(&self) -> bool {
        self.closed_idle.load(Ordering::Acquire)
    }
}

/// A request in flight on a connection; dropping it may make the connection idle.
pub struct RequestGuard {
    state: Arc<ConnState>,
    base: Instant,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        if self.state.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.state
                .idle_since_ms
                .store(ms_since(self.base), Ordering::Release);
            self.state.activity.notify_waiters();
        }
    }
}

fn ms_since(base: Instant) -> u64 {
    base.elapsed().as_millis() as u64
}

/// Why a new connection was not admitted.
#[derive(Debug)]
pub struct AtCapacity {
    pub max: usize,
}

/// The connection table of one listener.
pub struct Conns {
    max: usize,
    base: Instant,
    next_id: AtomicU64,
    /// By id, i.e. in accept order. A std mutex: held for an insert, a remove or a scan at
    /// the cap, never across an await.
    open: Mutex<BTreeMap<u64, Arc<ConnState>>>,
    /// Signalled whenever a connection closes, for the drain wait.
    closed: Notify,
}

impl Conns {
    pub fn new(max: usize) -> Arc<Conns> {
        Arc::new(Conns {
            max,
            base: Instant::now(),
            next_id: AtomicU64::new(0),
            open: Mutex::new(BTreeMap::new()),
            closed: Notify::new(),
        })
    }

    pub fn base(&self) -> Instant {
        self.base
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<ConnState>>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits a new connection. At the cap, the connection idle the longest (a silent one,
    /// a keep-alive one between requests, one still trickling its headers) is asked to
    /// close to make room and `Ok((slot, true))` says so; with every connection busy the
    /// new one is refused. Connections already asked to close don't count against the cap,
    /// so a burst of new clients sheds one idle connection each.
    pub fn admit(self: &Arc<Self>) -> Result<(Slot, bool), AtCapacity> {
        let mut open = self.lock();
        let mut shed = false;
        let counted = open
            .values()
            .filter(|c| !c.shed.load(Ordering::Acquire))
            .count();
        if counted >= self.max {
            let victim = open
                .values()
                .filter(|c| {
                    c.active.load(Ordering::Acquire) == 0 && !c.shed.load(Ordering::Acquire)
                })
                .min_by_key(|c| c.idle_since_ms.load(Ordering::Acquire));
            let Some(victim) = victim else {
                return Err(AtCapacity { max: self.max });
            };
            victim.shed.store(true, Ordering::Release);
            victim.mark_closed_idle();
            victim.shed_now.notify_one();
            shed = true;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState {
            active: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(ms_since(self.base)),
            activity: Notify::new(),
            shed: AtomicBool::new(false),
            shed_now: Notify::new(),
            closed_idle: AtomicBool::new(false),
        });
        open.insert(id, state.clone());
        Ok((
            Slot {
                conns: self.clone(),
                id,
                state,
            },
            shed,
        ))
    }

    /// Resolves when every connection has closed.
    pub async fn all_closed(&self) {
        loop {
            let closed = self.closed.notified();
            tokio::pin!(closed);
            closed.as_mut().enable();
            if self.is_empty() {
                return;
            }
            closed.await;
        }
    }
}

/// A connection's place in the table; dropping it (the connection's task ending) frees it.
pub struct Slot {
    conns: Arc<Conns>,
    id: u64,
    pub state: Arc<ConnState>,
}

impl Slot {
    pub fn conns(&self) -> &Arc<Conns> {
        &self.conns
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.conns.lock().remove(&self.id);
        self.conns.closed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Under the cap every connection is admitted; at it the one idle the longest is shed,
    /// and with all of them busy a new one is refused.
    #[tokio::test(start_paused = true)]
    async fn cap_sheds_longest_idle_then_refuses() {
        let conns = Conns::new(2);
        let (a, shed) = conns.admit().unwrap();
        assert!(!shed);
        tokio::time::advance(Duration::from_millis(10)).await;
        let (b, _) = conns.admit().unwrap();
        // a has been idle longest: it is the one asked to close.
        let (c, shed) = conns.admit().unwrap();
        assert!(shed);
        assert!(a.state.shed.load(Ordering::Acquire));
        assert!(!b.state.shed.load(Ordering::Acquire));
        drop(a);
        let _busy_b = b.state.begin_request(&conns);
        let _busy_c = c.state.begin_request(&conns);
        assert!(conns.admit().is_err(), "all busy: refused");
        drop(_busy_b);
        let (_d, shed) = conns.admit().unwrap();
        assert!(shed, "b went idle, so it makes room");
    }

    /// `idle_for` fires after the timeout with no request, and not while one is in flight.
    #[tokio::test(start_paused = true)]
    async fn idle_timer_waits_for_requests() {
        let conns = Conns::new(4);
        let (slot, _) = conns.admit().unwrap();
        let guard = slot.state.begin_request(&conns);
        let idle = slot.state.idle_for(conns.base(), Duration::from_secs(5));
        tokio::pin!(idle);
        tokio::select! {
            () = &mut idle => panic!("idle while a request is in flight"),
            () = tokio::time::sleep(Duration::from_secs(60)) => {}
        }
        drop(guard);
        let started = Instant::now();
        idle.await;
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }
}
