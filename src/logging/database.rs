//! The database sink of a logging thread: SQLite (the default, a file per shard) or
//! PostgreSQL (`url = "postgres://…"`: one database for every shard and every Dispa).

use std::time::SystemTime;

use super::SinkError;
use super::postgres::PgSink;
use super::sqlite::SqliteSink;
use crate::config::DatabaseSink;
use crate::msg::TrafficRecord;

pub enum Database {
    Sqlite(SqliteSink),
    Postgres(PgSink),
}

impl Database {
    pub fn new(settings: DatabaseSink, shard: usize) -> Self {
        match settings.postgres {
            Some(pg) => Database::Postgres(PgSink::new(pg, settings.retention_days, shard)),
            None => Database::Sqlite(SqliteSink::new(settings)),
        }
    }

    /// New settings (on reload): the same kind of store is reconfigured, another replaces
    /// it (what the old one had not written waits in the backlog for the new one).
    pub fn reconfigure(&mut self, settings: DatabaseSink, shard: usize) {
        match (&mut *self, settings.postgres.clone()) {
            (Database::Sqlite(s), None) => s.reconfigure(settings),
            (Database::Postgres(p), Some(pg)) => p.reconfigure(pg, settings.retention_days),
            _ => {
                self.finish().ok();
                *self = Database::new(settings, shard);
            }
        }
    }

    /// Write batch number `seq`; `yield_cpu` as [`SqliteSink::write`].
    pub fn write(
        &mut self,
        seq: u64,
        records: &[TrafficRecord],
        yield_cpu: bool,
    ) -> Result<(), SinkError> {
        match self {
            Database::Sqlite(s) => s.write(records, yield_cpu),
            Database::Postgres(p) => p.write(seq, records),
        }
    }

    /// Connect now (PostgreSQL), so that a store that cannot be reached shows at start,
    /// not at the first batch.
    pub fn probe(&mut self) -> Result<(), SinkError> {
        match self {
            Database::Sqlite(_) => Ok(()),
            Database::Postgres(p) => p.probe(),
        }
    }

    /// Close the connection; the next write opens it again.
    pub fn reset(&mut self) {
        match self {
            Database::Sqlite(s) => s.reset(),
            Database::Postgres(p) => p.reset(),
        }
    }

    /// The per-minute rollups when due (SQLite only: PostgreSQL summarises the rows).
    pub fn tick(&mut self) -> Result<(), SinkError> {
        match self {
            Database::Sqlite(s) => s.tick(),
            Database::Postgres(_) => Ok(()),
        }
    }

    pub fn finish(&mut self) -> Result<(), SinkError> {
        match self {
            Database::Sqlite(s) => s.finish(),
            Database::Postgres(_) => Ok(()),
        }
    }

    /// Retention; returns whether old rows are left for another pass soon.
    pub fn retain(&mut self, now: SystemTime) -> Result<bool, SinkError> {
        match self {
            Database::Sqlite(s) => s.retain(now),
            Database::Postgres(p) => p.retain(now),
        }
    }
}
