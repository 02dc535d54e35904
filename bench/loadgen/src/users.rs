//! Benchmark users: created through the admin API, funded, given a key, and
//! written to a users file that the other subcommands read.
//!
//! The users file has one user per line, tab-separated:
//! `userId  shard  apiKey  secretKey`, where `shard` is the shard that owns
//! the user (`tradsys_engine::account::owner_of`). The secret is in the file
//! because the benchmark signs with it; the file lives in the benchmark's
//! temp directory and dies with it.

use std::fs;
use std::io;

use serde_json::Value;
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

#[derive(Clone, Debug)]
pub struct User {
    pub id: u64,
    pub shard: u32,
    pub api_key: String,
    pub secret: String,
}

/// Creates users until each of the `shards` shards owns `per_shard` of
/// them; users beyond that are left unused (and unfunded). Users that will
/// not trade (`fund` false) get a key but no deposits.
pub fn setup(admin: &str, token: &str, shards: u32, per_shard: usize, fund: bool) -> io::Result<Vec<User>> {
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
        let key = admin_post(
            &mut client,
            token,
            &format!("/admin/v1/users/{id}/keys"),
            "{\"scopes\":[\"READ\",\"TRADE\",\"USER_STREAM\"]}",
        )?;
        let field = |name: &str| {
            key[name]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| io::Error::other(format!("no {name} in key reply")))
        };
        users.push(User {
            id,
            shard,
            api_key: field("apiKey")?,
            secret: field("secretKey")?,
        });
    }
    Ok(users)
}

fn admin_post(client: &mut Client, token: &str, path: &str, body: &str) -> io::Result<Value> {
    let resp = client.request(
        "POST",
        path,
        &[("X-Admin-Token", token)],
        body.as_bytes(),
        "application/json",
    )?;
    let text = String::from_utf8_lossy(&resp.body);
    if resp.status != 200 {
        return Err(io::Error::other(format!("POST {path}: status {}: {text}", resp.status)));
    }
    serde_json::from_str(&text).map_err(|e| io::Error::other(format!("POST {path}: {e}: {text}")))
}

pub fn write(path: &str, users: &[User]) -> io::Result<()> {
    let text: String = users
        .iter()
        .map(|u| format!("{}\t{}\t{}\t{}\n", u.id, u.shard, u.api_key, u.secret))
        .collect();
    fs::write(path, text)
}

pub fn read(path: &str) -> io::Result<Vec<User>> {
    let text = fs::read_to_string(path)?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            let bad = || io::Error::other(format!("{path}: bad line {line:?}"));
            if f.len() != 4 {
                return Err(bad());
            }
            Ok(User {
                id: f[0].parse().map_err(|_| bad())?,
                shard: f[1].parse().map_err(|_| bad())?,
                api_key: f[2].to_string(),
                secret: f[3].to_string(),
            })
        })
        .collect()
}
