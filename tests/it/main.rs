//! Integration tests: a real server on loopback, real TLS, real databases (SQLite and a
//! throwaway PostgreSQL), and a client speaking XMPP. One binary, one module per area.

/// The server's allocator (see `src/lib.rs`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod common;

mod admin;
mod auth;
mod avatars;
mod lifecycle;
mod register;
mod blocking;
mod carbons;
mod components;
mod crash;
mod csi;
mod bookmarks;
mod services;
mod storage;
mod mam;
mod message;
mod muc;
mod muc_moderation;
mod muc_voice;
mod muc_nicks;
mod muc_presence_broadcast;
mod offline;
mod pep;
mod presence;
mod push;
mod quotas;
mod roster;
mod robustness;
mod s2s;
mod s2s_bidi;
mod s2s_certs;
mod s2s_pep;
mod s2s_rules;
mod slow_reader;
mod sm;
mod stream;
