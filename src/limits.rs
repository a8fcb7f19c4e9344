//! Process limits: each probe in flight holds a file descriptor.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// File descriptors kept free for the HTTP server, DNS and the process itself.
pub const RESERVED_FDS: u64 = 128;

/// Raises the soft RLIMIT_NOFILE to the hard limit (it is often 1024 under systemd) and returns
/// the soft limit now in force.
pub fn raise_fd_limit() -> nix::Result<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(getrlimit(Resource::RLIMIT_NOFILE)?.0)
}

/// The largest number of probes in flight that `fd_limit` leaves room for.
pub fn max_in_flight_for(fd_limit: u64) -> usize {
    usize::try_from(fd_limit.saturating_sub(RESERVED_FDS).max(1)).unwrap_or(usize::MAX)
}
