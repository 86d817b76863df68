//! Wire frames and messages (src/wire.rs through src/net/frame.rs): a peer's
//! whole stream of frames, read as requests (what a server sees) or answers
//! (what a fetcher sees).
//!
//! Invariants: reading never panics; a frame over the limit is refused from
//! its prefix; every accepted message survives encode → decode unchanged;
//! memory per frame stays within the frame limit.
#![no_main]

use futures::executor::block_on;
use futures::io::Cursor;
use libfuzzer_sys::fuzz_target;
use peerdrop::net::frame::read_msg;
use peerdrop::wire::{self, Request, Response, MAX_FRAME};
use peerdrop_fuzz::{assert_within, measure, Counting};
use serde::{de::DeserializeOwned, Serialize};

#[global_allocator]
static ALLOC: Counting = Counting;

/// Reads frames until the stream ends or one is refused, as a peer would.
fn stream<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(data: &[u8]) {
    let mut r = Cursor::new(data);
    for _ in 0..64 {
        let start = r.position() as usize;
        let (msg, cost) = measure(|| block_on(read_msg::<_, T>(&mut r)));
        // The body buffer, the decoded message and the error text.
        assert_within(cost, 2 * MAX_FRAME + 4096, "reading a frame");
        let msg = match msg {
            Ok(Some(m)) => m,
            Ok(None) => return,
            Err(_) => {
                let prefix: Option<[u8; 4]> =
                    data.get(start..start + 4).map(|p| p.try_into().unwrap());
                if let Some(p) = prefix {
                    let n = u32::from_be_bytes(p) as usize;
                    assert_eq!(wire::body_len(p).is_err(), n > MAX_FRAME);
                }
                return;
            }
        };
        let frame = wire::encode(&msg);
        assert!(frame.len() - 4 <= MAX_FRAME);
        let back: T = wire::decode(&frame[4..]).expect("an encoded message decodes");
        assert_eq!(back, msg);
    }
}

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((0, rest)) => stream::<Request>(rest),
        Some((_, rest)) => stream::<Response>(rest),
        None => {}
    }
    // A bare body, as `wire::decode` sees it.
    let _ = wire::decode::<Request>(data);
    let _ = wire::decode::<Response>(data);
});
