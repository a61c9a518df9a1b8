//! Dispa: an HTTP/1.1 traffic-intercepting reverse proxy, thread-per-core on io_uring.
//!
//! Threads and what they own:
//! - `boot` binds one SO_REUSEPORT listener per worker and starts the workers;
//! - each `worker` thread (pinned to a CPU) runs one monoio runtime: accept → parse
//!   (`http`) → match the host (`route`) → pick a target (`balance`) → forward over its
//!   own upstream pool → relay the response. Workers share nothing mutable but the
//!   lock-free in-flight counters; they receive new [`config::Snapshot`]s as
//!   [`msg::WorkerMsg`] on their own channel.
//! - `demo` runs two small local backends for a first try.
//! - `traffic` reads the record; `replay` sends recorded requests again and compares the
//!   answers, or serves recorded responses as a mock (its own process).
// The worker fence (clippy.toml) applies to src/worker/ only.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]
// Every unsafe block says why it is sound.
#![warn(clippy::undocumented_unsafe_blocks)]

/// mimalloc instead of glibc's malloc, for the binary, the tests and the benchmarks alike.
/// glibc keeps the buffers a parked connection frees resident between the small
/// allocations of connections that stay; mimalloc keeps each size in its own pages and
/// returns freed ones: 10,000 idle connections 5.4 → 3.5 KiB each, and 4–19 % less CPU
/// per request (docs/BENCHMARKS.md, "Against the floor").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod balance;
pub mod boot;
pub mod clock;
pub mod config;
pub mod control;
pub mod demo;
pub mod http;
pub mod io;
pub mod logging;
pub mod msg;
pub mod replay;
pub mod route;
pub mod sched;
pub mod tls;
pub mod traffic;
pub mod worker;
