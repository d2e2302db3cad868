//! The retry budget: retries may be at most a fraction of calls over a sliding window, plus a
//! small allowance per second, so failing over never multiplies the load on a fleet that is
//! already failing (Finagle's and linkerd's budgets work the same way).

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// How far back calls and retries are counted.
const WINDOW: Duration = Duration::from_secs(10);
/// The window is kept as this many buckets of `WINDOW / BUCKETS` each.
const BUCKETS: usize = 10;

pub(super) struct RetryBudget {
    ratio: f64,
    min_per_second: f64,
    /// A std mutex: held for a few additions, never across an await.
    window: Mutex<Window>,
}

struct Window {
    /// (calls, retries) per bucket; `buckets[i]` covers the bucket numbered `i mod BUCKETS`.
    buckets: [(u64, u64); BUCKETS],
    /// The bucket number `now` falls in, counted from `origin`.
    current: u64,
    origin: Instant,
}

impl RetryBudget {
    pub(super) fn new(ratio: f64, min_per_second: f64) -> Self {
        Self {
            ratio,
            min_per_second,
            window: Mutex::new(Window {
                buckets: [(0, 0); BUCKETS],
                current: 0,
                origin: Instant::now(),
            }),
        }
    }

    /// Counts one call (not a retry) toward the budget.
    pub(super) fn record_call(&self) {
        self.with_window(|w| w.buckets[w.slot()].0 += 1);
    }

    /// Takes one retry from the budget if it has room: retries in the window stay within
    /// `ratio` × calls in the window + `min_per_second` × the window's length.
    pub(super) fn try_retry(&self) -> bool {
        let (ratio, min) = (self.ratio, self.min_per_second);
        self.with_window(|w| {
            let (calls, retries) = w
                .buckets
                .iter()
                .fold((0, 0), |(c, r), &(bc, br)| (c + bc, r + br));
            let allowed = ratio * calls as f64 + min * WINDOW.as_secs_f64();
            let ok = (retries as f64) + 1.0 <= allowed;
            if ok {
                w.buckets[w.slot()].1 += 1;
            }
            ok
        })
    }

    fn with_window<T>(&self, f: impl FnOnce(&mut Window) -> T) -> T {
        let mut w = self
            .window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        w.advance(Instant::now());
        f(&mut w)
    }
}

impl Window {
    fn slot(&self) -> usize {
        (self.current % BUCKETS as u64) as usize
    }

    /// Moves to the bucket `now` falls in, emptying the buckets that fell out of the window.
    fn advance(&mut self, now: Instant) {
        let width = WINDOW / BUCKETS as u32;
        let bucket =
            (now.saturating_duration_since(self.origin).as_nanos() / width.as_nanos()) as u64;
        let stale = bucket.saturating_sub(self.current).min(BUCKETS as u64);
        for i in 1..=stale {
            let slot = ((self.current + i) % BUCKETS as u64) as usize;
            self.buckets[slot] = (0, 0);
        }
        self.current = self.current.max(bucket);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With no allowance per second, retries stay within the ratio of calls: 20 % of 50
    /// calls is 10 retries, the 11th is refused.
    #[tokio::test(start_paused = true)]
    async fn retries_stay_within_the_ratio() {
        let budget = RetryBudget::new(0.2, 0.0);
        for _ in 0..50 {
            budget.record_call();
        }
        for i in 0..10 {
            assert!(budget.try_retry(), "retry {i}");
        }
        assert!(!budget.try_retry());
        // One more call is worth a fifth of a retry: still not a whole one.
        budget.record_call();
        assert!(!budget.try_retry());
    }

    /// The allowance per second lets a quiet backend fail over: 1/s over a 10 s window is 10
    /// retries with no calls counted, and no more.
    #[tokio::test(start_paused = true)]
    async fn the_allowance_holds_without_traffic() {
        let budget = RetryBudget::new(0.2, 1.0);
        for i in 0..10 {
            assert!(budget.try_retry(), "retry {i}");
        }
        assert!(!budget.try_retry());
    }

    /// Calls and retries leave the window after 10 s: the budget refills.
    #[tokio::test(start_paused = true)]
    async fn the_window_slides() {
        let budget = RetryBudget::new(0.5, 0.0);
        budget.record_call();
        budget.record_call();
        assert!(budget.try_retry());
        assert!(!budget.try_retry());
        tokio::time::advance(WINDOW + Duration::from_secs(1)).await;
        // The old calls are gone with the old retry: nothing to retry against.
        assert!(!budget.try_retry());
        budget.record_call();
        budget.record_call();
        assert!(budget.try_retry());
    }

    /// A zero budget never retries.
    #[tokio::test(start_paused = true)]
    async fn a_zero_budget_is_off() {
        let budget = RetryBudget::new(0.0, 0.0);
        for _ in 0..100 {
            budget.record_call();
        }
        assert!(!budget.try_retry());
    }
}
