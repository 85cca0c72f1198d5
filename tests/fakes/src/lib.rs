//! loop-fakes
