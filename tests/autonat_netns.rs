//! AutoNAT tests an address again after it failed, in network namespaces
//! made by the test: three daemons on a "public" segment (203.0.113.0/24),
//! and a fourth on it whose firewall refuses every new inbound connection
//! when it starts, so its first reachability tests fail and it finds itself
//! private. Then the firewall opens: the daemon must find itself public,
//! with its address confirmed, within a bound, and offer relay service.
//! libp2p-autonat 0.16's client alone never tests a failed address again
//! (the daemon stayed private).
//!
//! The other way round (a public daemon whose firewall closes goes private,
//! and stops offering relay service) takes over 3 minutes, so that test is
//! ignored by default: `cargo test --test autonat_netns -- --ignored`.
//!
//! Runs as root with iptables (as in CI); reported as skipped otherwise.

mod common;

use std::time::Instant;

use common::nat::*;
use common::netns::Netns;
use common::sub;

/// How long the daemon may take to find itself public once reachable: the
/// first back-off (5 s) and the least gap between two rounds of tests
/// (10 s), a test (10 s at most each side), with room for two slow cores.
const PUBLIC_WITHIN: u64 = 60;
/// How long a public daemon may take to find itself private once
/// unreachable: the re-check of a confirmed address (180 s), then two
/// failed tests 5 s and 10 s apart, with the same room.
const PRIVATE_WITHIN: u64 = 260;

/// A fourth daemon on the public segment, first unreachable, then public.
/// Field order is drop order: processes before their namespaces.
struct Late {
    late: common::daemon::Daemon,
    /// Its namespace.
    ns: String,
    _public: Public,
    _net: Netns,
    _tmp: tempfile::TempDir,
}

/// Builds the segment (namespace names end with `tag`), starts the fourth
/// daemon behind its closed firewall, waits for it to find itself private,
/// opens the firewall and asserts it becomes public within
/// [`PUBLIC_WITHIN`], offering relay service.
fn late_public(tag: &str) -> Late {
    let tmp = tempfile::tempdir().unwrap();
    let mut net = Netns::with_prefix("ra");
    let public = Public::build(&mut net, &tmp, tag, "");
    let ns = public.host(&mut net, tag, 4);
    refuse_inbound(&ns, true);
    // TCP only, so the daemon has one candidate address (every peer sees
    // its port 4001, which its dials reuse): once it is private, that one
    // failed, and an untested one cannot make it public later. libp2p's
    // relay server says (at debug) when it starts or stops offering.
    let late = start_logging(
        &sub(&tmp, "late"),
        &ns,
        &[
            "--listen",
            "/ip4/0.0.0.0/tcp/4001",
            "--bootstrap",
            &public.addrs[0],
        ],
        "",
        ",libp2p_relay=debug",
    );
    // Private is the verdict of a failed test with no address confirmed.
    wait_status(&late, 60, "the first reachability tests failed", |st| {
        st["reachability"] == "private"
    });

    refuse_inbound(&ns, false);
    let opened = Instant::now();
    wait_status(
        &late,
        PUBLIC_WITHIN,
        "the daemon found itself public once reachable",
        |st| {
            st["reachability"] == "public"
                && st["external_addrs"].as_array().is_some_and(|a| {
                    a.iter().any(|a| {
                        a.as_str()
                            .is_some_and(|a| a.starts_with("/ip4/203.0.113.4/"))
                    })
                })
        },
    );
    eprintln!(
        "public {:.1} s after the firewall opened",
        opened.elapsed().as_secs_f64()
    );
    // Offered as soon as the address was confirmed: the status above was
    // read after that, and the relay server acts on the same swarm event.
    assert!(
        log_of(&late.dir).contains("advertising protocol because we are now externally reachable"),
        "public but offering no relay service; log tail:\n{}",
        log_tail(&late.dir)
    );
    Late {
        late,
        ns,
        _public: public,
        _net: net,
        _tmp: tmp,
    }
}

#[test]
fn a_daemon_first_found_unreachable_becomes_public_once_reachable() {
    if skip() {
        return;
    }
    late_public("r");
}

#[test]
#[ignore = "takes over 3 minutes: run with --ignored"]
fn a_public_daemon_that_becomes_unreachable_goes_private() {
    if skip() {
        return;
    }
    let w = late_public("x");
    refuse_inbound(&w.ns, true);
    let closed = Instant::now();
    wait_status(
        &w.late,
        PRIVATE_WITHIN,
        "the daemon found itself private once unreachable",
        |st| {
            st["reachability"] == "private"
                && st["external_addrs"]
                    .as_array()
                    .is_some_and(|a| a.is_empty())
        },
    );
    eprintln!(
        "private {:.1} s after the firewall closed",
        closed.elapsed().as_secs_f64()
    );
    assert!(
        log_of(&w.late.dir).contains("disabling protocol advertisement"),
        "private but still offering relay service; log tail:\n{}",
        log_tail(&w.late.dir)
    );
}
