//! Dispa's own log lines (not the traffic record) as JSON Lines, for log shippers:
//! `{"time":"…Z","level":"INFO","message":"dispa started","listen":"…",…}`, one object per
//! event, fields as they were logged. Chosen with `--log-format json`.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::logging::record::{json_str, push_rfc3339_ms};

/// The JSON Lines event format.
pub struct JsonLines;

/// Collects an event's fields as `,"name":value`.
struct Fields {
    out: Vec<u8>,
    message: Vec<u8>,
}

impl Fields {
    fn key(&mut self, field: &Field) {
        self.out.push(b',');
        json_str(&mut self.out, field.name());
        self.out.push(b':');
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            json_str(&mut self.message, value);
        } else {
            self.key(field);
            json_str(&mut self.out, value);
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        self.out.extend_from_slice(value.to_string().as_bytes());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        self.out.extend_from_slice(value.to_string().as_bytes());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        self.out
            .extend_from_slice(if value { b"true" } else { b"false" });
    }
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut fields = Fields {
            out: Vec::with_capacity(256),
            message: Vec::new(),
        };
        event.record(&mut fields);
        let mut line = Vec::with_capacity(64 + fields.out.len() + fields.message.len());
        line.extend_from_slice(b"{\"time\":\"");
        push_rfc3339_ms(&mut line, now_ms);
        line.extend_from_slice(b"\",\"level\":\"");
        line.extend_from_slice(event.metadata().level().as_str().as_bytes());
        line.extend_from_slice(b"\",\"message\":");
        if fields.message.is_empty() {
            line.extend_from_slice(b"\"\"");
        } else {
            line.extend_from_slice(&fields.message);
        }
        line.extend_from_slice(&fields.out);
        line.extend_from_slice(b"}\n");
        writer.write_str(&String::from_utf8_lossy(&line))
    }
}
