//! The `loop` binary's library: argument types (`cli`), one module per command (`commands`)
//! and logging set-up. `main.rs` parses, sets up logging and runs a command; everything with a
//! state of its own lives in `loop-daemon`, `loop-store` or `loop-guest`.

pub mod cli;
pub mod commands;
pub mod logging;
