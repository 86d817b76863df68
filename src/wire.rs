//! The peer protocol's messages and framing (pure): the one place bincode is
//! used.
//!
//! # Protocol `/peerdrop/xfer/1`
//!
//! Goals: move sealed chunks between peers as fast as the wire or the CPU
//! allows, with every size bounded before allocation and nothing trusted.
//! Non-goals: authentication (the transport's Noise handshake authenticates
//! peer ids) and confidentiality of content (chunks are already encrypted; a
//! request reveals only ids).
//!
//! A fetcher opens one long-lived stream per (share, provider) and writes
//! requests, several ahead ("pipelining"); the provider answers strictly in
//! request order. Every message is a *frame*: a 4-byte big-endian length and
//! a bincode body (standard configuration, decoded with a size limit, trailing
//! bytes rejected). The answers [`Response::Manifest`] and [`Response::Chunk`]
//! are followed by exactly `len` raw bytes, never inside bincode, so a 1 MiB
//! chunk is read straight into one buffer whose size the fetcher checked
//! against the manifest first.
//!
//! | request | answer |
//! |---|---|
//! | `Manifest { share }` | `Manifest { len }` + bytes, or `NotFound` |
//! | `Have { share }` | `Have(All)`, `Have(Bitmap)`, or `NotFound` |
//! | `Chunk { share, chunk }` | `Chunk { len }` + bytes, `NotFound`, or `Stale` |
//! | `Done { share }` | `Ack` (counts for nothing: it proves nothing) |
//! | `DoneChallenge { share }` | `Challenge { challenge }`, or `NotFound` |
//! | `ProvenDone { share, proof }` | `Ack` if the proof verifies, else `NotFound` |
//! | `Holder { locator, nonce }` | `Holder { proof }`, or `NotFound` |
//! | `Peers { share, listen }` | `Peers(list)`, or `NotFound` |
//!
//! Any request may also be answered `Busy { retry_ms }`, and a stream the
//! provider will not serve gets `Busy` as its only message.
//!
//! Variants are only ever appended; an unknown one is a protocol error that
//! closes the stream.

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::chunk::ChunkId;
use crate::manifest::ManifestId;

/// Protocol name, negotiated per stream.
pub const PROTOCOL: &str = "/peerdrop/xfer/1";
/// Largest frame body. Large enough for a [`Have::Bitmap`] of the largest
/// manifest (2^19 chunks = 64 KiB of bits) plus slack.
pub const MAX_FRAME: usize = 80 * 1024;

const CONFIG: bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_FRAME>,
> = bincode::config::standard().with_limit::<MAX_FRAME>();

/// What a fetcher asks a provider. Every request names its share by
/// manifest id, so a stream keeps no state between requests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// The manifest of a share.
    Manifest {
        /// The share's manifest id.
        #[serde(with = "id_bytes")]
        share: ManifestId,
    },
    /// Which chunks of a share the provider holds.
    Have {
        /// The share's manifest id.
        #[serde(with = "id_bytes")]
        share: ManifestId,
    },
    /// One sealed chunk, by id, within a share.
    Chunk {
        /// The share's manifest id.
        #[serde(with = "id_bytes")]
        share: ManifestId,
        /// The chunk's id: BLAKE3 of its sealed bytes.
        #[serde(with = "id_bytes")]
        chunk: ChunkId,
    },
    /// The fetcher says it holds the whole share, with no proof. Answered
    /// `Ack` and otherwise ignored: anyone who knows the manifest id could
    /// send it (audit F-03). Kept so that older fetchers get their answer.
    Done {
        /// The share's manifest id.
        #[serde(with = "id_bytes")]
        share: ManifestId,
    },
    /// Asks for the challenge to answer in [`Request::ProvenDone`]: the
    /// provider chooses it (per run of the provider, share and asker).
    DoneChallenge {
        /// The share's manifest id.
        #[serde(with = "id_bytes")]
        share: ManifestId,
    },
    /// The fetcher holds the whole share, and proves it holds the read key
    /// (lets a one-shot sender stop): `proof` is
    /// [`crate::crypto::DoneKey::prove`] of the manifest id, the challenge,
    /// the provider's and the fetcher's peer ids.
    ProvenDone {
        /// The share's manifest id.
        #[serde(with = "id_bytes")]
        share: ManifestId,
        /// The MAC.
        proof: [u8; 32],
    },
    /// Asks a peer that was not named in the link (found on the LAN or in
    /// the DHT) whether it holds the share with this locator, before the
    /// manifest id is named to it: the answer proves it knows the id
    /// ([`crate::crypto::holder_proof`] over `nonce` and both peer ids).
    Holder {
        /// The share's DHT locator ([`ManifestId::locator`]).
        locator: [u8; 32],
        /// Chosen at random by the asker, for this question only.
        nonce: [u8; 32],
    },
    /// Peer exchange: which other peers the provider knows for this share
    /// (docs/PROTOCOL.md, "Peer exchange"). The asker also says where it
    /// can be reached itself, if it serves the share, so that the provider
    /// can tell others; at most [`MAX_ANNOUNCED`] addresses.
    Peers {
        /// The share's manifest id.
        #[serde(with = "id_bytes")]
        share: ManifestId,
        /// The asker's listen addresses (multiaddr bytes); empty if it does
        /// not serve the share. More than [`MAX_ANNOUNCED`] do not decode.
        #[serde(deserialize_with = "capped::deserialize::<_, _, MAX_ANNOUNCED>")]
        listen: Vec<serde_bytes::ByteBuf>,
    },
}

/// Most peers in one [`Response::Peers`].
pub const MAX_PEX_PEERS: usize = 16;
/// Most addresses per peer in a [`Response::Peers`].
pub const MAX_PEX_ADDRS: usize = 4;
/// Most addresses an asker announces in [`Request::Peers`].
pub const MAX_ANNOUNCED: usize = 8;
/// Longest peer id in a peer list, in bytes (an Ed25519 peer id is 38).
pub const MAX_PEER_ID_LEN: usize = 64;
/// Longest address in a peer list or an announcement, in bytes (an IPv6
/// QUIC address is 25).
pub const MAX_ADDR_LEN: usize = 96;

/// One entry of a [`Response::Peers`]: a peer id and where it said it can
/// be reached, in their binary forms (this module knows no libp2p type).
/// Only candidates: the fetcher dials them, and Noise authenticates the id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PexPeer {
    /// The peer id's bytes.
    #[serde(with = "serde_bytes")]
    pub peer: Vec<u8>,
    /// Its addresses' bytes, at most [`MAX_PEX_ADDRS`] (more do not decode).
    #[serde(deserialize_with = "capped::deserialize::<_, _, MAX_PEX_ADDRS>")]
    pub addrs: Vec<serde_bytes::ByteBuf>,
}

/// Whether a peer list is within the documented bounds: at most
/// [`MAX_PEX_PEERS`] entries, each with at most [`MAX_PEX_ADDRS`]
/// addresses, no field over its length limit. A provider that sends more
/// breaks the protocol.
pub fn check_peers(list: &[PexPeer]) -> Result<(), WireError> {
    if list.len() > MAX_PEX_PEERS {
        return Err(WireError::Bounds(format!(
            "{} peers in a peer list, over {MAX_PEX_PEERS}",
            list.len()
        )));
    }
    for p in list {
        if p.peer.len() > MAX_PEER_ID_LEN {
            return Err(WireError::Bounds(format!(
                "a {}-byte peer id in a peer list",
                p.peer.len()
            )));
        }
        check_addrs(&p.addrs, MAX_PEX_ADDRS)?;
    }
    Ok(())
}

/// Whether the addresses an asker announces are within the bounds.
pub fn check_announced(listen: &[serde_bytes::ByteBuf]) -> Result<(), WireError> {
    check_addrs(listen, MAX_ANNOUNCED)
}

fn check_addrs(addrs: &[serde_bytes::ByteBuf], max: usize) -> Result<(), WireError> {
    if addrs.len() > max {
        return Err(WireError::Bounds(format!(
            "{} addresses for one peer, over {max}",
            addrs.len()
        )));
    }
    match addrs.iter().find(|a| a.len() > MAX_ADDR_LEN) {
        Some(a) => Err(WireError::Bounds(format!(
            "a {}-byte address, over {MAX_ADDR_LEN}",
            a.len()
        ))),
        None => Ok(()),
    }
}

/// Lists decoded with a cap. serde's `Vec` reserves room for the length a
/// message claims (up to 1 MiB) before one element arrives, so a 9-byte
/// `Peers` answer claiming 10,000 entries cost 480 KB (found by the wire
/// fuzz target, fuzz/corpus/wire/crash-pex-claimed-length), and a frame of
/// 80 KiB of minimal entries decoded to about 2 MiB. These lists refuse a
/// claimed or actual length over `MAX` as malformed and reserve only up to
/// `MAX`. The bytes on the wire are unchanged; `check_peers` and
/// `check_announced` still check the lengths inside the entries.
mod capped {
    use std::fmt;
    use std::marker::PhantomData;

    use serde::de::{Deserialize, Deserializer, Error, SeqAccess, Visitor};

    pub fn deserialize<'de, D, T, const MAX: usize>(d: D) -> Result<Vec<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de>,
    {
        struct Capped<T, const MAX: usize>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>, const MAX: usize> Visitor<'de> for Capped<T, MAX> {
            type Value = Vec<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a list of at most {MAX} entries")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
                let claimed = seq.size_hint().unwrap_or(0);
                if claimed > MAX {
                    return Err(A::Error::invalid_length(claimed, &self));
                }
                let mut out = Vec::with_capacity(claimed);
                while let Some(x) = seq.next_element()? {
                    if out.len() == MAX {
                        return Err(A::Error::invalid_length(MAX + 1, &self));
                    }
                    out.push(x);
                }
                Ok(out)
            }
        }

        d.deserialize_seq(Capped::<T, MAX>(PhantomData))
    }
}

/// Ids go on the wire as 32 raw bytes, exactly as a `[u8; 32]` is encoded
/// (a tuple of 32 bytes, no length): typing them changed no byte. The id
/// types themselves stay free of serde; their encoding is this module's
/// business.
mod id_bytes {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::chunk::ChunkId;
    use crate::manifest::ManifestId;

    /// A 32-byte id.
    pub(super) trait Id: Sized {
        fn bytes(&self) -> &[u8; 32];
        fn from_bytes(bytes: [u8; 32]) -> Self;
    }

    impl Id for ManifestId {
        fn bytes(&self) -> &[u8; 32] {
            &self.0
        }
        fn from_bytes(bytes: [u8; 32]) -> Self {
            ManifestId(bytes)
        }
    }

    impl Id for ChunkId {
        fn bytes(&self) -> &[u8; 32] {
            &self.0
        }
        fn from_bytes(bytes: [u8; 32]) -> Self {
            ChunkId(bytes)
        }
    }

    pub(super) fn serialize<S: Serializer, T: Id>(id: &T, s: S) -> Result<S::Ok, S::Error> {
        id.bytes().serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>, T: Id>(d: D) -> Result<T, D::Error> {
        <[u8; 32]>::deserialize(d).map(T::from_bytes)
    }
}

/// Which chunks a provider holds, in manifest order (metadata, then content).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Have {
    /// Every chunk.
    All,
    /// Bit `i` (least significant bit first within each byte) for chunk `i`.
    Bitmap(#[serde(with = "serde_bytes")] Vec<u8>),
}

impl Have {
    /// Whether chunk `i` (in manifest order) is held.
    pub fn has(&self, i: usize) -> bool {
        match self {
            Have::All => true,
            Have::Bitmap(b) => b.get(i / 8).is_some_and(|byte| byte & (1 << (i % 8)) != 0),
        }
    }
}

/// What a provider answers, in request order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The manifest follows: `len` raw bytes.
    Manifest {
        /// Bytes that follow.
        len: u32,
    },
    /// The chunk follows: `len` raw bytes.
    Chunk {
        /// Bytes that follow.
        len: u32,
    },
    /// Answer to [`Request::Have`].
    Have(Have),
    /// This provider does not hold it.
    NotFound,
    /// The provider's source files changed since the share was made, so it
    /// refuses to serve this chunk (it never sends other bytes under an id).
    Stale,
    /// Answer to [`Request::Done`].
    Ack,
    /// The provider is serving as much as it will right now: ask again in
    /// `retry_ms` milliseconds (or elsewhere). Answers a request that waited
    /// too long for the provider's memory, or, as the only message on a
    /// stream, refuses the stream itself (over a limit, or banned). Not a
    /// failure of the provider.
    Busy {
        /// Milliseconds to wait before asking again.
        retry_ms: u32,
    },
    /// Answer to [`Request::DoneChallenge`].
    Challenge {
        /// What the fetcher's `ProvenDone` proof must cover.
        challenge: [u8; 32],
    },
    /// Answer to [`Request::Holder`].
    Holder {
        /// [`crate::crypto::holder_proof`] of the share, the asker's nonce,
        /// the asker's and this provider's peer ids.
        proof: [u8; 32],
    },
    /// Answer to [`Request::Peers`]: other peers that fetched or served
    /// the share recently, within [`check_peers`]'s bounds.
    Peers(#[serde(deserialize_with = "capped::deserialize::<_, _, MAX_PEX_PEERS>")] Vec<PexPeer>),
}

/// A frame that cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Length prefix over [`MAX_FRAME`].
    #[error("the peer sent a {0}-byte frame, over the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    /// Not a valid message.
    #[error("the peer sent an invalid message: {0}")]
    Malformed(String),
    /// Valid message followed by extra bytes.
    #[error("the peer sent a message with trailing bytes")]
    Trailing,
    /// A valid message over one of its documented bounds.
    #[error("the peer sent a message over its bounds: {0}")]
    Bounds(String),
}

/// Encodes `msg` as a whole frame: length prefix and body.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    let body = bincode::serde::encode_to_vec(msg, CONFIG)
        .expect("our messages are far below the frame limit");
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    frame
}

/// The body length announced by a frame's prefix, refused over the limit
/// before anything is allocated.
pub fn body_len(prefix: [u8; 4]) -> Result<usize, WireError> {
    let n = u32::from_be_bytes(prefix) as usize;
    if n > MAX_FRAME {
        return Err(WireError::TooLarge(n));
    }
    Ok(n)
}

/// Decodes a frame body (with the size limit; trailing bytes refused).
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, WireError> {
    if body.len() > MAX_FRAME {
        return Err(WireError::TooLarge(body.len()));
    }
    let (msg, used) = bincode::serde::decode_from_slice(body, CONFIG)
        .map_err(|e| WireError::Malformed(e.to_string()))?;
    if used != body.len() {
        return Err(WireError::Trailing);
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHARE: ManifestId = ManifestId([1; 32]);
    const CHUNK: ChunkId = ChunkId([2; 32]);

    /// The bytes on the wire, spelled out (docs/PROTOCOL.md sections 3-4): an
    /// id is 32 raw bytes, with no length prefix, whatever its Rust type.
    #[test]
    fn requests_encode_to_the_documented_bytes() {
        let (share, chunk) = (SHARE, CHUNK);
        let frame = |variant: u8, ids: &[[u8; 32]]| {
            let mut f = vec![0, 0, 0, 1 + 32 * ids.len() as u8, variant];
            ids.iter().for_each(|id| f.extend_from_slice(id));
            f
        };
        let cases = [
            (Request::Manifest { share }, frame(0, &[[1; 32]])),
            (Request::Have { share }, frame(1, &[[1; 32]])),
            (
                Request::Chunk { share, chunk },
                frame(2, &[[1; 32], [2; 32]]),
            ),
            (Request::Done { share }, frame(3, &[[1; 32]])),
        ];
        for (req, bytes) in cases {
            assert_eq!(encode(&req), bytes, "{req:?}");
            assert_eq!(decode::<Request>(&bytes[4..]).unwrap(), req);
        }
    }

    /// The documented bytes of the answers without a payload (PROTOCOL.md
    /// §4.3).
    #[test]
    fn answers_encode_to_the_documented_bytes() {
        let cases = [
            (Response::NotFound, vec![0, 0, 0, 1, 3]),
            (Response::Stale, vec![0, 0, 0, 1, 4]),
            (Response::Ack, vec![0, 0, 0, 1, 5]),
            (
                Response::Busy { retry_ms: 10_000 },
                vec![0, 0, 0, 4, 6, 0xfb, 0x10, 0x27],
            ),
        ];
        for (answer, bytes) in cases {
            assert_eq!(encode(&answer), bytes, "{answer:?}");
            assert_eq!(decode::<Response>(&bytes[4..]).unwrap(), answer);
        }
    }

    /// The proof messages (PROTOCOL.md §4.4): 32-byte values are raw bytes,
    /// like ids. Their variant numbers, in one place.
    #[test]
    fn proof_messages_encode_to_the_documented_bytes() {
        const DONE_CHALLENGE: u8 = 4;
        const PROVEN_DONE: u8 = 5;
        const HOLDER: u8 = 6;
        const CHALLENGE_ANSWER: u8 = 7;
        const HOLDER_ANSWER: u8 = 8;
        let frame = |variant: u8, parts: &[[u8; 32]]| {
            let mut f = vec![0, 0, 0, 1 + 32 * parts.len() as u8, variant];
            parts.iter().for_each(|p| f.extend_from_slice(p));
            f
        };
        let requests = [
            (
                Request::DoneChallenge { share: SHARE },
                frame(DONE_CHALLENGE, &[[1; 32]]),
            ),
            (
                Request::ProvenDone {
                    share: SHARE,
                    proof: [5; 32],
                },
                frame(PROVEN_DONE, &[[1; 32], [5; 32]]),
            ),
            (
                Request::Holder {
                    locator: [6; 32],
                    nonce: [7; 32],
                },
                frame(HOLDER, &[[6; 32], [7; 32]]),
            ),
        ];
        for (req, bytes) in requests {
            assert_eq!(encode(&req), bytes, "{req:?}");
            assert_eq!(decode::<Request>(&bytes[4..]).unwrap(), req);
        }
        let answers = [
            (
                Response::Challenge { challenge: [8; 32] },
                frame(CHALLENGE_ANSWER, &[[8; 32]]),
            ),
            (
                Response::Holder { proof: [9; 32] },
                frame(HOLDER_ANSWER, &[[9; 32]]),
            ),
        ];
        for (answer, bytes) in answers {
            assert_eq!(encode(&answer), bytes, "{answer:?}");
            assert_eq!(decode::<Response>(&bytes[4..]).unwrap(), answer);
        }
        // A proof one byte short is refused, not padded.
        let mut short = frame(PROVEN_DONE, &[[1; 32], [5; 32]]);
        short.pop();
        assert!(decode::<Request>(&short[4..]).is_err());
    }

    /// Peer exchange (PROTOCOL.md §4): request 7, answer 9; a list over
    /// its bounds is refused by `check_peers`, and a list claiming more
    /// entries than the frame holds is refused by the decoder before any
    /// allocation.
    #[test]
    fn peer_exchange_encodes_and_is_bounded() {
        use serde_bytes::ByteBuf;
        let req = Request::Peers {
            share: SHARE,
            listen: vec![ByteBuf::from(vec![4, 127, 0, 0, 1])],
        };
        let f = encode(&req);
        let mut want = vec![0, 0, 0, 40, 7];
        want.extend_from_slice(&[1; 32]);
        want.extend_from_slice(&[1, 5, 4, 127, 0, 0, 1]);
        assert_eq!(f, want);
        assert_eq!(decode::<Request>(&f[4..]).unwrap(), req);

        let entry = |addrs: usize| PexPeer {
            peer: vec![0x11; 38],
            addrs: (0..addrs)
                .map(|i| ByteBuf::from(vec![i as u8; 25]))
                .collect(),
        };
        let full: Vec<PexPeer> = (0..MAX_PEX_PEERS).map(|_| entry(MAX_PEX_ADDRS)).collect();
        assert_eq!(check_peers(&full), Ok(()));
        let answer = Response::Peers(full.clone());
        let f = encode(&answer);
        assert_eq!(f[4], 9, "variant 9");
        // The largest list allowed fits a frame many times over.
        assert!(f.len() < MAX_FRAME / 4, "{} bytes", f.len());
        assert_eq!(decode::<Response>(&f[4..]).unwrap(), answer);

        let mut over = full.clone();
        over.push(entry(1));
        assert!(matches!(check_peers(&over), Err(WireError::Bounds(_))));
        assert!(matches!(
            check_peers(&[entry(MAX_PEX_ADDRS + 1)]),
            Err(WireError::Bounds(_))
        ));
        let long_id = PexPeer {
            peer: vec![0; MAX_PEER_ID_LEN + 1],
            addrs: vec![],
        };
        assert!(matches!(check_peers(&[long_id]), Err(WireError::Bounds(_))));
        let long_addr = vec![ByteBuf::from(vec![0; MAX_ADDR_LEN + 1])];
        assert!(matches!(
            check_announced(&long_addr),
            Err(WireError::Bounds(_))
        ));
        let many: Vec<ByteBuf> = (0..=MAX_ANNOUNCED)
            .map(|_| ByteBuf::from(vec![4]))
            .collect();
        assert!(matches!(check_announced(&many), Err(WireError::Bounds(_))));
        assert_eq!(check_announced(&many[1..]), Ok(()));

        // Over the bounds, a list does not even decode (capped), so no
        // oversized list is ever built.
        assert!(matches!(
            decode::<Response>(&encode(&Response::Peers(over))[4..]),
            Err(WireError::Malformed(_))
        ));
        let too_many_addrs = Response::Peers(vec![entry(MAX_PEX_ADDRS + 1)]);
        assert!(decode::<Response>(&encode(&too_many_addrs)[4..]).is_err());
        let announce_many = Request::Peers {
            share: SHARE,
            listen: many.clone(),
        };
        assert!(decode::<Request>(&encode(&announce_many)[4..]).is_err());
        let announce_max = Request::Peers {
            share: SHARE,
            listen: many[1..].to_vec(),
        };
        let f = encode(&announce_max);
        assert_eq!(decode::<Request>(&f[4..]).unwrap(), announce_max);

        // The wire fuzz target's find: a Peers answer claiming 10,000 entries
        // in 4 bytes (9, then the u16 varint 10,000) reserved 480 KB before
        // failing. Now it is refused having reserved nothing.
        let claim = [9u8, 251, 0x10, 0x27];
        let (r, peak) = crate::test_alloc::peak_of(|| decode::<Response>(&claim));
        assert!(matches!(r, Err(WireError::Malformed(_))), "{r:?}");
        assert!(peak < 4096, "refusing it took {peak} bytes");
        // And 80 KiB of empty entries (2 bytes each) decodes to no list.
        let mut flood = vec![9u8, 252];
        flood.extend_from_slice(&40_000u32.to_le_bytes());
        flood.extend(std::iter::repeat_n([0u8, 0], 40_000).flatten());
        assert!(decode::<Response>(&flood).is_err());

        // A list claiming 2^40 entries in a few bytes: refused by the
        // frame limit, not allocated (Response::Peers = 9, then a u64
        // varint length).
        let mut bomb = vec![9u8, 253];
        bomb.extend_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(matches!(
            decode::<Response>(&bomb),
            Err(WireError::Malformed(_))
        ));
    }

    #[test]
    fn round_trip_and_limits() {
        for m in [
            Request::Manifest { share: SHARE },
            Request::Chunk {
                share: SHARE,
                chunk: CHUNK,
            },
            Request::Done {
                share: ManifestId([3; 32]),
            },
        ] {
            let f = encode(&m);
            let n = body_len(f[..4].try_into().unwrap()).unwrap();
            assert_eq!(decode::<Request>(&f[4..4 + n]).unwrap(), m);
            let mut trailing = f[4..].to_vec();
            trailing.push(0);
            assert_eq!(decode::<Request>(&trailing), Err(WireError::Trailing));
        }
        assert_eq!(
            body_len(u32::MAX.to_be_bytes()),
            Err(WireError::TooLarge(u32::MAX as usize))
        );
        // A bitmap claiming 2^60 bytes inside a tiny body is refused by the
        // limit, not allocated: Response::Have (2), Have::Bitmap (1), then a
        // u64 varint length (253 + 8 bytes).
        let mut bomb = vec![2u8, 1, 253];
        bomb.extend_from_slice(&(1u64 << 60).to_le_bytes());
        match decode::<Response>(&bomb) {
            Err(WireError::Malformed(m)) => {
                assert!(m.contains("limit") || m.contains("Limit"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decode::<Response>(&[99]),
            Err(WireError::Malformed(_))
        ));
        let have = Have::Bitmap(vec![0b0000_0101]);
        assert!(have.has(0) && !have.has(1) && have.has(2) && !have.has(9));
    }
}
