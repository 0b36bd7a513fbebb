//! The async Rust client and the wire types of the Tinker protocol.

pub mod proto;
pub mod types;
