//! Keeps keys out of core dumps (audit F-15).
//!
//! Every command of the binary holds a share key or a read link in memory at
//! some point (a sender, a receiver, the daemon with all its shares' keys).
//! A crash would write that memory to a core file, often somewhere other
//! users or a crash reporter can read, and a same-user debugger could read
//! it live. So the process turns both off before it parses anything.

use rustix::process::{set_dumpable_behavior, setrlimit, DumpableBehavior, Resource, Rlimit};

/// Sets the core file size limit to zero and marks the process not dumpable
/// (`PR_SET_DUMPABLE` 0: no core file even where a limit is raised later, and
/// no `ptrace` attach or `/proc/PID/mem` read by other processes of the same
/// user).
///
/// Best effort: both calls only lower the process's own rights, so they do not
/// fail on Linux in practice; a failure is ignored rather than stopping a
/// transfer, because the worst case is the state before this change.
pub fn no_core_dumps() {
    let zero = Rlimit {
        current: Some(0),
        maximum: Some(0),
    };
    let _ = setrlimit(Resource::Core, zero);
    let _ = set_dumpable_behavior(DumpableBehavior::NotDumpable);
}

#[cfg(test)]
mod tests {
    use rustix::process::{dumpable_behavior, getrlimit, DumpableBehavior, Resource};

    #[test]
    fn the_process_writes_no_core_and_is_not_dumpable() {
        super::no_core_dumps();
        let core = getrlimit(Resource::Core);
        assert_eq!(core.current, Some(0));
        assert_eq!(core.maximum, Some(0));
        assert_eq!(dumpable_behavior().unwrap(), DumpableBehavior::NotDumpable);
    }
}
