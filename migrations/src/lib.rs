//! loop-migrations
