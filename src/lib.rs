//! Starling, an XMPP server: one binary, SQLite or PostgreSQL, RFC 6120/6121 and the XEPs
//! listed in `xeps/`. See `ARCHITECTURE` notes in the README for how the parts fit.

// Stanzas travel boxed from a session's queue to its writer, its hold-back (XEP-0352) and its
// unacknowledged list (XEP-0198): moving the box is cheaper than moving or re-boxing the
// element, which is large.
#![allow(clippy::vec_box)]

/// The server runs on mimalloc, not glibc's malloc (see Cargo.toml for why). A program
/// chooses its allocator, so `main.rs` declares it, and so do the test programs that run the
/// server (here for the unit tests, `tests/it` for the integration tests); a test that
/// counts allocations (`tests/xml_amplification.rs`) declares its own.
#[cfg(test)]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod accounts;
pub mod admin;
pub mod archive_import;
pub mod archive_query;
pub mod auth;
pub mod c2s;
pub mod components;
pub mod config;
pub mod core;
pub mod files;
pub mod heap;
pub mod modules;
pub mod rosters;
pub mod s2s;
pub mod requests;
pub mod router;
pub mod server;
pub mod session;
pub mod stanza;
pub mod storage;
pub mod tls;
pub mod xml;

pub use config::Config;
pub use server::Server;

/// Install the process-wide rustls crypto provider (ring). Safe to call more than once.
pub fn init_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
