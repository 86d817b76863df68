//! An ordered, bounded, multi-core pipeline (pure; std threads only).
//!
//! Sealing and opening are CPU-bound per chunk (BLAKE3 and ChaCha20) and
//! independent across chunks, but chunks must be consumed in stream order.
//! [`ordered`] reads items on one thread, transforms them on a small pool and
//! hands the results back in order on the caller's thread, with a fixed number
//! of items in flight (finished or not), so memory stays at a few chunks whatever the input size.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};

/// Number of worker threads to use when the caller does not say: one per
/// available core, at most 8.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(8)
}

/// Most bytes of items a pipeline over a share's chunks keeps in flight
/// (audit F-10): the sharer picks the chunk size, up to 64 MiB, so the
/// window of [`ordered`] is bounded in bytes through [`threads_within`].
pub const MEMORY: u64 = 256 << 20;

/// `threads`, cut so that the items [`ordered`] keeps in flight
/// (`threads × 2 + 2` of `item_bytes` each) fit in `budget`; 1 (everything
/// on the caller's thread, one item at a time) when two workers would not.
pub fn threads_within(threads: usize, item_bytes: u64, budget: u64) -> usize {
    let fit = budget / item_bytes.max(1);
    let most = usize::try_from(fit.saturating_sub(2) / 2).unwrap_or(usize::MAX);
    if most < 2 {
        1
    } else {
        threads.min(most)
    }
}

/// Runs `produce` until it yields `None`, applies `work` to every item on
/// `threads` workers, and passes each result to `consume` in production order.
/// The first error (from any of the three) stops everything and is returned.
/// With `threads <= 1` everything runs on the calling thread.
pub fn ordered<I, O, E>(
    threads: usize,
    mut produce: impl FnMut() -> Result<Option<I>, E> + Send,
    work: impl Fn(I) -> Result<O, E> + Sync,
    mut consume: impl FnMut(O) -> Result<(), E>,
) -> Result<(), E>
where
    I: Send,
    O: Send,
    E: Send,
{
    if threads <= 1 {
        while let Some(item) = produce()? {
            consume(work(item)?)?;
        }
        return Ok(());
    }
    let stop = AtomicBool::new(false);
    // Permits bound the items between production and consumption, including
    // finished ones waiting for an earlier item that a paused worker holds.
    let window = threads * 2 + 2;
    let (permit_tx, permit_rx) = mpsc::sync_channel::<()>(window);
    for _ in 0..window {
        permit_tx
            .send(())
            .expect("the channel has room for every permit");
    }
    let (job_tx, job_rx) = mpsc::sync_channel::<(u64, I)>(threads);
    let (res_tx, res_rx) = mpsc::sync_channel::<(u64, Result<O, E>)>(threads * 2);
    // Each worker holds the job receiver, so once they have all stopped the
    // producer's send fails instead of blocking on a full queue forever.
    let job_rx = Arc::new(Mutex::new(job_rx));
    let (stop, work) = (&stop, &work);
    std::thread::scope(move |s| {
        {
            let res_tx = res_tx.clone();
            s.spawn(move || {
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    if permit_rx.recv().is_err() {
                        return;
                    }
                    match produce() {
                        Ok(Some(item)) => {
                            if job_tx.send((seq, item)).is_err() {
                                return;
                            }
                        }
                        Ok(None) => return,
                        Err(e) => {
                            let _ = res_tx.send((seq, Err(e)));
                            return;
                        }
                    }
                    seq += 1;
                }
            });
        }
        for _ in 0..threads {
            let res_tx = res_tx.clone();
            let job_rx = job_rx.clone();
            s.spawn(move || loop {
                // The lock is held only while taking one job.
                let job = job_rx.lock().map(|rx| rx.recv());
                let Ok(Ok((seq, item))) = job else { return };
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                if res_tx.send((seq, work(item))).is_err() {
                    return;
                }
            });
        }
        drop(res_tx);
        drop(job_rx);
        let mut next = 0u64;
        let mut pending = BTreeMap::new();
        let result = (|| {
            for (seq, r) in res_rx.iter() {
                pending.insert(seq, r);
                while let Some(r) = pending.remove(&next) {
                    consume(r?)?;
                    next += 1;
                    // The producer may be gone already; that is fine.
                    let _ = permit_tx.try_send(());
                }
            }
            Ok(())
        })();
        if result.is_err() {
            stop.store(true, Ordering::Relaxed);
        }
        // Dropping these unblocks the workers and the producer.
        drop(res_rx);
        drop(permit_tx);
        result
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_are_cut_so_the_window_fits_in_bytes() {
        for shift in 10..=26 {
            let chunk = 1u64 << shift;
            let t = threads_within(8, chunk, MEMORY);
            let in_flight = if t <= 1 {
                chunk
            } else {
                (t as u64 * 2 + 2) * chunk
            };
            assert!(in_flight <= MEMORY, "{chunk}: {t} threads hold {in_flight}");
        }
        assert_eq!(threads_within(8, 1 << 20, MEMORY), 8);
        assert_eq!(threads_within(8, 64 << 20, MEMORY), 1);
        assert_eq!(threads_within(8, u64::MAX, MEMORY), 1);
        assert_eq!(threads_within(3, 0, MEMORY), 3);
    }

    #[test]
    fn keeps_order_and_stops_on_error() {
        for threads in [1, 2, 4] {
            let mut n = 0;
            let mut out = Vec::new();
            ordered(
                threads,
                || {
                    n += 1;
                    Ok::<_, String>((n <= 100).then_some(n))
                },
                |x| Ok(x * 2),
                |x| {
                    out.push(x);
                    Ok(())
                },
            )
            .unwrap();
            assert_eq!(out, (1..=100).map(|x| x * 2).collect::<Vec<_>>());

            let mut n = 0;
            let err = ordered(
                threads,
                || {
                    n += 1;
                    Ok((n <= 1000).then_some(n))
                },
                |x| {
                    if x == 50 {
                        Err(format!("bad {x}"))
                    } else {
                        Ok(x)
                    }
                },
                |_| Ok(()),
            );
            assert_eq!(err, Err("bad 50".to_string()));

            let mut n = 0;
            let err = ordered(
                threads,
                || {
                    n += 1;
                    if n == 10 {
                        Err("read failed".to_string())
                    } else {
                        Ok(Some(n))
                    }
                },
                Ok,
                |_| Ok(()),
            );
            assert_eq!(err, Err("read failed".to_string()));
        }
    }
}

#[cfg(test)]
mod regression {
    use super::*;
    use std::time::Duration;

    /// A worker failing while the job queue is full used to leave the
    /// producer blocked forever on its send.
    #[test]
    fn an_early_failure_with_a_full_queue_does_not_hang() {
        for round in 0..200u64 {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                let mut n = 0u64;
                let r = ordered(
                    2,
                    || {
                        n += 1;
                        Ok::<_, u64>((n <= 10_000).then_some(n))
                    },
                    |x| {
                        if x == 1 + round % 3 {
                            Err(x)
                        } else {
                            if x % 7 == 0 {
                                std::thread::yield_now();
                            }
                            Ok(x)
                        }
                    },
                    |_| Ok(()),
                );
                let _ = tx.send(r);
            });
            let r = rx
                .recv_timeout(Duration::from_secs(20))
                .expect("ordered() hung");
            assert!(r.is_err());
        }
    }
}
