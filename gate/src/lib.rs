//! loop-gate
