//! Webhooks: an account may register an HTTP URL through the admin API
//! (`PUT /admin/v1/users/{id}/webhook`); every fill of the account (its
//! executionReport with `x` TRADE and the outboundAccountPosition that
//! follows) and every deposit or withdrawal (balanceUpdate and
//! outboundAccountPosition) is then POSTed to it as the JSON the user data
//! stream sends, with `X-Tradsys-Signature` (hex HMAC-SHA256 of the body
//! with the webhook's secret) and `X-Tradsys-Event-Id`.
//!
//! The registrations of a shard's users live in its memory and in
//! `shard-<n>/webhooks.json` (written beside, synced, renamed on every
//! change). Deliveries are background jobs (`jobs::webhook`): in order per
//! account, retried with backoff, a dead letter after the last attempt.
//! Orders placed or cancelled (funds moving between free and locked) are
//! not sent. `http://` and `https://` URLs (see `jobs::webhook`).

use crate::binance;
use crate::http::HttpError;
use crate::jobs::webhook::Delivery;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use tradsys_engine::order::UserId;

/// The file of a shard's registrations, in its directory.
pub(crate) const WEBHOOKS_FILE: &str = "webhooks.json";

/// One account's webhook.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Hook {
    pub(crate) url: String,
    pub(crate) secret: String,
}

/// A shard's registrations.
pub(crate) struct Webhooks {
    hooks: BTreeMap<UserId, Hook>,
    path: PathBuf,
    /// Events made so far by this process (the ids' last part).
    seq: u64,
    /// This process's start, in the ids: unique over restarts.
    epoch_us: u64,
}

impl Webhooks {
    /// No registrations, kept in `dir` once there are.
    pub(crate) fn empty(dir: &Path) -> Webhooks {
        Webhooks {
            hooks: BTreeMap::new(),
            path: dir.join(WEBHOOKS_FILE),
            seq: 0,
            epoch_us: crate::clock::now_micros(),
        }
    }

    /// The registrations in `dir` (none when the file is not there).
    pub(crate) fn open(dir: &Path) -> Result<Webhooks, String> {
        let path = dir.join(WEBHOOKS_FILE);
        let hooks = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        Ok(Webhooks {
            hooks,
            path,
            seq: 0,
            epoch_us: crate::clock::now_micros(),
        })
    }

    pub(crate) fn get(&self, user: UserId) -> Option<&Hook> {
        self.hooks.get(&user)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.hooks.is_empty()
    }

    /// Registers (or replaces) `user`'s webhook, kept on disk before it
    /// answers.
    pub(crate) fn set(&mut self, user: UserId, hook: Hook) -> Result<(), HttpError> {
        let before = self.hooks.insert(user, hook);
        self.save().inspect_err(|_| {
            match before {
                Some(before) => self.hooks.insert(user, before),
                None => self.hooks.remove(&user),
            };
        })
    }

    /// Removes `user`'s webhook; false when there was none.
    pub(crate) fn delete(&mut self, user: UserId) -> Result<bool, HttpError> {
        let Some(before) = self.hooks.remove(&user) else {
            return Ok(false);
        };
        self.save().inspect_err(|_| {
            self.hooks.insert(user, before);
        })?;
        Ok(true)
    }

    fn save(&self) -> Result<(), HttpError> {
        let failed = |e: String| HttpError::new(500, binance::UNKNOWN, format!("Webhooks not saved: {e}"));
        let bytes = serde_json::to_vec(&self.hooks).map_err(|e| failed(e.to_string()))?;
        let fresh = self.path.with_extension("json.new");
        let written = std::fs::File::create(&fresh).and_then(|mut file| {
            file.write_all(&bytes)?;
            file.sync_data()
        });
        written.map_err(|e| failed(format!("{}: {e}", fresh.display())))?;
        std::fs::rename(&fresh, &self.path).map_err(|e| failed(format!("{}: {e}", self.path.display())))
    }

    /// `body` (an event of `user`) as a delivery to the user's webhook, if
    /// it has one.
    pub(crate) fn delivery(&mut self, user: UserId, body: Vec<u8>) -> Option<Delivery> {
        let hook = self.hooks.get(&user)?;
        let body = String::from_utf8(body).ok()?;
        self.seq += 1;
        Some(Delivery {
            user,
            url: hook.url.clone(),
            id: format!("{user}-{:x}-{}", self.epoch_us, self.seq),
            signature: crate::auth::sign(hook.secret.as_bytes(), body.as_bytes()),
            body,
        })
    }
}
