//! Entry point of a child process (a re-executed copy of the binary).

use crate::common::{StdioControl, CHILD_ENV, PARENT_PID_ENV};
use crate::config::ChildSpec;
use crate::{err, peers, Result};

/// If this process was started as a peer child, runs the child role and
/// returns its exit code; otherwise returns `None` at once. Call it first
/// thing in `main`.
pub fn run_if_child() -> Option<i32> {
    let spec = std::env::var(CHILD_ENV).ok()?;
    Some(match run(&spec) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("peer child: {e}");
            1
        }
    })
}

fn run(spec: &str) -> Result<()> {
    die_with_parent()?;
    let spec = ChildSpec::decode(spec)?;
    peers::run_child(&spec, &mut StdioControl::new())
}

/// Asks the kernel to SIGKILL us when the parent dies, so that a spinning
/// child never outlives an aborted run.
fn die_with_parent() -> Result<()> {
    // SAFETY: prctl(PR_SET_PDEATHSIG, sig) takes an integer argument and
    // touches no memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // The parent may have died before the prctl: then we are orphaned.
    let expected: u32 = std::env::var(PARENT_PID_ENV)
        .map_err(|_| err(format!("{PARENT_PID_ENV} not set")))?
        .parse()?;
    if std::os::unix::process::parent_id() != expected {
        return Err(err("parent exited before the child started"));
    }
    Ok(())
}
