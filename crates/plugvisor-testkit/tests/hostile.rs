//! Hostile plugins: each case states the status and error it must end in, and
//! that nothing of the plugin (group, session, descendants, zombies) is left.
//! Native plugins, exec'd; `hostile_forked.rs` runs the same cases forked.

const FORKED: bool = false;

include!("hostile/cases.rs");
