//! Process limits: each probe in flight holds up to [`FDS_PER_PROBE`] file descriptors.

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

/// A probe's current attempt, and under adaptive timing the previous one, still listening
/// for a late answer.
pub const FDS_PER_PROBE: u64 = 2;

/// The largest number of probes in flight that `fd_limit` leaves room for.
pub fn max_in_flight_for(fd_limit: u64) -> usize {
    let probes = fd_limit.saturating_sub(RESERVED_FDS) / FDS_PER_PROBE;
    usize::try_from(probes.max(1)).unwrap_or(usize::MAX)
}
