//! Crash injection for the power-loss tests.
//!
//! The update steps call [`hit`] with their name; when `PEPEUNIT_UNIT_FAILPOINT` names that step the
//! process aborts on the spot, without unwinding or flushing anything, which is as close to pulling the
//! plug as a test can get without a virtual machine. Unset (always, outside tests) it costs one lookup.

/// The environment variable naming the step to die at.
pub const VARIABLE: &str = "PEPEUNIT_UNIT_FAILPOINT";

/// The update steps, in order, that a test can kill the agent at.
pub const UPDATE_STEPS: [&str; 6] = [
    "update.downloaded",
    "update.unpacked",
    "update.trial_recorded",
    "update.switched",
    "update.started",
    "update.committed",
];

pub fn hit(step: &str) {
    if std::env::var(VARIABLE).is_ok_and(|wanted| wanted == step) {
        eprintln!("failpoint {step}: aborting");
        std::process::abort();
    }
}
