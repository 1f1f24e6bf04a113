//! The local runner's embedded, durable store.

mod sqlite;

pub use sqlite::{Pending, SqliteStore, Taken};
