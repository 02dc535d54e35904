//! Benchmark users: created through the admin API, funded, given a key, and
//! written to a users file that the other subcommands read.
//!
//! The users file has one user per line, tab-separated:
//! `userId  shard  apiKey  secretKey`, where `shard` is the shard that owns
//! the user (`tradsys_engine::account::owner_of`) and `apiKey`/`secretKey`
//! are an HMAC-SHA256 key. A user that also has an Ed25519 key (`setup
//! --ed25519 1`, for the WebSocket API's `session.logon`, which takes no
//! other kind) has two more columns, `ed25519ApiKey  ed25519SeedHex`: that
//! key's API key and the 32-byte seed of its private half, in hex. The
//! server only ever sees the public half. Secrets are in the file because
//! the benchmark signs with them; the file lives in the benchmark's temp
//! directory and dies with it.

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Read};

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::EncodePublicKey;
use ed25519_dalek::SigningKey;
use serde_json::{json, Value};
use tradsys_engine::account::owner_of;

use crate::http::Client;

/// Users the setup creates at most before it gives up trying to fill every
/// shard, beyond those it needs (ownership is a hash, so extra users are
/// normal, but not more than the needed ones again plus this).
const SETUP_USERS_EXTRA_MAX: usize = 4096;

/// Deposits every benchmark user gets: enough for hours of trading at the
/// prices and quantities of `orders::MARKETS`.
const DEPOSITS: [(&str, &str); 5] = [
    ("USDT", "1000000000"),
    ("BTC", "1000000"),
    ("ETH", "1000000"),
    ("EUR", "1000000000"),
    ("USD", "1000000000"),
];

/// Bytes of an Ed25519 seed (the private key).
const ED25519_SEED_BYTES: usize = 32;
/// The scopes of every benchmark key.
const KEY_SCOPES: [&str; 3] = ["READ", "TRADE", "USER_STREAM"];

#[derive(Clone, Debug)]
pub struct User {
    pub id: u64,
    pub shard: u32,
    /// The HMAC-SHA256 key every user has.
    pub api_key: String,
    pub secret: String,
    /// The Ed25519 key, for users set up with one.
    pub ed25519: Option<Ed25519Key>,
}

/// An Ed25519 API key: the server's name for it and its private half.
#[derive(Clone, Debug)]
pub struct Ed25519Key {
    pub api_key: String,
    pub signing: SigningKey,
}

/// Creates users until each of the `shards` shards owns `per_shard` of
/// them; users beyond that are left unused (and unfunded). Users that will
/// not trade (`fund` false) get keys but no deposits. Every user gets an
/// HMAC-SHA256 key, and with `ed25519` an Ed25519 key as well, whose
/// private half is made here from /dev/urandom.
pub fn setup(
    admin: &str,
    token: &str,
    shards: u32,
    per_shard: usize,
    fund: bool,
    ed25519: bool,
) -> io::Result<Vec<User>> {
    let mut client = Client::connect(admin)?;
    let mut counts = vec![0usize; shards as usize];
    let mut users = Vec::new();
    let mut created = 0;
    while counts.iter().any(|&c| c < per_shard) {
        if created >= 2 * per_shard * shards as usize + SETUP_USERS_EXTRA_MAX {
            return Err(io::Error::other("too many users created without filling every shard"));
        }
        created += 1;
        let reply = admin_post(
            &mut client,
            token,
            "/admin/v1/users",
            &format!("{{\"name\":\"bench{created}\"}}"),
        )?;
        let id = reply["userId"]
            .as_u64()
            .ok_or_else(|| io::Error::other(format!("no userId in {reply}")))?;
        let shard = owner_of(id, shards);
        if counts[shard as usize] >= per_shard {
            continue;
        }
        counts[shard as usize] += 1;
        let deposits: &[(&str, &str)] = if fund { &DEPOSITS } else { &[] };
        for (asset, amount) in deposits {
            let body = format!("{{\"asset\":\"{asset}\",\"amount\":\"{amount}\"}}");
            admin_post(&mut client, token, &format!("/admin/v1/users/{id}/deposits"), &body)?;
        }
        let keys_path = format!("/admin/v1/users/{id}/keys");
        let key = admin_post(
            &mut client,
            token,
            &keys_path,
            &json!({ "scopes": KEY_SCOPES }).to_string(),
        )?;
        let ed25519 = if ed25519 {
            let signing = SigningKey::from_bytes(&random_seed()?);
            let public_pem = signing
                .verifying_key()
                .to_public_key_pem(LineEnding::LF)
                .map_err(|e| io::Error::other(format!("Ed25519 public key PEM: {e}")))?;
            let body = json!({ "scopes": KEY_SCOPES, "type": "ED25519", "publicKey": public_pem });
            let reply = admin_post(&mut client, token, &keys_path, &body.to_string())?;
            Some(Ed25519Key {
                api_key: reply_field(&reply, "apiKey")?,
                signing,
            })
        } else {
            None
        };
        users.push(User {
            id,
            shard,
            api_key: reply_field(&key, "apiKey")?,
            secret: reply_field(&key, "secretKey")?,
            ed25519,
        });
    }
    Ok(users)
}

/// A string field of a key reply.
fn reply_field(reply: &Value, name: &str) -> io::Result<String> {
    reply[name]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| io::Error::other(format!("no {name} in key reply {reply}")))
}

/// A fresh Ed25519 seed from the kernel's random source.
fn random_seed() -> io::Result<[u8; ED25519_SEED_BYTES]> {
    let mut seed = [0u8; ED25519_SEED_BYTES];
    fs::File::open("/dev/urandom")?.read_exact(&mut seed)?;
    Ok(seed)
}

/// How many times a call the server shed for overload is sent again.
const SHED_RETRIES: usize = 30;

/// A POST to the admin API. A call shed for overload (503 with `Retry-After`,
/// before the server read it: nothing ran) is sent again a second later,
/// as the answer asks: a server that has just started may be busy catching
/// up.
fn admin_post(client: &mut Client, token: &str, path: &str, body: &str) -> io::Result<Value> {
    let mut tries = 0;
    let resp = loop {
        let resp = client.request(
            "POST",
            path,
            &[("X-Admin-Token", token)],
            body.as_bytes(),
            "application/json",
        )?;
        let shed = resp.status == 503 && String::from_utf8_lossy(&resp.body).contains("overloaded");
        if !shed || tries == SHED_RETRIES {
            break resp;
        }
        tries += 1;
        std::thread::sleep(std::time::Duration::from_secs(1));
        // The server may close a connection whose request it shed.
        client.reconnect()?;
    };
    let text = String::from_utf8_lossy(&resp.body);
    if resp.status != 200 {
        return Err(io::Error::other(format!("POST {path}: status {}: {text}", resp.status)));
    }
    serde_json::from_str(&text).map_err(|e| io::Error::other(format!("POST {path}: {e}: {text}")))
}

pub fn write(path: &str, users: &[User]) -> io::Result<()> {
    fs::write(path, render(users))
}

/// The users file's text: 4 columns, or 6 for a user with an Ed25519 key.
fn render(users: &[User]) -> String {
    let mut text = String::with_capacity(users.len() * 256);
    for u in users {
        let _ = write!(text, "{}\t{}\t{}\t{}", u.id, u.shard, u.api_key, u.secret);
        if let Some(key) = &u.ed25519 {
            let _ = write!(text, "\t{}\t{}", key.api_key, hex(&key.signing.to_bytes()));
        }
        text.push('\n');
    }
    text
}

pub fn read(path: &str) -> io::Result<Vec<User>> {
    let text = fs::read_to_string(path)?;
    parse(&text).map_err(io::Error::other)
}

/// The users of a users file's text; lines of 4 or 6 columns may be mixed.
fn parse(text: &str) -> Result<Vec<User>, String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            let bad = |why: &str| format!("bad line {line:?}: {why}");
            if f.len() != 4 && f.len() != 6 {
                return Err(bad("4 or 6 tab-separated columns expected"));
            }
            let ed25519 = if f.len() == 6 {
                let seed = unhex_seed(f[5]).ok_or_else(|| bad("the Ed25519 seed is not 64 hex digits"))?;
                Some(Ed25519Key {
                    api_key: f[4].to_string(),
                    signing: SigningKey::from_bytes(&seed),
                })
            } else {
                None
            };
            Ok(User {
                id: f[0].parse().map_err(|_| bad("userId is not a number"))?,
                shard: f[1].parse().map_err(|_| bad("shard is not a number"))?,
                api_key: f[2].to_string(),
                secret: f[3].to_string(),
                ed25519,
            })
        })
        .collect()
}

/// Lowercase hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(2 * bytes.len());
    for b in bytes {
        let _ = write!(text, "{b:02x}");
    }
    text
}

/// The seed written by [`hex`]: exactly 64 hex digits.
fn unhex_seed(text: &str) -> Option<[u8; ED25519_SEED_BYTES]> {
    if text.len() != 2 * ED25519_SEED_BYTES || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut seed = [0u8; ED25519_SEED_BYTES];
    for (i, byte) in seed.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_file_round_trips_with_and_without_ed25519_keys() {
        let seed: [u8; ED25519_SEED_BYTES] = std::array::from_fn(|i| (i * 7 + 1) as u8);
        let users = vec![
            User {
                id: 3,
                shard: 1,
                api_key: "HKEY".to_string(),
                secret: "HSECRET".to_string(),
                ed25519: Some(Ed25519Key {
                    api_key: "EKEY".to_string(),
                    signing: SigningKey::from_bytes(&seed),
                }),
            },
            User {
                id: 4,
                shard: 0,
                api_key: "H2".to_string(),
                secret: "S2".to_string(),
                ed25519: None,
            },
        ];
        let text = render(&users);
        let first = text.lines().next().unwrap_or_default();
        assert_eq!(first.split('\t').count(), 6);
        assert_eq!(first.split('\t').nth(5), Some(hex(&seed).as_str()));
        assert_eq!(text.lines().nth(1), Some("4\t0\tH2\tS2"));
        let back = parse(&text).expect("the rendered file parses");
        assert_eq!(back.len(), 2);
        assert_eq!((back[0].id, back[0].shard, back[0].api_key.as_str()), (3, 1, "HKEY"));
        let key = back[0].ed25519.as_ref().expect("the first user has an Ed25519 key");
        assert_eq!(key.api_key, "EKEY");
        assert_eq!(key.signing.to_bytes(), seed);
        assert!(back[1].ed25519.is_none());
    }

    #[test]
    fn bad_lines_are_refused() {
        let seed = "ab".repeat(32);
        for line in [
            "1\t0\tK\tS\tE".to_string(),
            "1\t0\tK".to_string(),
            format!("1\t0\tK\tS\tE\t{}", &seed[1..]),
            format!("1\t0\tK\tS\tE\t{}zz", &seed[2..]),
            format!("x\t0\tK\tS\tE\t{seed}"),
        ] {
            assert!(parse(&line).is_err(), "{line}");
        }
        assert!(parse(&format!("1\t0\tK\tS\tE\t{seed}\n\n")).is_ok());
    }
}
