//! Two homes, each behind its own NAT router, and three daemons on a
//! "public" segment (203.0.113.0/24), all in network namespaces made by the
//! test. Nobody names a relay: each home daemon knows one public daemon as
//! its bootstrap peer, the public daemons find by AutoNAT that they are
//! reachable and offer relaying, the home daemons find they are not and
//! reserve circuits on them (AutoRelay). A share made in home A is fetched
//! in home B with the link alone.
//!
//! - cone NATs: the connection is hole-punched, and the sharer served every
//!   data stream over a direct connection (read from its log, where each
//!   inbound data stream is recorded with the kind of its connection);
//! - symmetric NATs (ports randomised): punching cannot work, the transfer
//!   completes through a relay, and the fetcher's status says relayed;
//!
//! Runs as root with iptables (as in CI); reported as skipped otherwise.

mod common;

use std::sync::Mutex;

use common::nat::*;
use common::netns::Nat;

/// The tests here run one at a time: each runs five daemons, and two cores
/// shared with the rest of the suite are slow enough already.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[test]
fn cone_nats_are_hole_punched_and_the_transfer_runs_direct() {
    if skip() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let w = World::build("c", Nat::Cone, "");
    let conn = w.transfer(4 << 20);
    assert_eq!(
        conn["relayed"],
        false,
        "the connection to the sharer is still relayed: {conn}\nfetcher log:\n{}",
        log_tail(&w.b.dir)
    );
    let (direct, relayed) = served_streams(&w.a.dir);
    assert!(direct > 0, "the sharer served no data stream directly");
    assert_eq!(
        relayed, 0,
        "the sharer served {relayed} data stream(s) through a relay"
    );
}

#[test]
fn symmetric_nats_complete_relayed_and_status_says_so() {
    if skip() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let w = World::build("s", Nat::Symmetric, "");
    let conn = w.transfer(2 << 20);
    assert_eq!(
        conn["relayed"],
        true,
        "a direct connection through two port-randomising NATs: {conn}\nfetcher log:\n{}",
        log_tail(&w.b.dir)
    );
    let (direct, relayed) = served_streams(&w.a.dir);
    assert!(
        relayed > 0,
        "the sharer served no data stream through a relay"
    );
    assert_eq!(
        direct, 0,
        "the sharer served {direct} data stream(s) directly"
    );
}
