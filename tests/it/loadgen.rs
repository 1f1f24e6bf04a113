//! The load generator behind `bench/run` counts what the server did: every request it reports
//! as accepted is one stored event (and its notifications), and every duplicate stores nothing.
//! No timing is asserted. `scripts/test` builds `loadgen` (`cargo build --workspace --bins`);
//! without it this test skips, unless `REQUIRE_MOTO` is set (a full run).

use crate::support;

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use support::runner;

fn loadgen() -> Option<PathBuf> {
    let bin = std::path::Path::new(runner::BIN).with_file_name("loadgen");
    if bin.exists() {
        return Some(bin);
    }
    assert!(std::env::var_os("REQUIRE_MOTO").is_none(), "{} is missing: run scripts/test", bin.display());
    eprintln!("skipped: {} is not built", bin.display());
    None
}

fn run(bin: &PathBuf, url: &str, mode: &str) -> Value {
    let out = Command::new(bin)
        .args(["run", "--url", url, "--mode", mode, "--concurrency", "4", "--seconds", "1", "--warmup", "0"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn stored(data_dir: &std::path::Path) -> u64 {
    let db = rusqlite::Connection::open(data_dir.join("events.sqlite3")).unwrap();
    db.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0)).unwrap()
}

#[test]
fn every_request_counted_accepted_is_one_stored_event_and_duplicates_store_nothing() {
    let Some(bin) = loadgen() else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = runner::start_with(dir.path(), &[("ROUTING_RAINFOREST", support::GENERAL_ROUTING)]);
    let url = format!("{}/webhooks/rainforest", server.url);

    let new = run(&bin, &url, "new");
    let accepted = new["expected"].as_u64().unwrap();
    assert!(accepted > 0, "{new}");
    assert_eq!((new["unexpected"].as_u64(), new["errors"].as_u64()), (Some(0), Some(0)), "{new}");
    assert_eq!(new["requests"].as_u64(), Some(accepted), "{new}");
    assert_eq!(stored(dir.path()), accepted);
    // A succeeded Rainforest refund tells three audiences under the general table.
    assert_eq!(runner::wait_for(dir.path(), 3 * accepted as usize, 60).len(), 3 * accepted as usize);

    let dup = run(&bin, &url, "duplicate");
    assert!(dup["expected"].as_u64().unwrap() > 0, "{dup}");
    assert_eq!((dup["unexpected"].as_u64(), dup["errors"].as_u64()), (Some(0), Some(0)), "{dup}");
    // Only the one delivery the duplicates repeat was stored.
    assert_eq!(stored(dir.path()), accepted + 1);
}
