//! Fakes of the external services loop talks to, for tests that cannot reach the real ones.
//!
//! The fakes are written from the public API documentation and from what the real clients were
//! seen to send, never from loop's own types: a wrong wire shape in loop must fail a test
//! instead of being mirrored here.
//!
//! - [`model`]: a scripted Anthropic Messages API server that the real Claude Code CLI talks to
//!   through `ANTHROPIC_BASE_URL`.
//! - [`slack`]: the Slack Web API and Socket Mode, for the real slack-morphism client.
//! - [`discord`]: Discord's REST API and Gateway, for the real serenity client.
//! - [`github`]: GitHub's REST API for repositories and pull requests, with its auth and
//!   rate limit answers.
//! - [`hfhub`]: the Hugging Face hub's file downloads, for the hub client fastembed uses.
//! - [`ollama`]: Ollama's embedding endpoint, for `memory.embeddings.provider: "ollama"`.

pub mod discord;
pub mod github;
pub mod hfhub;
pub mod model;
pub mod ollama;
pub mod slack;
