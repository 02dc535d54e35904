//! The deployment files under deploy/, checked by the tools that read
//! them: Prometheus's alert rules and their unit tests (`promtool check
//! rules`, `promtool test rules`, `promtool check config`), the Grafana
//! dashboard's queries (valid PromQL to promtool, and naming only metric
//! families a running server exports), and the nginx front (`nginx -t`,
//! and the same text as `tradsys cluster nginx` writes for the shipped
//! map).
//! promtool and nginx come from Debian's packages (tests/run.sh installs
//! them); nothing is started but one tradsys on loopback.

mod common;

use common::Server;
use std::path::{Path, PathBuf};
use std::process::Command;

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy").join(path)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tradsys-deploy-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}

/// Runs `program` with `args` in `dir`: whether it succeeded, and what it
/// printed on stdout and stderr together.
fn run(dir: &Path, program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program} runs (tests/run.sh installs it): {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    let dir = deploy("prometheus");
    for args in [
        &["check", "rules", "alerts.yml"][..],
        &["test", "rules", "alerts_test.yml"],
        &["check", "config", "prometheus.yml"],
    ] {
        let (ok, text) = run(&dir, "promtool", args);
        assert!(ok && text.contains("SUCCESS"), "promtool {args:?}:\n{text}");
    }
    let (_, text) = run(&dir, "promtool", &["check", "rules", "alerts.yml"]);
    assert!(text.contains("SUCCESS: 10 rules found"), "{text}");
}

/// The `expr` values of the dashboard's panels.
fn dashboard_queries() -> Vec<String> {
    let text = std::fs::read_to_string(deploy("grafana/tradsys.json")).expect("the dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    panels
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .map(|t| t["expr"].as_str().expect("an expr").to_string())
        .collect()
}

/// Every `tradsys_...` name in `text`.
fn metric_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("tradsys_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

#[test]
fn every_query_is_valid_promql_over_families_the_server_exports() {
    let queries = dashboard_queries();
    assert_eq!(queries.len(), 17, "the dashboard's queries");
    // promtool checks PromQL in rule files: each query becomes a recording
    // rule, with Grafana's variables given values.
    let dir = scratch("promql");
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, q) in queries.iter().enumerate() {
        let q = q.replace("$instance", ".*").replace("$__rate_interval", "1m");
        rules.push_str(&format!(
            "      - record: dashboard:query{i}\n        expr: '{}'\n",
            q.replace('\'', "''")
        ));
    }
    std::fs::write(dir.join("dashboard.yml"), rules).expect("the rules written");
    let (ok, text) = run(&dir, "promtool", &["check", "rules", "dashboard.yml"]);
    assert!(ok && text.contains("SUCCESS: 17 rules found"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);

    // Families are exported with their HELP and TYPE even before a sample
    // (the links' without a cluster).
    let server = Server::start(1, &[]);
    let families = server.metrics().types;
    let alerts = std::fs::read_to_string(deploy("prometheus/alerts.yml")).expect("the alerts");
    let mut names = metric_names(&alerts);
    names.extend(queries.iter().flat_map(|q| metric_names(q)));
    for name in &names {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|base| families.get(*base).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        assert!(families.contains_key(family), "{name} is not a family of /metrics");
    }
    assert!(
        names.iter().any(|n| n == "tradsys_link_round_trip_seconds_bucket"),
        "{names:?}"
    );
}

#[test]
fn the_nginx_front_is_the_shipped_maps_and_passes_nginx_t() {
    let generated = Command::new(env!("CARGO_BIN_EXE_tradsys"))
        .args(["cluster", "nginx"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("tradsys runs");
    assert!(
        generated.status.success(),
        "{}",
        String::from_utf8_lossy(&generated.stderr)
    );
    let shipped = std::fs::read_to_string(deploy("nginx/tradsys.conf")).expect("the front");
    assert!(
        shipped == String::from_utf8_lossy(&generated.stdout),
        "deploy/nginx/tradsys.conf differs from `tradsys cluster nginx` (write it again with that command)"
    );
    let dir = scratch("nginx");
    let conf = common::nginx_conf(&dir, &deploy("nginx/tradsys.conf"));
    let conf = conf.to_str().expect("a UTF-8 path");
    let prefix = format!("{}/", dir.display());
    let (ok, text) = run(&dir, "nginx", &["-t", "-q", "-p", &prefix, "-c", conf]);
    assert!(ok, "nginx -t:\n{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// docs/capacity.md shows what `tradsys plan` computes from the shipped
/// figures, to the digit.
#[test]
fn the_capacity_page_is_the_plan_of_the_shipped_figures() {
    let out = Command::new(env!("CARGO_BIN_EXE_tradsys"))
        .arg("plan")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("tradsys runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = String::from_utf8(out.stdout).expect("UTF-8");
    let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/capacity.md")).expect("the page");
    assert!(page.contains(&report), "docs/capacity.md lacks:\n{report}");
    assert!(report.lines().count() >= 12, "{report}");
    let refused = Command::new(env!("CARGO_BIN_EXE_tradsys"))
        .args(["plan", "--figures", "Cargo.toml"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("tradsys runs");
    assert_eq!(refused.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&refused.stderr).lines().count(),
        1,
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}
