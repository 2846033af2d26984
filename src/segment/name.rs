//! Channel names: validation, the system's object name, unique names.

use std::ffi::CString;

use crate::error::{NameProblem, SetupError};
use crate::sys;

/// Longest queue name, in bytes.
pub const MAX_NAME_LEN: usize = 200;
/// Prefix of every segment's file name in `/dev/shm`.
pub(crate) const OS_PREFIX: &str = "mulproc.";

/// A channel name no other channel on this machine has: the pid, the time
/// and a per-process count (`u-<pid>-<nanoseconds>-<count>`), for tests,
/// pools and throwaway channels. [`Queue::create_unique`](crate::Queue::create_unique)
/// and [`Pipe::create_unique`](crate::Pipe::create_unique) create under one.
///
/// ```
/// let (a, b) = (mulproc::unique_name(), mulproc::unique_name());
/// assert_ne!(a, b);
/// assert!(a.starts_with(&format!("u-{}-", std::process::id())));
/// ```
pub fn unique_name() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let n = COUNT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!("u-{}-{nanos:x}-{n}", std::process::id())
}

/// Runs `create` under fresh unique names until one is not taken.
pub(crate) fn with_unique_name<T>(
    mut create: impl FnMut(&str) -> Result<T, SetupError>,
) -> Result<T, SetupError> {
    let mut last = None;
    for _ in 0..8 {
        match create(&unique_name()) {
            Err(e @ (SetupError::AlreadyExists { .. } | SetupError::Stale { .. })) => {
                last = Some(e)
            }
            r => return r,
        }
    }
    Err(last.expect("eight tries were made"))
}

/// Checks a queue name and returns the shared-memory object name for it.
pub(crate) fn os_name(name: &str) -> Result<CString, SetupError> {
    let bad = |problem| SetupError::InvalidName {
        name: name.to_owned(),
        problem,
    };
    if name.is_empty() {
        return Err(bad(NameProblem::Empty));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(bad(NameProblem::TooLong));
    }
    if name.contains('/') {
        return Err(bad(NameProblem::Slash));
    }
    if name.starts_with('.') {
        return Err(bad(NameProblem::LeadingDot));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(bad(NameProblem::BadCharacter));
    }
    Ok(sys::shm_name(&format!("{OS_PREFIX}{name}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(name: &str) -> Option<NameProblem> {
        match os_name(name) {
            Ok(_) => None,
            Err(SetupError::InvalidName { problem, .. }) => Some(problem),
            Err(e) => panic!("unexpected {e}"),
        }
    }

    #[test]
    fn names_are_validated() {
        assert_eq!(problem("jobs"), None);
        assert_eq!(problem("a.b-c_D9"), None);
        assert_eq!(problem(""), Some(NameProblem::Empty));
        assert_eq!(problem("a/b"), Some(NameProblem::Slash));
        assert_eq!(problem("/jobs"), Some(NameProblem::Slash));
        assert_eq!(problem(".hidden"), Some(NameProblem::LeadingDot));
        assert_eq!(problem("sp ace"), Some(NameProblem::BadCharacter));
        assert_eq!(problem("nul\0"), Some(NameProblem::BadCharacter));
        assert_eq!(problem("é"), Some(NameProblem::BadCharacter));
        assert_eq!(problem(&"x".repeat(MAX_NAME_LEN)), None);
        assert_eq!(
            problem(&"x".repeat(MAX_NAME_LEN + 1)),
            Some(NameProblem::TooLong)
        );
    }

    #[test]
    fn os_name_is_prefixed() {
        assert_eq!(os_name("jobs").unwrap().to_str().unwrap(), "/mulproc.jobs");
    }
}
