//! The host as a child subreaper: an orphaned descendant (a plugin forked by
//! a zygote, once its intermediate has exited) becomes the host's child.

/// Makes this process a child subreaper (idempotent).
pub(crate) fn become_subreaper() -> std::io::Result<()> {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag and nothing else.
    match unsafe { nix::libc::prctl(nix::libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}
