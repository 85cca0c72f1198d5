//! loop-runner
