//! loop-bot
