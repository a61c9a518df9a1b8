//! A replayed response against the recorded one: status, the chosen header fields, and
//! the body — as bytes, or as JSON with some paths ignored (timestamps, ids).

use serde_json::Value;

use super::source::Recorded;

/// How bodies are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BodyMode {
    /// As JSON when both bodies parse as JSON, else byte for byte.
    Auto,
    Bytes,
    Json,
    /// Not compared.
    Ignore,
}

/// What to compare.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Header field names (lowercase) whose values must match.
    pub headers: Vec<String>,
    pub body: BodyMode,
    pub ignore: Vec<JsonPath>,
}

/// The response a replayed request got.
#[derive(Debug, Clone, Default)]
pub struct Replayed {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The body's first bytes (as many as a comparison needs) and its full length.
    pub body: Vec<u8>,
    pub body_len: u64,
}

/// How a replayed response differed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Status,
    Header,
    Body,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Status, Kind::Header, Kind::Body];

    pub fn label(self) -> &'static str {
        match self {
            Kind::Status => "status",
            Kind::Header => "header",
            Kind::Body => "body",
        }
    }
}

/// The differences of one exchange, each with a line saying what was recorded and what
/// came back.
#[derive(Debug, Clone, Default)]
pub struct Differences {
    pub kinds: Vec<Kind>,
    pub details: Vec<String>,
}

impl Differences {
    fn add(&mut self, kind: Kind, detail: String) {
        if !self.kinds.contains(&kind) {
            self.kinds.push(kind);
        }
        self.details.push(detail);
    }
}

/// How many differing JSON paths one comparison lists.
const MAX_PATHS: usize = 5;

/// Compare `got` with what `r` recorded.
pub fn compare(r: &Recorded, got: &Replayed, rules: &Rules) -> Differences {
    let mut d = Differences::default();
    if got.status != r.status {
        d.add(
            Kind::Status,
            format!("status: recorded {}, replayed {}", r.status, got.status),
        );
    }
    // Only when the response's fields were captured: an absent field is then absent.
    if let Some(recorded) = &r.response_headers {
        for name in &rules.headers {
            let (a, b) = (joined(recorded, name), joined(&got.headers, name));
            if a != b {
                let show =
                    |v: &Option<String>| v.as_deref().map_or("(none)".into(), |v| format!("{v:?}"));
                d.add(
                    Kind::Header,
                    format!(
                        "header {name}: recorded {}, replayed {}",
                        show(&a),
                        show(&b)
                    ),
                );
            }
        }
    }
    if rules.body != BodyMode::Ignore
        && let Some(recorded) = &r.response_body
    {
        compare_body(r, recorded, got, rules, &mut d);
    }
    d
}

fn compare_body(r: &Recorded, recorded: &[u8], got: &Replayed, rules: &Rules, d: &mut Differences) {
    let complete = r.response_body_complete();
    let json = match rules.body {
        BodyMode::Json => true,
        BodyMode::Auto => complete && got.body_len == got.body.len() as u64,
        _ => false,
    };
    if json && complete {
        let parsed = (
            serde_json::from_slice::<Value>(recorded),
            serde_json::from_slice::<Value>(&got.body),
        );
        if let (Ok(mut a), Ok(mut b)) = parsed {
            for path in &rules.ignore {
                path.remove(&mut a);
                path.remove(&mut b);
            }
            let mut paths = Vec::new();
            json_differences(&a, &b, &mut String::from("$"), &mut paths);
            for (path, a, b) in paths.iter().take(MAX_PATHS) {
                d.add(
                    Kind::Body,
                    format!("body {path}: recorded {a}, replayed {b}"),
                );
            }
            if paths.len() > MAX_PATHS {
                d.add(
                    Kind::Body,
                    format!("body: {} more JSON paths differ", paths.len() - MAX_PATHS),
                );
            }
            return;
        }
        if rules.body == BodyMode::Json {
            d.add(Kind::Body, "body: not JSON on both sides".into());
            return;
        }
    }
    // Bytes: the whole body when the record has it all, else the part it kept and the
    // length.
    let recorded_len = r.response_bytes.max(0) as u64;
    if recorded_len != got.body_len {
        d.add(
            Kind::Body,
            format!(
                "body length: recorded {recorded_len}, replayed {}",
                got.body_len
            ),
        );
        return;
    }
    let n = recorded.len().min(got.body.len());
    if let Some(at) = (0..n).find(|&i| recorded[i] != got.body[i]) {
        d.add(
            Kind::Body,
            format!(
                "body byte {at}: recorded {}, replayed {}",
                snippet(&recorded[at..]),
                snippet(&got.body[at..])
            ),
        );
    }
}

/// The first bytes of `b` as a quoted string.
fn snippet(b: &[u8]) -> String {
    let n = b.len().min(40);
    let more = if b.len() > n { "…" } else { "" };
    format!("{:?}{more}", String::from_utf8_lossy(&b[..n]))
}

/// A field's values, joined as a list (RFC 9110 §5.3), `None` when absent.
fn joined(fields: &[(String, String)], name: &str) -> Option<String> {
    let values: Vec<&str> = fields
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

/// Where `a` and `b` differ, as JSON paths with both values (compact JSON).
fn json_differences(
    a: &Value,
    b: &Value,
    path: &mut String,
    out: &mut Vec<(String, String, String)>,
) {
    if out.len() > MAX_PATHS {
        return;
    }
    let show = |v: Option<&Value>| v.map_or("(absent)".to_string(), Value::to_string);
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x
                .keys()
                .chain(y.keys().filter(|k| !x.contains_key(*k)))
                .collect();
            keys.dedup();
            for k in keys {
                let len = path.len();
                path.push('.');
                path.push_str(k);
                match (x.get(k), y.get(k)) {
                    (Some(va), Some(vb)) => json_differences(va, vb, path, out),
                    (va, vb) => out.push((path.clone(), show(va), show(vb))),
                }
                path.truncate(len);
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            for i in 0..x.len().max(y.len()) {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                match (x.get(i), y.get(i)) {
                    (Some(va), Some(vb)) => json_differences(va, vb, path, out),
                    (va, vb) => out.push((path.clone(), show(va), show(vb))),
                }
                path.truncate(len);
            }
        }
        _ if a != b => out.push((path.clone(), show(Some(a)), show(Some(b)))),
        _ => {}
    }
}

/// A JSON path to ignore: `$.a.b`, `a.b`, `items[0].id`, `items[*].id`, `*.created`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPath(Vec<Step>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
    /// Every member of an object or element of an array.
    Any,
}

impl std::str::FromStr for JsonPath {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let rest = s.strip_prefix('$').unwrap_or(s);
        let rest = rest.strip_prefix('.').unwrap_or(rest);
        let mut steps = Vec::new();
        for part in rest.split('.') {
            let (key, mut brackets) = match part.find('[') {
                Some(i) => (&part[..i], &part[i..]),
                None => (part, ""),
            };
            match key {
                "" if brackets.is_empty() => return Err(format!("{s:?}: empty step")),
                "" => {}
                "*" => steps.push(Step::Any),
                k => steps.push(Step::Key(k.to_string())),
            }
            while !brackets.is_empty() {
                let close = brackets
                    .find(']')
                    .ok_or_else(|| format!("{s:?}: missing ]"))?;
                let inner = &brackets[1..close];
                steps.push(match inner {
                    "*" => Step::Any,
                    n => Step::Index(
                        n.parse()
                            .map_err(|_| format!("{s:?}: [{n}] is not an index"))?,
                    ),
                });
                brackets = &brackets[close + 1..];
                if !brackets.is_empty() && !brackets.starts_with('[') {
                    return Err(format!("{s:?}: expected . or [ after ]"));
                }
            }
        }
        if steps.is_empty() {
            return Err(format!("{s:?}: names nothing (the whole body?)"));
        }
        Ok(JsonPath(steps))
    }
}

impl JsonPath {
    /// Remove what the path names from `v` (an array element becomes null, so the
    /// others keep their indexes).
    pub fn remove(&self, v: &mut Value) {
        remove_at(v, &self.0);
    }
}

fn remove_at(v: &mut Value, steps: &[Step]) {
    let Some((step, rest)) = steps.split_first() else {
        return;
    };
    let last = rest.is_empty();
    match (v, step) {
        (Value::Object(map), Step::Key(k)) => {
            if last {
                map.remove(k);
            } else if let Some(child) = map.get_mut(k) {
                remove_at(child, rest);
            }
        }
        (Value::Object(map), Step::Any) => {
            if last {
                map.clear();
            } else {
                map.values_mut().for_each(|c| remove_at(c, rest));
            }
        }
        (Value::Array(items), Step::Index(i)) => {
            if let Some(child) = items.get_mut(*i) {
                if last {
                    *child = Value::Null;
                } else {
                    remove_at(child, rest);
                }
            }
        }
        (Value::Array(items), Step::Any) => {
            for child in items.iter_mut() {
                if last {
                    *child = Value::Null;
                } else {
                    remove_at(child, rest);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(ignore: &[&str]) -> Rules {
        Rules {
            headers: vec!["content-type".into()],
            body: BodyMode::Auto,
            ignore: ignore.iter().map(|p| p.parse().unwrap()).collect(),
        }
    }

    fn exchange(body: &str) -> Recorded {
        Recorded {
            status: 200,
            response_bytes: body.len() as i64,
            response_headers: Some(vec![("Content-Type".into(), "application/json".into())]),
            response_body: Some(body.as_bytes().to_vec()),
            ..Recorded::default()
        }
    }

    fn reply(status: u16, body: &str) -> Replayed {
        Replayed {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.as_bytes().to_vec(),
            body_len: body.len() as u64,
        }
    }

    #[test]
    fn json_bodies_differ_by_path_unless_ignored() {
        let r = exchange(r#"{"id":7,"at":"10:00","items":[{"n":1,"ts":5}]}"#);
        let got = reply(200, r#"{"at":"10:01","id":7,"items":[{"n":2,"ts":6}]}"#);
        let d = compare(&r, &got, &rules(&[]));
        assert_eq!(d.kinds, vec![Kind::Body]);
        assert_eq!(d.details.len(), 3, "{:?}", d.details);
        assert!(d.details[0].contains("$.at"), "{:?}", d.details);
        let d = compare(&r, &got, &rules(&["$.at", "items[*].ts"]));
        assert_eq!(
            d.details,
            vec![r#"body $.items[0].n: recorded 1, replayed 2"#]
        );
        let d = compare(&r, &got, &rules(&["at", "items[0]"]));
        assert!(d.kinds.is_empty(), "{:?}", d.details);
    }

    #[test]
    fn status_headers_and_bytes() {
        let r = exchange("hello world");
        let mut got = reply(503, "hello there");
        got.headers[0].1 = "text/plain".into();
        let d = compare(&r, &got, &rules(&[]));
        assert_eq!(d.kinds, vec![Kind::Status, Kind::Header, Kind::Body]);
        assert!(d.details[2].starts_with("body byte 6:"), "{:?}", d.details);
        let d = compare(&r, &reply(200, "hello world!"), &rules(&[]));
        assert_eq!(d.details, vec!["body length: recorded 11, replayed 12"]);
        assert!(
            compare(&r, &reply(200, "hello world"), &rules(&[]))
                .kinds
                .is_empty()
        );
    }

    #[test]
    fn a_body_kept_in_part_is_compared_as_far_as_it_goes() {
        let mut r = exchange("0123456789");
        r.response_bytes = 100;
        let mut got = reply(200, "0123456789");
        got.body_len = 100;
        assert!(compare(&r, &got, &rules(&[])).kinds.is_empty());
        got.body[3] = b'x';
        assert_eq!(compare(&r, &got, &rules(&[])).kinds, vec![Kind::Body]);
    }

    #[test]
    fn paths_parse_or_say_why_not() {
        assert!("$.a.b[2][*].c".parse::<JsonPath>().is_ok());
        for bad in ["$", "a..b", "a[x]", "a[1", "a[1]b"] {
            assert!(bad.parse::<JsonPath>().is_err(), "{bad}");
        }
    }
}
