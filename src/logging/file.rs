//! The file sink: JSON Lines, gzip-compressed, one gzip member per batch (so every flushed
//! batch is readable with `zcat` even if the process is then killed), rotated by size and
//! by hour or day, with retention by age and total size that touches only Dispa's files.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use flate2::{Compress, Compression, Crc, FlushCompress, Status};

use super::record::json_line;
use crate::clock::{compact_utc, secs_of as unix_secs};
use crate::config::{FileSink as Settings, Rotation};
use crate::msg::TrafficRecord;

use super::SinkError;

/// Whether `c.path` still names the file `c` has open.
fn still_at_path(c: &Current) -> bool {
    fs::metadata(&c.path).is_ok_and(|m| (m.dev(), m.ino()) == c.id)
}

/// Names of Dispa's files: `dispa-traffic-<UTC time>-<seq>.jsonl.gz` (shard 0), and
/// `dispa-traffic-<UTC time>-<seq>.s<k>.jsonl.gz` for the logging thread of shard `k`.
const PREFIX: &str = "dispa-traffic-";
const SUFFIX: &str = ".jsonl.gz";

/// Whether `name` is a file of shard `shard` (retention touches only its own).
pub fn is_ours(name: &str, shard: usize) -> bool {
    let Some(rest) = name
        .strip_prefix(PREFIX)
        .and_then(|r| r.strip_suffix(SUFFIX))
    else {
        return false;
    };
    match rest.rsplit_once(".s") {
        Some((_, k)) => k.parse() == Ok(shard),
        None => shard == 0,
    }
}

/// The name tag of shard `shard`'s files (`""` for shard 0).
fn shard_tag(shard: usize) -> String {
    if shard == 0 {
        String::new()
    } else {
        format!(".s{shard}")
    }
}

struct Current {
    path: PathBuf,
    file: File,
    /// Device and inode of the file opened: when `path` no longer names it (deleted,
    /// moved), the next batch goes to a new file instead of a file nobody can see.
    id: (u64, u64),
    /// Compressed bytes written to it.
    written: u64,
    /// The hour or day (since the epoch) it belongs to.
    period: u64,
}

/// Append `input` to `out` as one complete gzip member (RFC 1952): a 10-byte header, the
/// raw deflate stream from `deflate` (reset first, so its state is reused), CRC-32 and
/// length. Concatenated members are one valid gzip file.
fn gzip_member(deflate: &mut Compress, input: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    // ID1 ID2, CM = deflate, no flags, no mtime, XFL 4 (fastest), OS 255 (unknown).
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 4, 255]);
    deflate.reset();
    loop {
        out.reserve(input.len() / 4 + 64);
        let done = deflate.total_in() as usize;
        let status = deflate
            .compress_vec(&input[done..], out, FlushCompress::Finish)
            .map_err(io::Error::other)?;
        if status == Status::StreamEnd {
            break;
        }
    }
    let mut crc = Crc::new();
    crc.update(input);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&(input.len() as u32).to_le_bytes());
    Ok(())
}

pub struct FileSink {
    settings: Settings,
    /// The logging shard this sink writes for (its files are named apart), of how many:
    /// each shard keeps its files within its share of `max_total_size`.
    shard: usize,
    shards: usize,
    current: Option<Current>,
    seq: u32,
    /// Scratch: JSON lines of one batch, and their compressed form.
    lines: Vec<u8>,
    packed: Vec<u8>,
    /// One raw deflate state for every batch: a `GzEncoder` per batch allocated and
    /// cleared ~300 KiB of compressor state each time (and faulted its pages in).
    deflate: Compress,
}

fn period(rotation: Rotation, unix_secs: u64) -> u64 {
    match rotation {
        Rotation::Hourly => unix_secs / 3600,
        Rotation::Daily => unix_secs / 86_400,
        Rotation::Never => 0,
    }
}

impl FileSink {
    pub fn new(settings: Settings, shard: usize, shards: usize) -> Self {
        FileSink {
            settings,
            shard,
            shards: shards.max(1),
            current: None,
            seq: 0,
            lines: Vec::new(),
            packed: Vec::new(),
            deflate: Compress::new(Compression::fast(), false),
        }
    }

    /// Close the current file: the next batch opens a new one (SIGUSR1, as nginx does
    /// for its logs).
    pub fn reopen(&mut self) {
        self.current = None;
    }

    /// Close the current file (the next batch opens one with the new settings).
    pub fn reconfigure(&mut self, settings: Settings) {
        if settings != self.settings {
            self.current = None;
            self.settings = settings;
        }
    }

    fn open(&mut self, now: u64) -> Result<Current, SinkError> {
        let dir = &self.settings.directory;
        fs::create_dir_all(dir).map_err(|e| SinkError::new("create directory", dir, e))?;
        loop {
            self.seq = self.seq.wrapping_add(1);
            let name = format!(
                "{PREFIX}{}-{:04}{}{SUFFIX}",
                compact_utc(now),
                self.seq % 10_000,
                shard_tag(self.shard)
            );
            let path = self.settings.directory.join(name);
            // create_new: never append to (or clobber) a file that is not this run's.
            match OpenOptions::new().append(true).create_new(true).open(&path) {
                Ok(file) => {
                    let meta = file
                        .metadata()
                        .map_err(|e| SinkError::new("stat", &path, e))?;
                    return Ok(Current {
                        path,
                        file,
                        id: (meta.dev(), meta.ino()),
                        written: 0,
                        period: period(self.settings.rotation, now),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(SinkError::new("create", &path, e)),
            }
        }
    }

    /// Write `records` as one gzip member, rotating first when due, and to a new file
    /// when the current one was deleted or moved away.
    pub fn write(&mut self, records: &[TrafficRecord], now: SystemTime) -> Result<(), SinkError> {
        if records.is_empty() {
            return Ok(());
        }
        let now = unix_secs(now);
        let due = self.current.as_ref().is_some_and(|c| {
            c.written >= self.settings.max_file_size
                || c.period != period(self.settings.rotation, now)
        });
        if let Some(c) = self.current.as_ref().filter(|_| !due)
            && !still_at_path(c)
        {
            tracing::warn!(path = %c.path.display(), "traffic file deleted or moved: writing to a new one");
            self.current = None;
        }
        if due || self.current.is_none() {
            self.current = Some(self.open(now)?);
        }
        self.lines.clear();
        for r in records {
            json_line(&mut self.lines, r);
        }
        self.packed.clear();
        let Some(c) = self.current.as_mut() else {
            return Ok(());
        };
        gzip_member(&mut self.deflate, &self.lines, &mut self.packed)
            .map_err(|e| SinkError::new("compress for", &c.path, e))?;
        // One write per batch: a kill between batches leaves only complete members.
        if let Err(e) = c.file.write_all(&self.packed) {
            // A partial member (disk full) is cut off again, so the file stays valid and
            // the next batch continues it; only a file that cannot be fixed is dropped.
            let error = SinkError::new("write", &c.path, e);
            if c.file.set_len(c.written).is_err() {
                self.current = None;
            }
            return Err(error);
        }
        c.written += self.packed.len() as u64;
        Ok(())
    }

    /// Delete Dispa's files older than `retention_days`, then the oldest while all of
    /// them exceed `max_total_size`. Never touches other files, nor the open one. A
    /// directory that does not exist (yet) has nothing to delete.
    pub fn retain(&self, now: SystemTime) -> Result<usize, SinkError> {
        let dir = &self.settings.directory;
        let mut ours: Vec<(SystemTime, u64, PathBuf)> = Vec::new();
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(SinkError::new("retention: list", dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| SinkError::new("retention: list", dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            // A file may vanish between listing and looking at it.
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() || !is_ours(name, self.shard) {
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
        let max_total = match self.settings.max_total_size {
            0 => 0,
            total => (total / self.shards as u64).max(1),
        };
        if max_total > 0 {
            let current = self.current.as_ref().map_or(0, |c| c.written);
            let mut total: u64 = ours.iter().map(|(_, len, _)| len).sum::<u64>() + current;
            for (_, len, path) in &ours {
                if total <= max_total {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn each_shard_owns_its_files_only() {
        let name = |shard| format!("{PREFIX}20261130T000000Z-0001{}{SUFFIX}", shard_tag(shard));
        assert!(is_ours(&name(0), 0));
        assert!(!is_ours(&name(0), 1));
        assert!(is_ours(&name(3), 3));
        assert!(!is_ours(&name(3), 0));
        assert!(!is_ours("dispa-traffic-notes.txt", 0));
        assert!(!is_ours("other.jsonl.gz", 0));
    }

    #[test]
    fn members_from_one_reused_state_decode_as_one_gzip_stream() {
        let mut deflate = Compress::new(Compression::fast(), false);
        let (a, b) = (b"{\"id\":1}\n".repeat(1000), b"{\"id\":2}\n".repeat(3));
        let mut packed = Vec::new();
        gzip_member(&mut deflate, &a, &mut packed).unwrap();
        gzip_member(&mut deflate, &b, &mut packed).unwrap();
        gzip_member(&mut deflate, b"", &mut packed).unwrap();
        let mut text = Vec::new();
        flate2::read::MultiGzDecoder::new(&packed[..])
            .read_to_end(&mut text)
            .unwrap();
        assert_eq!(text, [a, b].concat());
        assert!(packed.len() < 500, "compressed to {} bytes", packed.len());
    }
}
