//! The local runner's embedded, durable store.

mod sqlite;

pub use sqlite::SqliteStore;
#[cfg(test)]
pub(crate) use sqlite::tests::event as test_event;
