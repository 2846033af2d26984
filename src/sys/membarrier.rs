//! `membarrier(2)`: the heavy half of the event counts' asymmetric fence.

/// `membarrier(2)` commands (linux/membarrier.h).
const MEMBARRIER_CMD_GLOBAL_EXPEDITED: libc::c_int = 1 << 1;
const MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED: libc::c_int = 1 << 2;

/// Registers this process for `MEMBARRIER_CMD_GLOBAL_EXPEDITED`, so that
/// another process's [`membarrier_global`] makes this process's running
/// threads execute a full memory barrier. Returns false if the kernel (or a
/// seccomp filter) refuses.
pub(crate) fn membarrier_register() -> bool {
    // SAFETY: membarrier takes no pointers; an unsupported command fails
    // with an error code.
    unsafe {
        libc::syscall(
            libc::SYS_membarrier,
            MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED,
            0,
            0,
        ) == 0
    }
}

/// A full memory barrier on every running thread of every registered
/// process (IPIs to the CPUs that run them). False if refused.
pub(crate) fn membarrier_global() -> bool {
    // SAFETY: as in `membarrier_register`.
    unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL_EXPEDITED, 0, 0) == 0 }
}
