//! The integration tests of `cargo xtask`: one crate, a module per area, so
//! the shared support is compiled and linked once (matklad's "Delete Cargo
//! Integration Tests"). Each module runs the built xtask end to end; nextest
//! still runs every test in a process of its own.

mod support;

mod rollout_support;

mod bench;
mod build;
mod components;
mod package;
mod plans_paste;
mod robust;
mod rollout_approval;
mod rollout_double;
mod rollout_faults;
mod rollout_gate;
mod rollout_history;
mod rollout_model;
mod rollout_plan;
mod rollout_release;
mod rollout_rollback;
mod signals;
