//! loop-adapter
