//! loop-e2e
