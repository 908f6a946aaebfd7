//! Subject routing on one shard: the local subscription trie, the replicated interest map,
//! and the match cache in front of both. The router knows subjects and slot indices, not
//! protocols or sockets.

pub mod cache;
pub mod interest;
pub mod local;
pub mod retained;
pub mod trie;
