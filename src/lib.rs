//! # libtinkex
//!
//! A client for the Tinker fine-tuning API. The whole behaviour (transport, retries,
//! futures, sessions, telemetry) lives in [`core`], a pointer-free async Rust API; a C ABI
//! over it serves Python, Elixir and C++.
//!
//! This crate also holds the wire types shared with the local emulator
//! (`tinkex-emulator`), so that both sides of every test speak one schema, and the
//! official Python SDK run against the emulator keeps that schema honest.

#![warn(missing_docs)]

pub mod core;
pub mod ffi;
