//! Starling, an XMPP server.

pub mod config;
pub mod xml;
