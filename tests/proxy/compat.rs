//! The original dispa's config keys and spellings (issue 17, point 2): the fixture in its
//! own keys loads and means what it meant there; keys with no meaning here, typos and
//! unknown values are refused with what to write instead.

use std::path::Path;
use std::time::Duration;

use dispa::config::{Algorithm, Rotation};

fn fixture() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seed-original.toml");
    std::fs::read_to_string(path).unwrap()
}

fn errors_of(toml: &str) -> String {
    match dispa::config::parse(toml) {
        Ok(_) => panic!("loaded:\n{toml}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_original_projects_config_loads_and_means_what_it_meant() {
    let c = dispa::config::parse(&fixture()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.timeouts.keepalive, Duration::from_secs(60));
    assert_eq!(c.timeouts.upstream_response, Duration::from_secs(30));
    assert_eq!(c.targets.algorithm, Algorithm::RoundRobin);
    assert_eq!(c.logging.file.retention_days, 14);
    assert_eq!(c.logging.database.retention_days, 14);
    assert_eq!(c.logging.file.rotation, Rotation::Hourly);
    assert_eq!(c.logging.database.path, Path::new("./data/traffic.db"));
    let least = fixture().replace("\"roundrobin\"", "\"leastconnections\"");
    let c = dispa::config::parse(&least).unwrap();
    assert_eq!(c.targets.algorithm, Algorithm::LeastConnections);
    let never = fixture().replace("rotation = true", "rotation = false");
    assert_eq!(
        dispa::config::parse(&never).unwrap().logging.file.rotation,
        Rotation::Never
    );
    // The specific keys win over the original's general one.
    let own = fixture().replace(
        "directory = \"./logs\"",
        "directory = \"./logs\"\nretention_days = 3",
    );
    let c = dispa::config::parse(&own).unwrap();
    assert_eq!(
        (
            c.logging.file.retention_days,
            c.logging.database.retention_days
        ),
        (3, 14)
    );
}

#[test]
fn keys_without_meaning_here_say_what_to_do_instead() {
    // sticky_sessions = true is consistent hashing by the client's address.
    let sticky = fixture().replace("sticky_sessions = false", "sticky_sessions = true");
    let c = dispa::config::parse(&sticky).unwrap();
    assert_eq!(c.targets.algorithm, Algorithm::ConsistentHash);
    assert_eq!(c.targets.hash_key, dispa::config::HashKey::ClientIp);
    let wild = fixture().replace("wildcard_support = true", "wildcard_support = false");
    let e = errors_of(&wild);
    assert!(
        e.contains("domains.wildcard_support: wildcards cannot be turned off"),
        "{e}"
    );
}

#[test]
fn typos_get_did_you_mean_from_the_known_names() {
    let e = errors_of(&fixture().replace("keep_alive_timeout", "keep_alive_timout"));
    assert!(
        e.contains("server.keep_alive_timout: unknown key (did you mean `keep_alive_timeout`?)"),
        "{e}"
    );
    let e = errors_of(&fixture().replace("exclude_domains", "exclude_domain"));
    assert!(e.contains("(did you mean `exclude_domains`?)"), "{e}");
    let e = errors_of(&fixture().replace("\"roundrobin\"", "\"round_robbin\""));
    assert!(e.contains("\"round_robbin\" is not one of \"round_robin\", \"weighted\", \"random\", \"least_connections\", \"consistent_hash\" (did you mean \"round_robin\"?)"), "{e}");
    let e = errors_of(&fixture().replace("\"roundrobin\"", "\"least-connection\""));
    assert!(e.contains("(did you mean \"least_connections\"?)"), "{e}");
    let e = errors_of(&fixture().replace("type = \"both\"", "type = \"databse\""));
    assert!(e.contains("(did you mean \"database\"?)"), "{e}");
    let e = errors_of(&fixture().replace("type = \"roundrobin\"", "type = \"fastest\""));
    assert!(
        e.contains("\"fastest\" is not one of") && !e.contains("did you mean"),
        "{e}"
    );
}
