//! plugvisor: a host for HashiCorp go-plugin gRPC plugins, Python first-class.
//!
//! Layers, top down: [`environment`] (many plugins, restart policy in
//! [`health`]), [`supervisor`] (one plugin process), and the pure bundle model
//! ([`manifest`], [`bundle`], [`runtime`], [`handshake`]).

pub mod bundle;
pub mod environment;
pub mod handshake;
pub mod health;
pub mod manifest;
pub mod process;
pub mod runtime;
pub mod stdio;
pub mod supervisor;
pub mod sweep;
pub mod tls;
pub mod transport;

/// go-plugin's `plugin` protocol package: the controller and stdio services.
pub mod proto {
    tonic::include_proto!("plugin");
}

/// The README's Rust examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
