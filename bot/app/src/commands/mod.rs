//! One module per `loop` subcommand.

pub mod client;
pub mod config_show;
pub mod config_trust;
pub mod gate;
pub mod image;
pub mod memory;
pub mod onboard;
pub mod project_image;
pub mod service;
pub mod tasks;
pub mod ui;
