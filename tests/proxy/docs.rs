//! Every TOML example the project shows (files in `config/`, ```toml blocks in README.md
//! and docs/*.md) loads with the real config loader, so no documented example can rot.
//! A block that is a fragment (no targets or no domains) is completed with a minimal
//! `[domains]` / `[[targets.targets]]` before loading.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The ```toml blocks of a Markdown file, with their line numbers.
fn toml_blocks(path: &Path) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        match &mut current {
            None if line.trim_start().starts_with("```toml") => {
                current = Some((i + 1, String::new()))
            }
            Some(_) if line.trim_start().starts_with("```") => blocks.push(current.take().unwrap()),
            Some((_, body)) => {
                body.push_str(line);
                body.push('\n');
            }
            None => {}
        }
    }
    blocks
}

fn complete(fragment: &str) -> String {
    let mut text = fragment.to_string();
    if !text.contains("[domains]") {
        text.push_str("\n[domains]\nintercept_domains = [\"example.com\"]\n");
    }
    if !text.contains("[[targets.targets]]") {
        text.push_str("\n[[targets.targets]]\nname = \"t\"\nurl = \"http://127.0.0.1:3000\"\n");
    }
    text
}

#[test]
fn every_documented_toml_example_loads() {
    let mut sources: Vec<(String, String)> = Vec::new();
    for entry in std::fs::read_dir(root().join("config")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            sources.push((
                path.display().to_string(),
                std::fs::read_to_string(&path).unwrap(),
            ));
        }
    }
    let mut docs = vec![root().join("README.md")];
    for entry in std::fs::read_dir(root().join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            docs.push(path);
        }
    }
    for doc in &docs {
        for (line, block) in toml_blocks(doc) {
            sources.push((format!("{}:{line}", doc.display()), block));
        }
    }
    assert!(sources.len() >= 4, "found only {sources:?}");
    let failures: Vec<String> = sources
        .iter()
        .filter_map(|(from, text)| {
            dispa::config::parse(&complete(text))
                .err()
                .map(|e| format!("{from}:\n{e}"))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    eprintln!("{} TOML examples load", sources.len());
}

/// Every metric family Dispa exports is described in the user manual, and every key of
/// `config/config.toml` too.
#[test]
fn every_metric_and_config_key_is_in_the_user_manual() {
    use super::harness::*;
    let manual = std::fs::read_to_string(root().join("docs/USER_MANUAL.md")).unwrap();
    let b = Backend::named("b");
    let d = controlled(&config(&[b.addr], "round_robin", MONITORING));
    assert_eq!(get(d.proxy, "example.com", "/").status, 200);
    let text = call(d.metrics, "GET", "/metrics").text();
    let families: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| name.starts_with("dispa_"))
        .collect();
    assert!(families.len() > 20, "{families:?}");
    let missing: Vec<_> = families.iter().filter(|f| !manual.contains(*f)).collect();
    assert!(
        missing.is_empty(),
        "metrics not in USER_MANUAL.md: {missing:?}"
    );
    let config = std::fs::read_to_string(root().join("config/config.toml")).unwrap();
    let keys: Vec<&str> = config
        .lines()
        .map(|l| l.trim_start_matches('#').trim())
        .filter_map(|l| l.split_once(" = ").map(|(k, _)| k))
        .filter(|k| k.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        .collect();
    assert!(keys.len() > 40, "{keys:?}");
    let undocumented: Vec<_> = keys
        .iter()
        .filter(|k| !manual.contains(&format!("`{k}`")))
        .collect();
    assert!(
        undocumented.is_empty(),
        "config keys not in USER_MANUAL.md: {undocumented:?}"
    );
}

/// The errors a traffic record can name are the ones DATABASE.md lists for its `error`
/// column and the user manual lists for `dispa_request_errors_total`.
#[test]
fn every_error_kind_is_documented_where_records_and_metrics_are() {
    let database = std::fs::read_to_string(root().join("docs/DATABASE.md")).unwrap();
    let manual = std::fs::read_to_string(root().join("docs/USER_MANUAL.md")).unwrap();
    for kind in dispa::msg::ErrorKind::ALL {
        let label = kind.label();
        assert!(database.contains(label), "{label} not in DATABASE.md");
        assert!(
            manual.contains(&format!("`{label}`")),
            "{label} not in USER_MANUAL.md"
        );
    }
}

/// Every query in DATABASE.md's SQL blocks runs verbatim on a store Dispa wrote, and the
/// status-mix query names classes (`2xx`), not bare digits.
#[test]
fn every_database_md_query_runs_on_a_real_store() {
    use super::harness::*;
    let doc = std::fs::read_to_string(root().join("docs/DATABASE.md")).unwrap();
    let b = Backend::named("b");
    let dir = scratch_dir("doc-queries");
    let p = proxy(&config(&[b.addr], "round_robin", &logging_section(&dir)));
    for path in ["/a", "/b?x=1", "/a"] {
        assert_eq!(get(p.local_addr(), "example.com", path).status, 200);
    }
    assert_eq!(get(p.local_addr(), "nope.org", "/").status, 404);
    drop(p);
    let db = rusqlite::Connection::open(dir.join("traffic.db")).unwrap();
    let mut blocks = doc.split("```sql\n").skip(1);
    let mut ran = 0;
    let mut classes = Vec::new();
    for block in blocks.by_ref() {
        let sql = block.split("```").next().unwrap();
        if sql.contains("CREATE TABLE") {
            // The schema as documented: valid SQL of its own.
            let scratch = rusqlite::Connection::open_in_memory().unwrap();
            scratch
                .execute_batch(sql)
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            continue;
        }
        // SQLite's own statement splitter (comments may hold ';').
        use rusqlite::fallible_iterator::FallibleIterator;
        let mut batch = rusqlite::Batch::new(&db, sql);
        while let Some(mut stmt) = batch.next().unwrap_or_else(|e| panic!("{sql}: {e}")) {
            let columns: Vec<String> = stmt.column_names().map(str::to_string).collect();
            let mut rows = stmt.query([]).unwrap_or_else(|e| panic!("{sql}: {e}"));
            while let Some(row) = rows.next().unwrap() {
                if let Some(i) = columns.iter().position(|c| c == "class") {
                    classes.push(row.get::<_, String>(i).unwrap());
                }
            }
            ran += 1;
        }
    }
    assert!(ran >= 6, "ran {ran} queries");
    classes.sort();
    assert_eq!(classes, ["2xx", "4xx"]);
}
