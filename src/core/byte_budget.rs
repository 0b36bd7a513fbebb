//! The byte budget of PROTOCOL.md 12.4, used for the sampling dispatch budget, the
//! forward_backward dispatch budget and the in-flight response budget (8.1.3).
//!
//! Semantics (as the official SDK's): an acquirer waits only while the remaining budget is
//! *negative*; it then subtracts its amount — possibly driving the budget negative — and
//! gives it back when its [`BytePermit`] is dropped. So one request larger than the whole
//! budget still proceeds whenever the budget is non-negative, and nothing ever deadlocks on
//! an oversized request.

use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// A byte budget shared by concurrent requests. Cheap to clone (shared state).
#[derive(Clone)]
pub struct ByteBudget {
    inner: Arc<Inner>,
}

struct Inner {
    remaining: Mutex<i64>,
    capacity: Mutex<i64>,
    freed: Notify,
}

/// Bytes taken from a [`ByteBudget`]; returned on drop.
pub struct BytePermit {
    inner: Arc<Inner>,
    bytes: i64,
}

impl ByteBudget {
    /// A budget of `capacity` bytes.
    pub fn new(capacity: u64) -> Self {
        let capacity = i64::try_from(capacity).unwrap_or(i64::MAX);
        ByteBudget {
            inner: Arc::new(Inner {
                remaining: Mutex::new(capacity),
                capacity: Mutex::new(capacity),
                freed: Notify::new(),
            }),
        }
    }

    /// Changes the capacity (e.g. when the server's flags arrive); permits already taken keep
    /// their bytes and return them as usual.
    pub fn set_capacity(&self, capacity: u64) {
        let capacity = i64::try_from(capacity).unwrap_or(i64::MAX);
        let mut cap = self.inner.capacity.lock().unwrap();
        let delta = capacity.saturating_sub(*cap);
        *cap = capacity;
        drop(cap);
        let mut remaining = self.inner.remaining.lock().unwrap();
        *remaining = remaining.saturating_add(delta);
        drop(remaining);
        self.inner.freed.notify_waiters();
    }

    /// The budget's capacity.
    pub fn capacity(&self) -> u64 {
        (*self.inner.capacity.lock().unwrap()).max(0) as u64
    }

    /// Bytes left (negative while oversized requests hold more than the capacity).
    pub fn remaining(&self) -> i64 {
        *self.inner.remaining.lock().unwrap()
    }

    /// Waits until the remaining budget is non-negative, then takes `bytes`.
    pub async fn acquire(&self, bytes: u64) -> BytePermit {
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        loop {
            // Register for a wake-up before checking, so a release between the check and the
            // wait is not missed.
            let freed = self.inner.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let mut remaining = self.inner.remaining.lock().unwrap();
                if *remaining >= 0 {
                    *remaining = remaining.saturating_sub(bytes);
                    return BytePermit {
                        inner: self.inner.clone(),
                        bytes,
                    };
                }
            }
            freed.await;
        }
    }

    /// Takes `bytes` if the budget is non-negative now, without waiting.
    pub fn try_acquire(&self, bytes: u64) -> Option<BytePermit> {
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        let mut remaining = self.inner.remaining.lock().unwrap();
        if *remaining < 0 {
            return None;
        }
        *remaining = remaining.saturating_sub(bytes);
        Some(BytePermit {
            inner: self.inner.clone(),
            bytes,
        })
    }
}

impl BytePermit {
    /// The bytes this permit holds.
    pub fn bytes(&self) -> u64 {
        self.bytes.max(0) as u64
    }
}

impl Drop for BytePermit {
    fn drop(&mut self) {
        let mut remaining = self.inner.remaining.lock().unwrap();
        *remaining = remaining.saturating_add(self.bytes);
        drop(remaining);
        self.inner.freed.notify_waiters();
    }
}

impl std::fmt::Debug for ByteBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ByteBudget")
            .field("capacity", &self.capacity())
            .field("remaining", &self.remaining())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn an_oversized_request_proceeds_and_later_ones_wait_for_it() {
        let budget = ByteBudget::new(100);
        let big = budget.acquire(250).await;
        assert_eq!(budget.remaining(), -150, "the budget may go negative");
        assert!(
            budget.try_acquire(1).is_none(),
            "negative: nobody else proceeds"
        );
        let b2 = budget.clone();
        let waiter = tokio::spawn(async move { b2.acquire(10).await.bytes() });
        // The waiter cannot finish while the big permit is held.
        assert!(tokio::time::timeout(Duration::from_millis(50), async {
            while !waiter.is_finished() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .is_err());
        drop(big);
        assert_eq!(waiter.await.unwrap(), 10);
        assert_eq!(budget.remaining(), 100, "every permit came back");
    }

    #[tokio::test]
    async fn non_negative_budgets_admit_even_when_the_amount_exceeds_what_is_left() {
        let budget = ByteBudget::new(100);
        let a = budget.acquire(60).await;
        let b = budget.acquire(60).await; // 40 left >= 0: proceeds, goes to -20
        assert_eq!(budget.remaining(), -20);
        drop(a);
        drop(b);
        assert_eq!(budget.remaining(), 100);
        budget.set_capacity(10);
        assert_eq!(budget.remaining(), 10);
        assert_eq!(budget.capacity(), 10);
    }
}
