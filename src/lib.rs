//! Starling, an XMPP server.

pub mod auth;
pub mod config;
pub mod stanza;
pub mod storage;
pub mod xml;
