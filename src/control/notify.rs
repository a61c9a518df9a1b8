//! systemd's service notifications (`sd_notify(3)`, what HAProxy sends too): with
//! `Type=notify`, `READY=1` once Dispa listens and its control thread runs,
//! `RELOADING=1` (with `MONOTONIC_USEC`) when a reload starts and `READY=1` when it is
//! done, so `systemctl reload` returns when the new config is live (or was refused), and
//! `STOPPING=1` when a graceful stop begins. Nothing without `$NOTIFY_SOCKET`.

use std::os::unix::net::UnixDatagram;

/// Send `state` (lines of `KEY=VALUE`) to the service manager, if there is one. A failure
/// is logged once at debug level: notifications are advisory.
pub fn send(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = UnixDatagram::unbound().and_then(|s| {
        let bytes = path.as_encoded_bytes();
        match bytes.strip_prefix(b"@") {
            // An abstract socket (`@name`).
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                s.send_to_addr(state.as_bytes(), &addr)
            }
            None => s.send_to(state.as_bytes(), &path),
        }
    });
    if let Err(e) = sent {
        tracing::debug!("notifying the service manager: {e}");
    }
}

pub fn ready() {
    send("READY=1\nSTATUS=serving");
}

/// A reload begins: systemd wants the time on CLOCK_MONOTONIC with it.
pub fn reloading() {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let usec = ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000;
    send(&format!(
        "RELOADING=1\nMONOTONIC_USEC={usec}\nSTATUS=reloading"
    ));
}

pub fn stopping() {
    send("STOPPING=1\nSTATUS=stopping");
}
