//! The peer of `benches/programs/sqlite_insert.vasm`: the same inserts made by a plain Rust
//! program with rusqlite on one thread (the same schema, pragmas, prepared statement and
//! transactions of BATCH rows), to measure what going through the VM costs.
//!
//! `sqlite_peer DBFILE [ROWS] [BATCH]` (default 100,000 rows in transactions of 100) prints the
//! rows inserted, the time and the rate, in the VM program's format.
#![allow(clippy::print_stdout, reason = "a benchmark binary: printing its figures is its job")]

use std::time::Instant;

fn main() -> rusqlite::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).map_or("/tmp/sqlite_peer.db", String::as_str);
    let rows: i64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let batch: i64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(100);
    let actors = 100;
    let mut conn = rusqlite::Connection::open(path)?;
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; DROP TABLE IF EXISTS t; \
         CREATE TABLE t (actor INTEGER, n INTEGER, payload TEXT)",
    )?;
    let start = Instant::now();
    // The VM's rows: actor a inserts n = 0..rows/actors; here in one thread, batch by batch.
    let each = rows / actors;
    for a in 0..actors {
        let mut n = 0;
        while n < each {
            let tx = conn.transaction()?;
            {
                let mut stmt = tx.prepare_cached("INSERT INTO t (actor, n, payload) VALUES (?, ?, ?)")?;
                for k in n..(n + batch).min(each) {
                    stmt.execute(rusqlite::params![a, k, format!("payload-{k}")])?;
                }
            }
            tx.commit()?;
            n += batch;
        }
    }
    let us = start.elapsed().as_micros().max(1) as i64;
    let count: i64 = conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?;
    println!("sqlite_peer rows={count} us={us} rows_per_s={}", count * 1_000_000 / us);
    Ok(())
}
