//! Lua scripts run by their SHA (`EVALSHA`): loaded once per shard
//! (`SCRIPT LOAD`) and again when Redis lost them (`NOSCRIPT`, after a
//! restart or `SCRIPT FLUSH`), the call then retried once.

use super::{Redis, RedisError, Reply};
use std::cell::RefCell;

/// A Lua script run by its SHA, loaded on first use and again when Redis
/// lost it.
pub(crate) struct Script {
    source: &'static str,
    sha: RefCell<Option<String>>,
}

impl Script {
    pub(crate) const fn new(source: &'static str) -> Script {
        Script {
            source,
            sha: RefCell::new(None),
        }
    }

    /// Runs the script on `keys` and `args`.
    pub(crate) async fn run(&self, redis: &Redis, keys: &[&str], args: &[String]) -> Result<Reply, RedisError> {
        let numkeys = keys.len().to_string();
        for attempt in 0..2 {
            // Not matched on the borrow itself: it would live across the load.
            let cached = self.sha.borrow().clone();
            let sha = match cached {
                Some(sha) => sha,
                None => self.load(redis).await?,
            };
            let mut words: Vec<&[u8]> = Vec::with_capacity(3 + keys.len() + args.len());
            words.extend([b"EVALSHA".as_slice(), sha.as_bytes(), numkeys.as_bytes()]);
            words.extend(keys.iter().map(|k| k.as_bytes()));
            words.extend(args.iter().map(|a| a.as_bytes()));
            match redis.call(&words).await? {
                Reply::Error(e) if e.starts_with("NOSCRIPT") && attempt == 0 => {
                    self.sha.borrow_mut().take();
                }
                reply => return Ok(reply),
            }
        }
        Err(RedisError::Protocol("the script was lost twice".into()))
    }

    async fn load(&self, redis: &Redis) -> Result<String, RedisError> {
        match redis.call(&[b"SCRIPT", b"LOAD", self.source.as_bytes()]).await? {
            Reply::Bulk(sha) => {
                let sha = String::from_utf8_lossy(&sha).into_owned();
                *self.sha.borrow_mut() = Some(sha.clone());
                Ok(sha)
            }
            other => Err(RedisError::Protocol(format!("SCRIPT LOAD answered {other:?}"))),
        }
    }
}
