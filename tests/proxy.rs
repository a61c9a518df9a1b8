//! Integration tests: Dispa on a real loopback socket, real backend sockets, bytes checked
//! on both sides.

mod proxy {
    pub mod balancing;
    pub mod bodies;
    pub mod cli;
    pub mod connections;
    pub mod control;
    pub mod docs;
    pub mod errors;
    pub mod faults;
    pub mod forwarding;
    pub mod harness;
    pub mod limits;
    pub mod prometheus;
    pub mod recording;
    pub mod routing;
    pub mod slow_clients;
    pub mod smuggling;
}
