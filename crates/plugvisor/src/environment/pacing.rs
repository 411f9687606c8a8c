//! How many plugins start (or stop) at once. Starting a thousand plugins at
//! once would starve the host's own health checks and handshake reads, and
//! fail plugins that are fine; so starts wait for a slot. The number of
//! slots adapts to how fast plugins actually come up: it grows while starts
//! are quick, and halves when one takes more than half its start timeout.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::oneshot;

/// Starts (or stops) under way at once, between bounds.
#[derive(Debug)]
pub(crate) struct Gate {
    state: Mutex<State>,
    min: usize,
    max: usize,
}

#[derive(Debug)]
struct State {
    limit: usize,
    running: usize,
    waiting: VecDeque<oneshot::Sender<()>>,
}

/// A slot; give it back with [`Slot::done`] (or drop it).
pub(crate) struct Slot<'a> {
    gate: &'a Gate,
    others_at_start: usize,
    took: Option<(Duration, Duration)>,
}

impl Gate {
    /// A gate that starts at `initial` slots and stays within `min..=max`.
    pub(crate) fn new(initial: usize, min: usize, max: usize) -> Gate {
        Gate {
            state: Mutex::new(State {
                limit: initial.clamp(min, max),
                running: 0,
                waiting: VecDeque::new(),
            }),
            min,
            max,
        }
    }

    /// Sized to the machine: four starts per core to begin with.
    pub(crate) fn for_starts() -> Gate {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Gate::new(4 * cores, 2, 16 * cores.max(4))
    }

    /// Stops at once: each waits mostly on its plugin, so many, but not a
    /// thousand controller calls and signals in one burst. (1000 Go plugins
    /// on 2 cores: 32 a core took 3.4 s to stop them all, 64 a core 2.0 s,
    /// all at once 2.2 s.)
    pub(crate) fn for_stops() -> Gate {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Gate::new(64 * cores, 64 * cores, 64 * cores)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot now, if one is free.
    pub(crate) fn try_enter(&self) -> Option<Slot<'_>> {
        let mut state = self.lock();
        if state.running < state.limit && state.waiting.is_empty() {
            state.running += 1;
            return Some(self.slot(state.running - 1));
        }
        None
    }

    /// Waits for a slot, first come first served. Cancelling the wait gives
    /// back a slot that was handed over meanwhile.
    pub(crate) async fn enter(&self) -> Slot<'_> {
        let mut waiting = {
            let mut state = self.lock();
            if state.running < state.limit && state.waiting.is_empty() {
                state.running += 1;
                return self.slot(state.running - 1);
            }
            let (ready, turn) = oneshot::channel();
            state.waiting.push_back(ready);
            Waiting {
                gate: self,
                turn: Some(turn),
            }
        };
        let turn = waiting.turn.as_mut().expect("set above");
        // The sender lives in the gate, which outlives every waiter.
        let _ = turn.await;
        waiting.turn = None;
        let running = self.lock().running;
        self.slot(running.saturating_sub(1))
    }

    fn slot(&self, others: usize) -> Slot<'_> {
        Slot {
            gate: self,
            others_at_start: others,
            took: None,
        }
    }

    /// Slots at the moment.
    pub(crate) fn limit(&self) -> usize {
        self.lock().limit
    }

    /// Starts running and waiting.
    pub(crate) fn busy(&self) -> usize {
        let state = self.lock();
        state.running + state.waiting.len()
    }

    fn leave(&self, took: Option<(Duration, Duration)>) {
        let mut state = self.lock();
        state.running -= 1;
        if let Some((took, timeout)) = took {
            if took > timeout / 2 {
                state.limit = (state.limit / 2).max(self.min);
            } else if took < timeout / 4 && state.running + 1 >= state.limit {
                // Grow only when the slots were all in use: there was demand.
                state.limit = (state.limit + 1).min(self.max);
            }
        }
        while state.running < state.limit {
            let Some(next) = state.waiting.pop_front() else {
                break;
            };
            // A waiter that gave up (its start was cancelled) takes nothing.
            if next.send(()).is_ok() {
                state.running += 1;
            }
        }
    }
}

/// A start waiting for its slot.
struct Waiting<'a> {
    gate: &'a Gate,
    turn: Option<oneshot::Receiver<()>>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(mut turn) = self.turn.take() {
            turn.close();
            // Handed a slot just before giving up: give it back.
            if turn.try_recv().is_ok() {
                self.gate.leave(None);
            }
        }
    }
}

impl Slot<'_> {
    /// Says how long the start took against its timeout, for the next ones.
    pub(crate) fn done(mut self, took: Duration, timeout: Duration) {
        self.took = Some((took, timeout));
    }

    /// Whether other plugins were starting during this one: a timeout then
    /// may be the host's load, not the plugin's fault.
    pub(crate) fn shared_the_host(&self) -> bool {
        self.others_at_start > 0 || self.gate.busy() > 1
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.gate.leave(self.took.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn starts_beyond_the_limit_wait_their_turn_in_order() {
        let gate = Gate::new(2, 1, 4);
        let a = gate.try_enter().unwrap();
        let b = gate.try_enter().unwrap();
        assert!(gate.try_enter().is_none());
        assert!(a.shared_the_host() && b.shared_the_host());
        let (first, second) = (gate.enter(), gate.enter());
        tokio::pin!(first, second);
        assert!(futures::poll!(&mut first).is_pending());
        assert!(futures::poll!(&mut second).is_pending());
        drop(a);
        let std::task::Poll::Ready(_first) = futures::poll!(&mut first) else {
            panic!("the first waiter goes first");
        };
        assert!(futures::poll!(&mut second).is_pending());
        drop(b);
        assert!(futures::poll!(&mut second).is_ready());
    }

    #[test]
    fn quick_starts_grow_the_limit_and_slow_ones_halve_it() {
        let gate = Gate::new(4, 2, 6);
        let slots: Vec<_> = (0..4).map(|_| gate.try_enter().unwrap()).collect();
        for slot in slots {
            slot.done(Duration::from_millis(5), TIMEOUT);
        }
        assert_eq!(gate.limit(), 5, "all four were busy and quick");
        let slot = gate.try_enter().unwrap();
        slot.done(Duration::from_millis(5), TIMEOUT);
        assert_eq!(gate.limit(), 5, "no growth without demand");
        let slot = gate.try_enter().unwrap();
        slot.done(Duration::from_secs(6), TIMEOUT);
        assert_eq!(gate.limit(), 2);
        let slot = gate.try_enter().unwrap();
        slot.done(Duration::from_secs(9), TIMEOUT);
        assert_eq!(gate.limit(), 2, "never below the minimum");
    }

    #[tokio::test]
    async fn a_cancelled_wait_gives_its_slot_back() {
        let gate = Gate::new(1, 1, 1);
        let held = gate.try_enter().unwrap();
        let mut waiter = Box::pin(gate.enter());
        assert!(futures::poll!(&mut waiter).is_pending());
        drop(held); // hands the slot to the waiter...
        drop(waiter); // ...which gives up before taking it
        assert!(gate.try_enter().is_some(), "the slot came back");
    }

    #[test]
    fn a_start_alone_did_not_share_the_host() {
        let gate = Gate::new(4, 1, 4);
        let alone = gate.try_enter().unwrap();
        assert!(!alone.shared_the_host());
    }
}
