//! A project's setup steps in the agent's container plan.
//!
//! Setup runs inside the container, as the agent, by `loop setup -- CLAUDE...` in front of the
//! agent's command: it then sees exactly the image, mounts, environment and gate the agent
//! sees, and its output reaches the runner on the same attached stdout, as stream-json lines
//! the event decoder knows. `loop setup` ends by exec'ing the agent whatever happened, so a
//! broken setup leaves an agent that can be asked to fix it. A warm agent keeps its container
//! and so the setup's result; each new container runs the steps once.
//!
//! The types are `loop-wire`'s: `loop setup` (in `loop-guest`, which cannot link the runner)
//! reads the same shapes.

pub use loop_wire::setup::{SetupCommand, SetupReport, SetupStep};

use loop_wire::container::{env, paths};

/// `cmd` (the agent's command) behind `loop setup --` when there are steps, with the
/// `LOOP_SETUP=<steps as JSON>` variable that carries them; `cmd` unchanged and no variable
/// otherwise.
pub(super) fn with_setup(steps: &[SetupStep], cmd: Vec<String>) -> (Vec<String>, Option<String>) {
    if steps.is_empty() {
        return (cmd, None);
    }
    let json = serde_json::to_string(steps).expect("setup steps serialize: strings and maps only");
    let mut wrapped = vec![
        paths::LOOP_BIN.to_owned(),
        "setup".to_owned(),
        "--".to_owned(),
    ];
    wrapped.extend(cmd);
    (wrapped, Some(format!("{}={json}", env::SETUP)))
}
