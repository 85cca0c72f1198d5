//! loop-e2e: end-to-end tests against the real Docker engine, the real agent image and the
//! real Claude Code CLI, with fake model (and chat platform) servers from `loop-fakes`.
//!
//! This library holds the shared fixtures; the tests are in `tests/tests/`. Tests that need
//! Docker fail when it is missing, unless `LOOP_TEST_SKIP_UNAVAILABLE=1` (a developer's local
//! opt-out that CI never sets).

pub mod browser;
pub mod daemon;
pub mod engine;
pub mod gitremote;
pub mod measure;
pub mod project;
pub mod slack;
pub mod support;
