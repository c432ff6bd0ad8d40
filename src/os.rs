//! The few calls remora makes straight into the operating system, and the
//! only `unsafe` code in the crate: the open-files limit, a thread's
//! priority, and ignoring SIGHUP until the reload handler is there. Each is
//! a plain libc call on integers or a struct it is handed.
#![allow(unsafe_code)]

use std::io;

/// Raises the soft limit on open files to the hard limit, as servers do (the
/// usual soft default, 1024, is near `agent.max_connections`), and returns
/// the limit now in force.
pub fn raise_fd_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(io::Error::last_os_error());
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    Ok(limit.rlim_cur)
}

/// Nice 10 for the calling thread only (Linux schedules threads one by one).
pub fn lower_this_threads_priority() -> io::Result<()> {
    // SAFETY: gettid and setpriority take and return plain integers.
    let failed = unsafe {
        let thread = libc::gettid() as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, thread, 10) != 0
    };
    if failed {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// SIGHUP ignored (its default ends the process) until a handler replaces
/// this: a `systemctl reload` during start-up must not stop remora.
pub fn ignore_hangup_for_now() {
    // SAFETY: signal() only sets this process's disposition for SIGHUP.
    unsafe {
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
}
