//! The file sink: JSON Lines, gzip-compressed, one gzip member per batch (so every flushed
//! batch is readable with `zcat` even if the process is then killed), rotated by size and
//! by hour or day, with retention by age and total size that touches only Dispa's files.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flate2::Compression;
use flate2::write::GzEncoder;

use super::record::{compact_utc, json_line};
use crate::config::{FileSink as Settings, Rotation};
use crate::msg::TrafficRecord;

/// Names of Dispa's files: `dispa-traffic-<UTC time>-<seq>.jsonl.gz`.
const PREFIX: &str = "dispa-traffic-";
const SUFFIX: &str = ".jsonl.gz";

pub fn is_ours(name: &str) -> bool {
    name.starts_with(PREFIX) && name.ends_with(SUFFIX)
}

struct Current {
    path: PathBuf,
    file: File,
    /// Compressed bytes written to it.
    written: u64,
    /// The hour or day (since the epoch) it belongs to.
    period: u64,
}

pub struct FileSink {
    settings: Settings,
    current: Option<Current>,
    seq: u32,
    /// Scratch: JSON lines of one batch, and their compressed form.
    lines: Vec<u8>,
    packed: Vec<u8>,
}

fn period(rotation: Rotation, unix_secs: u64) -> u64 {
    match rotation {
        Rotation::Hourly => unix_secs / 3600,
        Rotation::Daily => unix_secs / 86_400,
        Rotation::Never => 0,
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl FileSink {
    pub fn new(settings: Settings) -> Self {
        FileSink {
            settings,
            current: None,
            seq: 0,
            lines: Vec::new(),
            packed: Vec::new(),
        }
    }

    /// Close the current file (the next batch opens one with the new settings).
    pub fn reconfigure(&mut self, settings: Settings) {
        if settings != self.settings {
            self.current = None;
            self.settings = settings;
        }
    }

    fn open(&mut self, now: u64) -> io::Result<Current> {
        fs::create_dir_all(&self.settings.directory)?;
        loop {
            self.seq = self.seq.wrapping_add(1);
            let name = format!(
                "{PREFIX}{}-{:04}{SUFFIX}",
                compact_utc(now),
                self.seq % 10_000
            );
            let path = self.settings.directory.join(name);
            // create_new: never append to (or clobber) a file that is not this run's.
            match OpenOptions::new().append(true).create_new(true).open(&path) {
                Ok(file) => {
                    return Ok(Current {
                        path,
                        file,
                        written: 0,
                        period: period(self.settings.rotation, now),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Write `records` as one gzip member, rotating first when due.
    pub fn write(&mut self, records: &[TrafficRecord], now: SystemTime) -> io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let now = unix_secs(now);
        let due = self.current.as_ref().is_some_and(|c| {
            c.written >= self.settings.max_file_size
                || c.period != period(self.settings.rotation, now)
        });
        if due || self.current.is_none() {
            self.current = Some(self.open(now)?);
        }
        self.lines.clear();
        for r in records {
            json_line(&mut self.lines, r);
        }
        self.packed.clear();
        let mut gz = GzEncoder::new(std::mem::take(&mut self.packed), Compression::fast());
        gz.write_all(&self.lines)?;
        self.packed = gz.finish()?;
        let Some(c) = self.current.as_mut() else {
            return Ok(());
        };
        // One write per batch: a kill between batches leaves only complete members.
        if let Err(e) = c.file.write_all(&self.packed) {
            // A partial member (disk full) is cut off again, so the file stays valid and
            // the next batch continues it; only a file that cannot be fixed is dropped.
            if c.file.set_len(c.written).is_err() {
                self.current = None;
            }
            return Err(e);
        }
        c.written += self.packed.len() as u64;
        Ok(())
    }

    /// Delete Dispa's files older than `retention_days`, then the oldest while all of
    /// them exceed `max_total_size`. Never touches other files, nor the open one.
    pub fn retain(&self, now: SystemTime) -> io::Result<usize> {
        let dir = &self.settings.directory;
        let mut ours: Vec<(SystemTime, u64, PathBuf)> = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            // A file may vanish between listing and looking at it.
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() || !is_ours(name) {
                continue;
            }
            if self
                .current
                .as_ref()
                .is_some_and(|c| c.path == entry.path())
            {
                continue;
            }
            let Ok(modified) = meta.modified() else {
                continue;
            };
            ours.push((modified, meta.len(), entry.path()));
        }
        ours.sort();
        let mut deleted = 0;
        if self.settings.retention_days > 0 {
            let max_age = Duration::from_secs(u64::from(self.settings.retention_days) * 86_400);
            ours.retain(|(modified, _, path)| {
                let old = now.duration_since(*modified).is_ok_and(|age| age > max_age);
                if old && fs::remove_file(path).is_ok() {
                    deleted += 1;
                }
                !old
            });
        }
        if self.settings.max_total_size > 0 {
            let current = self.current.as_ref().map_or(0, |c| c.written);
            let mut total: u64 = ours.iter().map(|(_, len, _)| len).sum::<u64>() + current;
            for (_, len, path) in &ours {
                if total <= self.settings.max_total_size {
                    break;
                }
                if fs::remove_file(path).is_ok() {
                    deleted += 1;
                    total -= len;
                }
            }
        }
        Ok(deleted)
    }
}
