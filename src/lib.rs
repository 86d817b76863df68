//! peerdrop: peer-to-peer, end-to-end encrypted file exchange.
//!
//! A share is sealed on the sharer's machine into chunks that are encrypted
//! with a key that exists only in the share link, and addressed by the BLAKE3
//! hash of their ciphertext, so any node can store, verify and serve them
//! without being able to read them.
//!
//! # Layout
//!
//! Lower layers never use higher ones.
//!
//! | layer | module | owns |
//! |---|---|---|
//! | 0, pure | [`chunk`] | chunk geometry, [`chunk::ChunkId`] |
//! | 0, pure | [`crypto`] | [`crypto::ShareKey`], subkeys, chunk AEAD, key commitment |
//! | 1, pure | [`manifest`] | the public [`manifest::Manifest`] and its id |
//! | 1, pure | [`meta`] | the sealed file list and hostile-path rules |
//! | 1, pure | [`link`] | share links, read and pin |
//! | 1, pure | [`pipeline`] | the ordered, bounded multi-core pipeline |
//! | 1, pure | [`seal`] | streaming, multi-core sealing of a share into chunks |
//! | 1, pure | [`select`] | `--only`/`--exclude` patterns and the part of a share they take |
//! | 1, pure | [`open`] | verifying and decrypting chunks against a manifest |
//! | 1, pure | [`wire`] | peer protocol messages and framing (the one bincode user) |
//! | 2, files | [`store`] | reading sources, serving from them, writing output crash-safely, chunk folders, resuming |
//! | 3, network | [`net`] | the libp2p node, serving and fetching |
//! | 3, network | [`web`] | browser receive: the page and the ciphertext over HTTP |
//! | 4, daemon | [`daemon`] | the long-running node: data dir, persistent shares, fetches and pins, the control socket |
//!
//! Layers 0 and 1 do no I/O beyond `std::io::Read` handed in by the caller
//! (`.ci/run` checks this); the binary (`src/main.rs`, `src/cli/`) is the
//! only place that prints, reads the environment or picks paths.
//!
//! # Features
//!
//! `node` (default) builds layers 2 to 4 and the binary. Without it
//! (`default-features = false`) only layers 0 and 1 are built, with their
//! few dependencies, and of [`net`] only `net::frame`: the fuzz targets
//! (`fuzz/`) build that way, so an instrumented build skips libp2p, tokio
//! and the rest of the network tree.

#![forbid(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod chunk;
pub mod crypto;
#[cfg(feature = "node")]
pub mod daemon;
pub mod link;
pub mod manifest;
pub mod meta;
#[cfg(feature = "node")]
pub mod net;
/// Of the network layer, only the frame reader and writer without `node`:
/// they are generic over `futures::io`, open no socket, and are what a peer's
/// bytes go through first, so the wire fuzz target drives them.
#[cfg(not(feature = "node"))]
pub mod net {
    pub mod frame;
}
pub mod open;
pub mod password;
pub mod pipeline;
pub mod seal;
pub mod select;
#[cfg(feature = "node")]
pub mod store;
#[cfg(test)]
mod test_alloc;
#[cfg(feature = "node")]
pub mod web;
pub mod wire;
