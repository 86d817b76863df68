//! How a one-shot node makes itself reachable: where it listens, and (for
//! `send --bootstrap`) waiting for the relay circuits AutoRelay reserves
//! before the link is printed, since the link carries the circuit addresses.

use std::time::{Duration, Instant};

use libp2p::Multiaddr;
use peerdrop::net::node::Client;
use peerdrop::net::status::{ReachStatus, Reachability, RelayState};

/// Circuits a one-shot `send` wants before it prints its link (as many as
/// a daemon holds).
pub const WANT: usize = 2;
/// The longest it waits for them.
const WAIT: Duration = Duration::from_secs(30);
/// How often it says how far it got.
const PROGRESS: Duration = Duration::from_secs(5);
/// How often it looks.
const POLL: Duration = Duration::from_millis(200);

/// Every interface, ephemeral TCP and QUIC ports. A node listening there
/// also dials from those ports (libp2p reuses a listening TCP port for
/// outbound connections, and QUIC dials from its listening socket), so the
/// address a peer observes for it is one a hole punch (DCUtR) can reach.
pub fn ephemeral_listen() -> Vec<Multiaddr> {
    ["/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1"]
        .iter()
        .map(|a| a.parse().expect("valid default address"))
        .collect()
}

/// Listens on [`ephemeral_listen`]; a failure only costs hole punching, so
/// it is reported and the command goes on.
pub async fn listen_ephemeral(client: &Client) {
    for a in ephemeral_listen() {
        if let Err(e) = client.listen(a).await {
            eprintln!("peerdrop: {e}; peers behind NAT may not reach this machine directly");
        }
    }
}

/// Relays whose circuit is reserved and has an address to put in a link.
fn reserved(st: &ReachStatus) -> usize {
    st.relays
        .iter()
        .filter(|r| r.state == RelayState::Reserved && !r.circuit_addrs.is_empty())
        .count()
}

/// How waiting for relays ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// AutoNAT found the node reachable from outside: no relay needed.
    Public,
    /// This many circuits are reserved (between 0 and [`WANT`]).
    Reserved(usize),
}

/// Waits until AutoRelay holds [`WANT`] circuits, the node is found
/// publicly reachable, or [`WAIT`] passes, saying on stderr every
/// [`PROGRESS`] how many are reserved; then says what the link will carry.
pub async fn wait_for_relays(client: &Client) -> anyhow::Result<Outcome> {
    let start = Instant::now();
    let mut next_say = start + PROGRESS;
    loop {
        let st = client.reach_status().await?;
        let n = reserved(&st);
        if st.reachability == Reachability::Public {
            return Ok(Outcome::Public);
        }
        if n >= WANT {
            return Ok(Outcome::Reserved(n));
        }
        let now = Instant::now();
        if now >= start + WAIT {
            if n == 0 {
                eprintln!(
                    "peerdrop: no relay could be reserved within {}s: none of the peers found through --bootstrap offers relaying, or all refused. The link carries only this machine's own addresses, so it works where they can be dialled (the same LAN, or a public address); add --relay MULTIADDR/p2p/RELAY_ID to name a relay",
                    WAIT.as_secs()
                );
            } else {
                eprintln!(
                    "peerdrop: only {n} of {WANT} relays reserved; the link carries what there is"
                );
            }
            return Ok(Outcome::Reserved(n));
        }
        if now >= next_say {
            eprintln!("peerdrop: waiting for relays: {n} of {WANT} reserved…");
            next_say += PROGRESS;
        }
        tokio::time::sleep(POLL).await;
    }
}
