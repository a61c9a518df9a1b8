//! Integration tests: Dispa on a real loopback socket, real backend sockets, bytes checked
//! on both sides.
// The worker fence (clippy.toml) applies to src/worker/ only.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod proxy {
    pub mod balancing;
    pub mod bodies;
    pub mod cli;
    pub mod compat;
    pub mod connections;
    pub mod control;
    pub mod docs;
    pub mod errors;
    pub mod faults;
    pub mod forwarding;
    pub mod harness;
    pub mod limits;
    pub mod losses;
    pub mod postgres;
    pub mod prometheus;
    pub mod recording;
    pub mod replay;
    pub mod routing;
    pub mod slow_clients;
    pub mod smuggling;
    pub mod tls;
}
