//! The local runner's embedded, durable store.

mod sqlite;

#[cfg(test)]
pub(crate) use sqlite::tests::event as test_event;
pub use sqlite::{Pending, SqliteStore, Taken};
