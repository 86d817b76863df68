//! An ordered, bounded, multi-core pipeline (pure; std threads only).
//!
//! Sealing and opening are CPU-bound per chunk (BLAKE3 and ChaCha20) and
//! independent across chunks, but chunks must be consumed in stream order.
//! [`ordered`] reads items on one thread, transforms them on a small pool and
//! hands the results back in order on the caller's thread, with a fixed number
//! of items in flight, so memory stays at a few chunks whatever the input size.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex};

/// Number of worker threads to use when the caller does not say: one per
/// available core, at most 8.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(8)
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
    let (job_tx, job_rx) = mpsc::sync_channel::<(u64, I)>(threads);
    let (res_tx, res_rx) = mpsc::sync_channel::<(u64, Result<O, E>)>(threads * 2);
    let job_rx = Mutex::new(job_rx);
    let (stop, work, job_rx) = (&stop, &work, &job_rx);
    std::thread::scope(move |s| {
        {
            let res_tx = res_tx.clone();
            s.spawn(move || {
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) {
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
        let mut next = 0u64;
        let mut pending = BTreeMap::new();
        let result = (|| {
            for (seq, r) in res_rx.iter() {
                pending.insert(seq, r);
                while let Some(r) = pending.remove(&next) {
                    consume(r?)?;
                    next += 1;
                }
            }
            Ok(())
        })();
        if result.is_err() {
            stop.store(true, Ordering::Relaxed);
        }
        // Dropping the receiver unblocks workers and the producer.
        drop(res_rx);
        result
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
