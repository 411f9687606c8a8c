//! The hostile matrix on forked processes: each case's fake plugin is behind
//! a Python plugin.py that its venv's zygote forks (it checks that it was)
//! and that execs the fake plugin in place; every case must end as it does
//! exec'd (`hostile.rs`), with nothing left behind.

const FORKED: bool = true;

include!("hostile/cases.rs");
