//! Ctrl-C (SIGINT) and SIGTERM during training: the first one asks the loop to save a checkpoint
//! and stop after the current update; a second one exits at once.
//!
//! The signals are blocked in the calling thread before any worker thread exists, so every
//! thread spawned later (candle's CPU pool, rayon) inherits the mask, and one dedicated thread
//! receives them with `sigwait`. A signal therefore never lands in a compute thread: with an
//! ordinary handler, a SIGINT delivered while candle 0.11.1's barrier pool was busy left the
//! process spinning forever.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Installs the handling; returns the flag the training loop polls. Call it before any tensor
/// work so that no thread is spawned with the signals unblocked.
#[cfg(unix)]
pub fn install() -> std::io::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    // SAFETY: plain libc calls on a locally owned, initialised signal set.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc));
        }
        set
    };
    let seen = flag.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            loop {
                let mut sig: libc::c_int = 0;
                // SAFETY: `set` is a valid signal set blocked in this thread (inherited).
                if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                    continue;
                }
                if seen.swap(true, Ordering::SeqCst) {
                    eprintln!("\ntailor: second interrupt, exiting without a checkpoint");
                    std::process::exit(130);
                }
                eprintln!(
                    "\ntailor: interrupted; saving a checkpoint after this update (again to quit \
                     now)"
                );
            }
        })?;
    Ok(flag)
}

/// Without Unix signals the run can only be stopped by killing it (checkpoints stay valid).
#[cfg(not(unix))]
pub fn install() -> std::io::Result<Arc<AtomicBool>> {
    Ok(Arc::new(AtomicBool::new(false)))
}
