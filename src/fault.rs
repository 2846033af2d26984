//! Process-local test hooks (feature `fault-injection`): a process dies
//! or stops itself at a named point of the send, receive or recovery
//! paths, so the crash tests can check what the others do about it.
//! Without the feature every point is an empty inline function.
//!
//! Points: `in-copy` (a copying sender, payload written, claim not
//! signed), `before-publish` (signed, not published), `in-claim` (a
//! receiver, claimed, owner word not written), `in-release` (a receiver
//! between moving `head` and freeing its slot), `in-repair` (a recoverer
//! holding the control lock, claim fenced, slot not back in use).

/// Dies (SIGKILL) if `MULPROC_FAULT` is `point`; stops itself (SIGSTOP,
/// until someone sends SIGCONT) if it is `stop:<point>`.
#[cfg(feature = "fault-injection")]
pub(crate) fn point(point: &str) {
    let Ok(v) = std::env::var("MULPROC_FAULT") else {
        return;
    };
    let signal = if v == point {
        libc::SIGKILL
    } else if v.strip_prefix("stop:") == Some(point) {
        libc::SIGSTOP
    } else {
        return;
    };
    // SAFETY: raising a signal on ourselves touches no memory.
    unsafe {
        libc::raise(signal);
    }
}

/// Without the `fault-injection` feature: nothing.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub(crate) fn point(_: &str) {}
