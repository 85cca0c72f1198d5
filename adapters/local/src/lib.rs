//! loop-adapter-local
