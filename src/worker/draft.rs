//! The traffic record of one request: begun from its head while the head is still in the
//! read buffer (the texts, one allocation), completed from its [`Outcome`] when it ends.

use std::net::IpAddr;
use std::time::Duration;

use super::client::TlsInfo;
use super::outcome::Outcome;
use super::state::{Current, Worker};
use crate::http::RequestHead;
use crate::http::parse::{Fields, field};
use crate::msg::{Captured, RecordText, TrafficRecord};

pub struct RecordDraft {
    start_ms: u64,
    version_minor: u8,
    /// As [`TrafficRecord::tls`].
    tls: u8,
    text: String,
    ends: [u32; RecordText::COUNT],
    /// Dispa made the id up (the client sent none): it goes upstream as X-Request-Id.
    generated_id: bool,
    /// The host is under `[logging.capture]`: headers kept so far (bodies are captured
    /// by the relays).
    capture: Option<Box<Captured>>,
}

impl RecordDraft {
    fn new(version_minor: u8) -> Self {
        RecordDraft {
            start_ms: crate::clock::unix_ms(),
            version_minor,
            tls: 0,
            text: String::with_capacity(160),
            ends: [0; RecordText::COUNT],
            generated_id: false,
            capture: None,
        }
    }

    /// Begin the record of a request whose head is at the front of `data`; `host` is its
    /// host name as routing matched it, `tls` the connection's when it is TLS. Returns the
    /// draft and how many body bytes of each direction `[logging.capture]` keeps (0: none).
    pub fn begin(
        worker: &Worker,
        current: &Current,
        head: &RequestHead,
        data: &[u8],
        host: &str,
        tls: Option<&TlsInfo>,
    ) -> (RecordDraft, usize) {
        let mut draft = RecordDraft::new(head.minor_version);
        match field(data, &head.fields, b"x-request-id").and_then(usable_request_id) {
            Some(id) => draft.push(RecordText::Id, id),
            None => {
                draft.push_new_id(worker);
                draft.generated_id = true;
            }
        }
        draft.push_bytes(RecordText::Method, head.method.of(data));
        draft.push(RecordText::Host, host);
        let target = head.path.of(data);
        let (path, query) = match target.iter().position(|&b| b == b'?') {
            Some(i) => (&target[..i], &target[i + 1..]),
            None => (target, &b""[..]),
        };
        draft.push_bytes(RecordText::Path, path);
        draft.push_bytes(RecordText::Query, query);
        let ua = field(data, &head.fields, b"user-agent").unwrap_or_default();
        draft.push_bytes(RecordText::UserAgent, ua);
        draft.push_tls(tls);
        let snapshot = &current.snapshot;
        let captured = snapshot
            .capture
            .as_ref()
            .is_some_and(|c| c.intercepts(host));
        if !captured {
            return (draft, 0);
        }
        let settings = &snapshot.config.logging.capture;
        let mut c = Box::<Captured>::default();
        keep_fields(
            &mut c.request_headers,
            data,
            &head.fields,
            &settings.request_headers,
        );
        draft.capture = Some(c);
        (draft, settings.max_body_bytes)
    }

    /// The record of a request whose head could not be read: only an id (and the
    /// connection's TLS, if any).
    pub fn unparsed(worker: &Worker, tls: Option<&TlsInfo>) -> RecordDraft {
        let mut draft = RecordDraft::new(u8::MAX);
        draft.push_new_id(worker);
        for f in [
            RecordText::Method,
            RecordText::Host,
            RecordText::Path,
            RecordText::Query,
            RecordText::UserAgent,
        ] {
            draft.push(f, "");
        }
        draft.push_tls(tls);
        draft
    }

    fn push_tls(&mut self, tls: Option<&TlsInfo>) {
        self.tls = tls.map_or(0, |t| t.version);
        let sni = tls.and_then(|t| t.sni.as_deref()).unwrap_or("");
        self.push(RecordText::Sni, sni);
    }

    /// The id Dispa made up for this request, to send upstream as X-Request-Id (`None`:
    /// the client sent one, which is forwarded as it came).
    pub fn generated_id(&self) -> Option<&[u8]> {
        let id = &self.text[..self.ends[RecordText::Id as usize] as usize];
        self.generated_id.then_some(id.as_bytes())
    }

    /// Where the response's captured headers go, for a host under `[logging.capture]`.
    pub fn capture(&mut self) -> Option<&mut Captured> {
        self.capture.as_deref_mut()
    }

    /// Complete the record. `from`: the client's address and connection id; `bodies`: the
    /// captured request and response body bytes.
    pub fn finish(
        mut self,
        worker: &Worker,
        current: &Current,
        (client, conn): (IpAddr, u64),
        o: &Outcome,
        total: Duration,
        bodies: impl FnOnce() -> (Vec<u8>, Vec<u8>),
    ) -> TrafficRecord {
        let target = current.snapshot.targets.get(o.target as usize);
        self.push(RecordText::Target, target.map_or("", |t| t.name.as_str()));
        TrafficRecord {
            start_ms: self.start_ms,
            client,
            conn,
            worker: worker.id as u16,
            version_minor: self.version_minor,
            status: o.status,
            request_bytes: o.request_bytes,
            response_bytes: o.response_bytes,
            duration_us: total.as_micros() as u64,
            upstream_us: o.upstream.map(|u| u.as_micros() as u64),
            target_addr: target.map(|t| t.addr),
            reused: o.reused,
            retries: o.retries,
            error: o.error,
            tls: self.tls,
            text: self.text,
            ends: self.ends,
            capture: self.capture.map(|mut c| {
                (c.request_body, c.response_body) = bodies();
                c
            }),
        }
    }

    fn push(&mut self, field: RecordText, value: &str) {
        self.text.push_str(value);
        self.ends[field as usize] = self.text.len() as u32;
    }

    /// Push bytes from the wire: as they are when they are UTF-8 (the usual case, no
    /// copy), else with replacement characters.
    fn push_bytes(&mut self, field: RecordText, value: &[u8]) {
        match std::str::from_utf8(value) {
            Ok(s) => self.push(field, s),
            Err(_) => self.push(field, &String::from_utf8_lossy(value)),
        }
    }

    fn push_new_id(&mut self, worker: &Worker) {
        worker.write_request_id(&mut self.text);
        self.ends[RecordText::Id as usize] = self.text.len() as u32;
    }
}

/// Copy the fields of `fields` (spans into `buf`) whose names are in `names` (lowercase;
/// `"*"` keeps all) to `out`, for `[logging.capture]`.
pub fn keep_fields(out: &mut Vec<(String, String)>, buf: &[u8], fields: &Fields, names: &[String]) {
    let all = names.iter().any(|n| n == "*");
    for f in &fields.list {
        let name = f.name.of(buf);
        if all
            || names
                .iter()
                .any(|n| name.eq_ignore_ascii_case(n.as_bytes()))
        {
            out.push((
                String::from_utf8_lossy(name).into_owned(),
                String::from_utf8_lossy(f.value.of(buf)).into_owned(),
            ));
        }
    }
}

/// A client's X-Request-Id is kept when it is short visible ASCII.
fn usable_request_id(v: &[u8]) -> Option<&str> {
    let ok = !v.is_empty() && v.len() <= 128 && v.iter().all(|&b| b.is_ascii_graphic());
    if ok {
        std::str::from_utf8(v).ok()
    } else {
        None
    }
}
