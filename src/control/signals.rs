//! SIGTERM/SIGINT (graceful stop; a second one exits at once with status 130), SIGHUP
//! (reload) and SIGUSR1 (reopen the traffic files), as flags the control thread polls (signal-hook sets them; nothing else runs
//! in the handler).

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook::flag;

struct Flags {
    stop: Arc<AtomicBool>,
    reload: Arc<AtomicBool>,
    reopen: Arc<AtomicBool>,
}

static FLAGS: OnceLock<Flags> = OnceLock::new();

/// Install the handlers for the whole process (call once, from `main`).
pub fn install() -> std::io::Result<()> {
    let flags = FLAGS.get_or_init(|| Flags {
        stop: Arc::new(AtomicBool::new(false)),
        reload: Arc::new(AtomicBool::new(false)),
        reopen: Arc::new(AtomicBool::new(false)),
    });
    for sig in [SIGTERM, SIGINT] {
        // Registered first, so it sees the flag as the previous signal left it: set means
        // this is the second stop signal.
        flag::register_conditional_shutdown(sig, 130, flags.stop.clone())?;
        flag::register(sig, flags.stop.clone())?;
    }
    flag::register(SIGHUP, flags.reload.clone())?;
    flag::register(SIGUSR1, flags.reopen.clone())?;
    Ok(())
}

pub fn stop_requested() -> bool {
    FLAGS.get().is_some_and(|f| f.stop.load(Ordering::SeqCst))
}

/// Whether a reload was asked for since the last call.
pub fn take_reload() -> bool {
    FLAGS
        .get()
        .is_some_and(|f| f.reload.swap(false, Ordering::SeqCst))
}

/// Whether reopening the traffic files was asked for since the last call.
pub fn take_reopen() -> bool {
    FLAGS
        .get()
        .is_some_and(|f| f.reopen.swap(false, Ordering::SeqCst))
}
