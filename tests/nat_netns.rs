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
//! - the same with relays that close a circuit after 2 MiB: a share four
//!   times larger still completes, through one new circuit after another;
//! - cone NATs whose routers forward no TCP: the punch works over QUIC
//!   alone, and the sharer served every data stream over a direct QUIC
//!   connection.
//!
//! Runs as root with iptables (as in CI); reported as skipped otherwise.

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

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
    assert_punched(&w, &conn);
}

/// The fetcher's connection to the sharer (`conn`, its status entry) ended
/// direct, and the sharer served data streams directly and none through a
/// relay.
fn assert_punched(w: &World, conn: &serde_json::Value) {
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

#[test]
fn a_relayed_transfer_larger_than_one_circuit_completes() {
    if skip() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // Counted both ways, handshakes and framing included: with 1 MiB
    // chunks one circuit carries one chunk, perhaps two, then the relay
    // closes it.
    const LIMIT: usize = 2 << 20;
    let w = World::build(
        "l",
        Nat::Symmetric,
        &format!("relay_max_circuit_bytes = {LIMIT}\n"),
    );
    let started = Instant::now();
    let conn = w.transfer(4 * LIMIT);
    let took = started.elapsed();
    assert_eq!(
        conn["relayed"], true,
        "a direct connection through two port-randomising NATs: {conn}"
    );
    let a_id = w.a.json(&["status"])["peer_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let log = log_of(&w.b.dir);
    let circuits = log
        .lines()
        .filter(|l| l.contains("connected through a relay") && l.contains(&a_id))
        .count();
    assert!(
        circuits >= 4,
        "{} MiB went through {circuits} circuit(s) of at most {} MiB\nfetcher log:\n{}",
        (4 * LIMIT) >> 20,
        LIMIT >> 20,
        log_tail(&w.b.dir)
    );
    // The circuits ended by the relay's limit are not the sharer's fault.
    assert!(
        !log.contains("dropping source"),
        "the fetcher dropped a source:\n{}",
        log_tail(&w.b.dir)
    );
    eprintln!(
        "{} MiB through {circuits} circuits in {took:?}",
        (4 * LIMIT) >> 20
    );
    assert!(took < Duration::from_secs(60), "the transfer took {took:?}");
}

#[test]
fn cone_nats_are_hole_punched_over_quic_alone() {
    if skip() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let w = World::build_with("q", Nat::Cone, "", Transports::QuicOnly);
    let conn = w.transfer(2 << 20);
    assert_punched(&w, &conn);
    let log = log_of(&w.a.dir);
    let direct: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("inbound data stream") && l.contains("relayed=false"))
        .collect();
    assert!(
        direct.iter().all(|l| l.contains("/quic-v1")),
        "a data stream came on a direct connection that is not QUIC:\n{}",
        direct.join("\n")
    );
}
