//! How many plugins are starting at once. A start that times out while
//! others were starting too may have been starved by the host's own load,
//! so the keeper retries it; one that times out alone does not fix itself.

use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Debug, Default)]
pub(crate) struct Starts {
    under_way: AtomicUsize,
}

/// One start, counted while it runs.
pub(crate) struct Start<'a> {
    starts: &'a Starts,
    others_at_spawn: usize,
}

impl Starts {
    pub(crate) fn begin(&self) -> Start<'_> {
        Start {
            others_at_spawn: self.under_way.fetch_add(1, Ordering::Relaxed),
            starts: self,
        }
    }
}

impl Start<'_> {
    /// Whether other plugins were starting during this one.
    pub(crate) fn shared_the_host(&self) -> bool {
        self.others_at_spawn > 0 || self.starts.under_way.load(Ordering::Relaxed) > 1
    }
}

impl Drop for Start<'_> {
    fn drop(&mut self) {
        self.starts.under_way.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_knows_whether_it_had_company() {
        let starts = Starts::default();
        let alone = starts.begin();
        assert!(!alone.shared_the_host());
        let second = starts.begin();
        assert!(alone.shared_the_host(), "another start began during it");
        assert!(second.shared_the_host(), "it began while another ran");
        drop(alone);
        drop(second);
        assert!(!starts.begin().shared_the_host());
    }
}
