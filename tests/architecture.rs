//! The layering of `src/`, checked: every module imports only the layers
//! below its own, and only the I/O layers name glommio.
//!
//! docs/ARCHITECTURE.md states the layers as invariants; this test is how
//! they stay true. It reads the sources as text: a module's layer is the
//! first part of its path under `src/` (a folder or a file), and an import
//! is any `crate::<layer>` path outside comments. `lib.rs` and `main.rs`
//! sit above everything.
//!
//! The same file keeps docs/ARCHITECTURE.md's table of resource limits
//! whole: every configuration key that is a limit has its row there.

use std::path::{Path, PathBuf};

/// The layers, lowest first. A layer may import itself and the layers
/// before it, never one after it.
const LAYERS: &[&str] = &[
    // Bottom: no executor; each may import only the ones listed before it.
    "binance",
    "clock",
    "resilience",
    "json",
    "oneshot",
    "marketdata",
    "journal",
    "http",
    "compress",
    "ws",
    "auth",
    "endpoint",
    "limits",
    "overload",
    "metrics",
    "redis",
    "cluster",
    "plan",
    "config",
    "cache",
    // The trading core, then what is built on it.
    "trading",
    "streams",
    "durability",
    "store",
    "jobs",
    "api",
    "fuzz",
    // The only layer that runs executors and sockets.
    "server",
];

/// The layers that may name glommio: the executor, sockets and files.
const IO_LAYERS: &[&str] = &["server", "journal", "redis", "store", "jobs"];

/// One rule broken, with where.
#[derive(Debug, PartialEq, Eq)]
struct Violation {
    file: String,
    line: usize,
    problem: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.problem)
    }
}

/// "a, b and c".
fn io_layers_named() -> String {
    match IO_LAYERS.split_last() {
        Some((last, [])) => last.to_string(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        None => String::new(),
    }
}

fn rank(layer: &str) -> Option<usize> {
    LAYERS.iter().position(|l| *l == layer)
}

/// The layer of a file given by its path under `src/`; `None` for the
/// crate roots.
fn layer_of(relative: &str) -> Option<&str> {
    let first = relative.split('/').next()?;
    let layer = first.strip_suffix(".rs").unwrap_or(first);
    (layer != "lib" && layer != "main").then_some(layer)
}

/// The code of a line without its comment (string contents are kept: no
/// layer name appears in one).
fn code_of(line: &str) -> &str {
    match line.find("//") {
        Some(i) => &line[..i],
        None => line,
    }
}

/// The layers a line of code imports through `crate::<layer>`.
fn imported_layers(code: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let preceded_by_ident = rest[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_');
        let after = &rest[i + "crate::".len()..];
        let end = after
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        if !preceded_by_ident && end > 0 {
            found.push(&after[..end]);
        }
        rest = &after[end..];
    }
    found
}

/// Checks one file's text against the layer rules.
fn check_file(relative: &str, text: &str) -> Vec<Violation> {
    let mut violations = Vec::new();
    let Some(layer) = layer_of(relative) else {
        return violations;
    };
    let Some(own) = rank(layer) else {
        violations.push(Violation {
            file: relative.to_string(),
            line: 1,
            problem: format!("module `{layer}` is in no layer; add it to LAYERS and to docs/ARCHITECTURE.md"),
        });
        return violations;
    };
    for (index, line) in text.lines().enumerate() {
        let code = code_of(line);
        let mut violation = |problem: String| {
            violations.push(Violation {
                file: relative.to_string(),
                line: index + 1,
                problem,
            })
        };
        for imported in imported_layers(code) {
            match rank(imported) {
                Some(r) if r > own => violation(format!(
                    "`{layer}` imports `{imported}`, a layer above it (layers, lowest first: {})",
                    LAYERS.join(" < ")
                )),
                Some(_) => {}
                None => violation(format!("`{layer}` imports `{imported}`, which is in no layer")),
            }
        }
        if code.contains("glommio") && !IO_LAYERS.contains(&layer) {
            violation(format!(
                "`{layer}` names glommio; only {} may (the executor stays swappable)",
                io_layers_named()
            ));
        }
    }
    violations
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_import_points_down() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    assert!(
        files.len() > 30,
        "found only {} files under {}",
        files.len(),
        src.display()
    );
    let mut violations = Vec::new();
    for path in &files {
        let relative = path
            .strip_prefix(&src)
            .expect("under src")
            .to_string_lossy()
            .replace('\\', "/");
        let text = std::fs::read_to_string(path).expect("a readable source file");
        violations.extend(check_file(&relative, &text));
    }
    let report: Vec<String> = violations.iter().map(|v| format!("src/{v}")).collect();
    assert!(report.is_empty(), "layering broken:\n{}", report.join("\n"));
}

#[test]
fn every_layer_exists() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for layer in LAYERS {
        let exists = src.join(layer).is_dir() || src.join(format!("{layer}.rs")).is_file();
        assert!(exists, "layer `{layer}` has no src/{layer}/ or src/{layer}.rs");
    }
}

/// The checker itself, on made-up files: it must catch what it is for.
#[test]
fn checker_finds_what_it_should() {
    type Case<'a> = (&'a str, &'a str, &'a [(usize, &'a str)]);
    let table: &[Case] = &[
        (
            "trading/host.rs",
            "use crate::auth::Scopes;\nuse crate::json::JsonWriter;\n",
            &[],
        ),
        (
            "trading/host.rs",
            "use crate::auth::Scopes;\nuse crate::api::user::RestReply;\n",
            &[(2, "`trading` imports `api`, a layer above it")],
        ),
        (
            "http.rs",
            "fn f() { let _ = crate::server::shard::Shard::new(); }\n",
            &[(1, "`http` imports `server`, a layer above it")],
        ),
        ("streams/mod.rs", "// see crate::server::publish\n", &[]),
        (
            "api/mod.rs",
            "use glommio::net::TcpStream;\n",
            &[(
                1,
                "`api` names glommio; only server, journal, redis, store and jobs may",
            )],
        ),
        (
            "server/conn.rs",
            "use glommio::net::TcpStream;\nuse crate::api::Reply;\n",
            &[],
        ),
        ("journal/writer.rs", "use glommio::io::DmaFile;\n", &[]),
        (
            "limits.rs",
            "use crate::nowhere::Thing;\n",
            &[(1, "`limits` imports `nowhere`, which is in no layer")],
        ),
        ("newthing.rs", "\n", &[(1, "module `newthing` is in no layer")]),
        ("lib.rs", "pub mod server;\nuse crate::server::shard;\n", &[]),
        ("api/user.rs", "let x = mycrate::server::f();\n", &[]),
    ];
    for (file, text, expected) in table {
        let found = check_file(file, text);
        let got: Vec<(usize, bool)> = found
            .iter()
            .zip(expected.iter())
            .map(|(v, (line, start))| (v.line, v.problem.starts_with(start) && v.line == *line))
            .collect();
        assert_eq!(found.len(), expected.len(), "{file}: {text:?} gave {found:?}");
        assert!(
            got.iter().all(|(_, ok)| *ok),
            "{file}: {text:?} gave {found:?}, expected {expected:?}"
        );
    }
}

/// The configuration keys that are limits, in the order of the `KEYS`
/// table of src/config.rs: a name ending in `_max` or holding `timeout`.
fn configured_limits(config: &str) -> Vec<&str> {
    let (_, after) = config
        .split_once("const KEYS: &[Key] = &[")
        .expect("src/config.rs has its KEYS table");
    let (keys, _) = after.split_once("\n];").expect("the KEYS table ends");
    keys.lines()
        .filter_map(|line| line.trim().strip_prefix("name: \"")?.strip_suffix("\","))
        .filter(|name| name.ends_with("_max") || name.contains("timeout"))
        .collect()
}

/// The text under `heading`, up to the next `## ` heading.
fn section<'a>(doc: &'a str, heading: &str) -> Option<&'a str> {
    let start = doc.find(&format!("\n{heading}\n"))? + 1 + heading.len();
    let rest = &doc[start..];
    Some(rest.find("\n## ").map_or(rest, |end| &rest[..end]))
}

#[test]
fn every_configured_limit_is_in_the_resource_limits_table() {
    let config = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/config.rs")).expect("src/config.rs");
    let limits = configured_limits(&config);
    assert!(
        limits.len() >= 41,
        "found only {} limit keys in src/config.rs: {limits:?}",
        limits.len()
    );
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/ARCHITECTURE.md"))
        .expect("docs/ARCHITECTURE.md");
    let table = section(&doc, "## Resource limits").expect("docs/ARCHITECTURE.md has a section \"## Resource limits\"");
    let missing: Vec<&str> = limits
        .iter()
        .copied()
        .filter(|key| {
            let row = format!("| `{key}` |");
            !table.lines().any(|line| line.starts_with(&row))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "limits of src/config.rs without a row in the \"## Resource limits\" table of docs/ARCHITECTURE.md:\n{}",
        missing.join("\n")
    );
}
