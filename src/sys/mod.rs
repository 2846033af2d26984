//! Every system call of the crate, one file per family. The rest of the
//! crate speaks in safe types.

mod clock;
#[cfg(not(loom))]
mod futex;
mod membarrier;
pub(crate) mod ofd;
mod process;
mod shm;

pub(crate) use clock::coarse_ms;
#[cfg(not(loom))]
pub(crate) use futex::{futex_wait, futex_wake};
pub(crate) use membarrier::{membarrier_global, membarrier_register};
pub(crate) use process::die_with_parent;
pub(crate) use shm::{
    euid, fstat, ftruncate, shm_create, shm_name, shm_open_existing, shm_open_read_only,
    shm_unlink, FileStat, Mapping, ReadMapping,
};
