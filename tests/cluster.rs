//! `tradsys cluster check`: the shipped map's placement, and one clear
//! line (exit code 2) for a map that cannot work.

use std::process::Command;

const MARKETS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/shards/markets.toml");
const MAP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/shards/cluster.toml");

fn check(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tradsys"))
        .args(["cluster", "check"])
        .args(args)
        .output()
        .expect("tradsys runs");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn the_shipped_map_is_valid_and_says_who_owns_what() {
    let (code, stdout, stderr) = check(&["--cluster", MAP, "--markets", MARKETS]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout, include_str!("fixtures/cluster-check.txt"));
}

#[test]
fn a_map_with_an_unowned_slot_is_refused_with_one_line() {
    let dir = std::env::temp_dir().join(format!("tradsys-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let map = dir.join("cluster.toml");
    let text = std::fs::read_to_string(MAP).expect("the shipped map");
    std::fs::write(&map, text.replace("\"10923-16383\"", "\"10923-16382\"")).expect("the map written");
    let (code, stdout, stderr) = check(&[&format!("--cluster={}", map.display()), "--markets", MARKETS]);
    assert_eq!(code, Some(2));
    assert_eq!(stdout, "");
    assert_eq!(
        stderr,
        format!(
            "tradsys: invalid configuration: {}: cluster map: slot 16383 is owned by no instance\n",
            map.display()
        )
    );
    let (code, _, stderr) = check(&["--clusters", MAP]);
    assert_eq!(code, Some(2));
    assert_eq!(
        stderr,
        "tradsys: invalid configuration: unknown option --clusters (see --help)\n"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
