//! A memory budget shared fairly between remote addresses.
//!
//! A plain semaphore serves waiters first come, first served: a crowd of
//! requests from a few hostile addresses queued ahead of an honest one keeps
//! it waiting for all of them. Here waiters queue per key and grants go
//! round-robin across keys, so a new key waits for at most one grant per
//! other waiting key, however many requests those keys have queued.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// Bytes of the budget held by one holder, given back when dropped.
pub struct Permit<K: Copy + Eq + Hash + Send + 'static> {
    budget: Arc<Budget<K>>,
    bytes: usize,
}

impl<K: Copy + Eq + Hash + Send + 'static> Drop for Permit<K> {
    fn drop(&mut self) {
        self.budget.grant(self.bytes);
    }
}

/// A wait in progress; if dropped before its grant, the waiters behind it
/// are looked at again (it may have been the one at the head of the turn).
struct Wait<'a, K: Copy + Eq + Hash + Send + 'static> {
    budget: &'a Arc<Budget<K>>,
    rx: oneshot::Receiver<Permit<K>>,
    granted: bool,
}

impl<K: Copy + Eq + Hash + Send + 'static> Drop for Wait<'_, K> {
    fn drop(&mut self) {
        if !self.granted {
            // A permit sent just now is given back when `rx` drops.
            self.rx.close();
            self.budget.grant(0);
        }
    }
}

struct Waiter<K: Copy + Eq + Hash + Send + 'static> {
    bytes: usize,
    reply: oneshot::Sender<Permit<K>>,
}

struct State<K: Copy + Eq + Hash + Send + 'static> {
    free: usize,
    /// Keys with waiters, in the order they are served next.
    turn: VecDeque<K>,
    waiting: HashMap<K, VecDeque<Waiter<K>>>,
}

/// The budget: `total` units, granted round-robin across keys.
pub struct Budget<K: Copy + Eq + Hash + Send + 'static> {
    total: usize,
    state: Mutex<State<K>>,
}

impl<K: Copy + Eq + Hash + Send + 'static> Budget<K> {
    /// A budget of `total` units (at least 1).
    pub fn new(total: usize) -> Arc<Budget<K>> {
        let total = total.max(1);
        Arc::new(Budget {
            total,
            state: Mutex::new(State {
                free: total,
                turn: VecDeque::new(),
                waiting: HashMap::new(),
            }),
        })
    }

    /// Waits for `bytes` units (at most the whole budget) on behalf of
    /// `key`. Cancel-safe: a dropped wait gives nothing away, and lets the
    /// waiters behind it go first.
    pub async fn acquire(self: &Arc<Self>, key: K, bytes: usize) -> Permit<K> {
        let bytes = bytes.clamp(1, self.total);
        let (reply, rx) = oneshot::channel();
        {
            let mut s = self.state.lock().expect("never poisoned");
            let q = s.waiting.entry(key).or_default();
            let first = q.is_empty();
            q.push_back(Waiter { bytes, reply });
            if first {
                s.turn.push_back(key);
            }
        }
        let mut wait = Wait {
            budget: self,
            rx,
            granted: false,
        };
        self.grant(0);
        let permit = (&mut wait.rx)
            .await
            .expect("a waiter is answered or dropped only by the budget it holds");
        wait.granted = true;
        permit
    }

    /// Gives back `bytes` and grants, in turn, what now fits.
    fn grant(self: &Arc<Self>, bytes: usize) {
        let mut grants = Vec::new();
        {
            let mut guard = self.state.lock().expect("never poisoned");
            let s = &mut *guard;
            s.free += bytes;
            while let Some(key) = s.turn.pop_front() {
                let Some(q) = s.waiting.get_mut(&key) else {
                    continue;
                };
                // Waiters that gave up are skipped.
                while q.front().is_some_and(|w| w.reply.is_closed()) {
                    q.pop_front();
                }
                let Some(w) = q.front() else {
                    s.waiting.remove(&key);
                    continue;
                };
                if w.bytes > s.free {
                    // Strict turns: this key is next, whatever fits later.
                    s.turn.push_front(key);
                    break;
                }
                let w = q.pop_front().expect("front exists");
                if q.is_empty() {
                    s.waiting.remove(&key);
                } else {
                    s.turn.push_back(key);
                }
                s.free -= w.bytes;
                grants.push(w);
            }
        }
        // Sent outside the lock: a refused permit (its waiter just gave up)
        // is dropped here, which gives it back again.
        for w in grants {
            let permit = Permit {
                budget: self.clone(),
                bytes: w.bytes,
            };
            let _ = w.reply.send(permit);
        }
    }

    /// Units not held by anyone.
    pub fn free(&self) -> usize {
        self.state.lock().expect("never poisoned").free
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn grants_go_round_robin_across_keys() {
        let b: Arc<Budget<u8>> = Budget::new(1);
        let held = b.acquire(0, 1).await;
        // Key 1 queues ten requests, then key 2 queues one.
        let mut waits = Vec::new();
        for _ in 0..10 {
            let b = b.clone();
            waits.push(tokio::spawn(async move { (1u8, b.acquire(1, 1).await) }));
            tokio::task::yield_now().await;
        }
        let b2 = b.clone();
        let late = tokio::spawn(async move { b2.acquire(2, 1).await });
        // Let every waiter register.
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        drop(held);
        // Key 1's first waiter is served, then key 2, before key 1's rest.
        let first = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if let Some(i) = waits.iter().position(|w| w.is_finished()) {
                    return waits.remove(i).await.unwrap();
                }
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
        assert!(!late.is_finished());
        drop(first);
        let p = tokio::time::timeout(Duration::from_secs(5), late)
            .await
            .unwrap()
            .unwrap();
        assert!(waits.iter().all(|w| !w.is_finished()));
        drop(p);
        for w in waits {
            drop(
                tokio::time::timeout(Duration::from_secs(5), w)
                    .await
                    .unwrap()
                    .unwrap(),
            );
        }
        assert_eq!(b.free(), 1);
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_takes_nothing() {
        let b: Arc<Budget<u8>> = Budget::new(4);
        let held = b.acquire(0, 4).await;
        let gave_up = tokio::time::timeout(Duration::from_millis(20), b.acquire(1, 2)).await;
        assert!(gave_up.is_err());
        drop(held);
        assert_eq!(b.free(), 4);
        let p = b.acquire(2, 4).await;
        assert_eq!(b.free(), 0);
        drop(p);
        // More than the whole budget is clamped to it, not refused forever.
        drop(b.acquire(3, 100).await);
        assert_eq!(b.free(), 4);
    }

    #[tokio::test]
    async fn a_waiter_giving_up_at_the_head_lets_the_next_one_in() {
        let b: Arc<Budget<u8>> = Budget::new(4);
        let _held = b.acquire(0, 3).await;
        // Key 1 wants more than is free and heads the turn; key 2 waits
        // behind it for what would fit.
        let head = tokio::time::timeout(Duration::from_millis(50), b.acquire(1, 2));
        let b2 = b.clone();
        let behind = tokio::spawn(async move { b2.acquire(2, 1).await });
        assert!(head.await.is_err());
        // With the head gone, key 2 gets its unit without anything released.
        let p = tokio::time::timeout(Duration::from_secs(5), behind)
            .await
            .expect("granted once the head gave up")
            .unwrap();
        assert_eq!(b.free(), 0);
        drop(p);
    }
}
