//! Until when this process may act: call Twilio, run its controllers. A leader's fence is set
//! only from a Lease renewal it has read back, and closes by itself when the renew deadline
//! passes, whatever the cause (the apiserver down, the network cut, its own stall), so
//! a leader stops before its Lease can expire and a standby can take over. Without leader
//! election the fence stays open. No I/O; `leadership` moves it, and the Twilio client and the
//! controllers obey it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Until when this process may act, shared by everything that acts.
#[derive(Clone)]
pub struct Fence {
    inner: Arc<Inner>,
}

struct Inner {
    /// The instant `until` counts from.
    epoch: Instant,
    /// Milliseconds after `epoch` until which acting is allowed; 0: closed; `u64::MAX`: always.
    until: AtomicU64,
    /// Told of every move, so waiters look again.
    moved: tokio::sync::Notify,
}

impl Fence {
    fn with(until: u64) -> Self {
        Self {
            inner: Arc::new(Inner {
                epoch: Instant::now(),
                until: AtomicU64::new(until),
                moved: tokio::sync::Notify::new(),
            }),
        }
    }

    /// A fence that never closes: no election is held.
    pub fn always_open() -> Self {
        Self::with(u64::MAX)
    }

    /// A fence that is closed until a renewal opens it.
    pub fn closed() -> Self {
        Self::with(0)
    }

    /// Allows acting until `deadline`, earlier or later than what was allowed: the newest
    /// reading of the Lease decides, even one that shows it renewed earlier than thought (a
    /// delayed renewal of somebody else's may have rewound it).
    pub fn open_until(&self, deadline: Instant) {
        let millis = deadline.saturating_duration_since(self.inner.epoch).as_millis();
        let millis = u64::try_from(millis).unwrap_or(u64::MAX - 1).max(1);
        self.inner.until.store(millis, Ordering::Release);
        self.inner.moved.notify_waiters();
    }

    /// Forbids acting from now on, until [`Fence::open_until`] allows it again.
    pub fn close(&self) {
        self.inner.until.store(0, Ordering::Release);
        self.inner.moved.notify_waiters();
    }

    /// How long acting stays allowed from now; zero when it is not.
    pub fn remaining(&self) -> Duration {
        match self.inner.until.load(Ordering::Acquire) {
            u64::MAX => Duration::MAX,
            until => {
                let now = self.inner.epoch.elapsed().as_millis();
                Duration::from_millis(u64::try_from(u128::from(until).saturating_sub(now)).unwrap_or(0))
            }
        }
    }

    /// Whether acting is allowed now.
    pub fn is_open(&self) -> bool {
        !self.remaining().is_zero()
    }

    /// Completes once acting is allowed.
    pub async fn opened(&self) {
        loop {
            let moved = self.inner.moved.notified();
            if self.is_open() {
                return;
            }
            moved.await;
        }
    }

    /// Completes once acting is no longer allowed: the deadline passed, or the fence was closed.
    pub async fn lapsed(&self) {
        loop {
            let moved = self.inner.moved.notified();
            let remaining = self.remaining();
            if remaining.is_zero() {
                return;
            }
            if remaining == Duration::MAX {
                moved.await;
            } else {
                tokio::select! {
                    _ = moved => {}
                    _ = tokio::time::sleep(remaining) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_fence_lapses_at_its_newest_deadline_and_closes_at_once() {
        let fence = Fence::closed();
        assert!(!fence.is_open());
        fence.open_until(Instant::now() + Duration::from_millis(200));
        assert!(fence.is_open());
        // A later renewal moves it forward, and a reading that shows an earlier one moves it back.
        fence.open_until(Instant::now() + Duration::from_millis(400));
        fence.open_until(Instant::now() + Duration::from_millis(100));
        let started = Instant::now();
        tokio::time::timeout(Duration::from_secs(2), fence.lapsed())
            .await
            .unwrap();
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(80) && waited < Duration::from_millis(350),
            "lapsed after {waited:?}"
        );
        assert!(!fence.is_open());
        fence.open_until(Instant::now() + Duration::from_secs(60));
        tokio::time::timeout(Duration::from_secs(1), fence.opened())
            .await
            .unwrap();
        fence.close();
        tokio::time::timeout(Duration::from_millis(100), fence.lapsed())
            .await
            .unwrap();
        assert!(Fence::always_open().is_open());
    }
}
