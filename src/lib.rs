//! The local runner: the same `common` pipeline served over HTTP on 127.0.0.1, with an embedded
//! SQLite store and a notifier that appends to a JSON-lines file. Nothing here runs in AWS.

pub mod cli;
pub mod lambda_events;
pub mod notifier;
pub mod outbox;
pub mod sender;
pub mod serve;
pub mod store;
