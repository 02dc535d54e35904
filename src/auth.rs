//! Request authentication for SIGNED (TRADE, USER_DATA) and USER_STREAM
//! endpoints, the Binance Spot way: an API key in `X-MBX-APIKEY`, an
//! HMAC-SHA256 hex `signature` over the query string followed by the body,
//! and a `timestamp` that must fall inside `recvWindow`.
//!
//! This module owns the per-shard API key registry ([`KeyStore`]), key
//! generation from caller-supplied entropy, signature extraction and
//! verification, and the timing check. It does no I/O and reads no clock:
//! the caller passes the time and the random bytes, so every decision here
//! replays exactly in tests. The user shard calls [`authenticate`] once per
//! secured request, before rate limits on orders and before any state moves.
//!
//! **Invariant:** a secret never leaves a [`KeyRecord`] except as an HMAC key;
//! no `Debug` or `Display` output of this module contains one.
//!
//! **Invariant:** signatures are compared in constant time (`hmac`'s
//! `verify_slice`, built on `subtle`), so response timing says nothing about
//! how much of a forged signature was right.

use crate::binance;
use crate::http::HttpError;
use hmac::{Hmac, Mac};
#[cfg(test)]
use sha2::Digest;
use sha2::Sha256;
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use tradsys_engine::order::UserId;

type HmacSha256 = Hmac<Sha256>;

/// `recvWindow` when the client sends none (Binance's default).
pub(crate) const RECV_WINDOW_MS_DEFAULT: u64 = 5_000;
/// The largest `recvWindow` Binance accepts.
pub const RECV_WINDOW_MS_MAX: u64 = 60_000;
/// A timestamp this far ahead of the server's clock, or more, is rejected.
pub(crate) const TIMESTAMP_AHEAD_MS_MAX: u64 = 1_000;
/// API keys are 1 to this many ASCII letters and digits (Binance's are 64).
pub(crate) const API_KEY_BYTES_MAX: usize = 64;
/// Length of generated API keys and secrets.
pub(crate) const GENERATED_KEY_CHARS: usize = 64;
/// Keys one shard's [`KeyStore`] holds unless configured otherwise.
pub(crate) const KEY_STORE_KEYS_MAX_DEFAULT: usize = 1 << 20;
/// Binance accepts `timestamp` in milliseconds or microseconds; any value at
/// or above this is read as microseconds (it would be the year 5138 in ms).
const TIMESTAMP_MICROS_MIN: u64 = 100_000_000_000_000;
/// Digits of a `timestamp`; more cannot be a time and could overflow.
const TIMESTAMP_DIGITS_MAX: usize = 17;

const _: () = assert!(RECV_WINDOW_MS_DEFAULT <= RECV_WINDOW_MS_MAX);
const _: () = assert!(GENERATED_KEY_CHARS <= API_KEY_BYTES_MAX);

/// What an API key may do. USER_DATA endpoints need `Read`, TRADE endpoints
/// need `Trade`, listen-key endpoints need `UserStream`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Scope {
    Read,
    Trade,
    UserStream,
}

impl Scope {
    pub(crate) const ALL: [Scope; 3] = [Scope::Read, Scope::Trade, Scope::UserStream];

    /// Parses the permission names used in configuration and the admin API.
    pub(crate) fn parse(name: &str) -> Option<Scope> {
        match name {
            "READ" => Some(Scope::Read),
            "TRADE" => Some(Scope::Trade),
            "USER_STREAM" => Some(Scope::UserStream),
            _ => None,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Scope::Read => "READ",
            Scope::Trade => "TRADE",
            Scope::UserStream => "USER_STREAM",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Scope::Read => 1,
            Scope::Trade => 2,
            Scope::UserStream => 4,
        }
    }
}

/// A set of [`Scope`]s.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Scopes(u8);

impl Scopes {
    pub(crate) const NONE: Scopes = Scopes(0);
    pub(crate) const ALL: Scopes = Scopes(1 | 2 | 4);

    /// The set as bits, for the journal.
    pub(crate) fn bits(self) -> u8 {
        self.0
    }

    /// A set from `bits`; unknown bits are dropped.
    pub(crate) fn from_bits(bits: u8) -> Scopes {
        Scopes(bits & Scopes::ALL.0)
    }

    pub(crate) fn with(self, scope: Scope) -> Scopes {
        Scopes(self.0 | scope.bit())
    }

    pub(crate) fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    /// Parses a comma-separated list such as `READ,TRADE`; `None` if any
    /// name is unknown. Blanks around names are ignored.
    #[cfg(test)]
    pub(crate) fn parse(list: &str) -> Option<Scopes> {
        list.split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .try_fold(Scopes::NONE, |set, name| Some(set.with(Scope::parse(name)?)))
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = Scope::ALL.iter().filter(|s| self.contains(**s)).map(|s| s.name());
        f.debug_set().entries(names).finish()
    }
}

/// One API key's owner, secret and permissions.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct KeyRecord {
    pub(crate) user_id: u64,
    /// The HMAC key. Kept out of `Debug`: logs must never carry it.
    pub(crate) secret: String,
    pub(crate) scopes: Scopes,
    pub(crate) revoked: bool,
}

impl fmt::Debug for KeyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRecord")
            .field("user_id", &self.user_id)
            .field("secret", &"<redacted>")
            .field("scopes", &self.scopes)
            .field("revoked", &self.revoked)
            .finish()
    }
}

/// Why a key could not be stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum KeyStoreError {
    #[error("API key must be 1 to {API_KEY_BYTES_MAX} ASCII letters or digits")]
    BadFormat,
    #[error("API key already exists")]
    Duplicate,
    #[error("key store is full ({0} keys)")]
    Full(usize),
}

/// The API keys of the users one shard owns. Revoked keys stay (so that a
/// revoked key reads as revoked, not unknown, in audits) and count against
/// the bound until removed.
pub struct KeyStore {
    keys: HashMap<String, KeyRecord>,
    keys_max: usize,
}

impl KeyStore {
    pub(crate) fn new(keys_max: usize) -> KeyStore {
        KeyStore {
            keys: HashMap::new(),
            keys_max,
        }
    }

    pub(crate) fn insert(&mut self, api_key: String, record: KeyRecord) -> Result<(), KeyStoreError> {
        if !api_key_format_ok(api_key.as_bytes()) {
            return Err(KeyStoreError::BadFormat);
        }
        if self.keys.contains_key(&api_key) {
            return Err(KeyStoreError::Duplicate);
        }
        if self.keys.len() >= self.keys_max {
            return Err(KeyStoreError::Full(self.keys_max));
        }
        self.keys.insert(api_key, record);
        Ok(())
    }

    /// Marks the key revoked; `false` if it is unknown.
    pub(crate) fn revoke(&mut self, api_key: &str) -> bool {
        match self.keys.get_mut(api_key) {
            Some(record) => {
                record.revoked = true;
                true
            }
            None => false,
        }
    }

    #[cfg(test)]
    pub(crate) fn remove(&mut self, api_key: &str) -> Option<KeyRecord> {
        self.keys.remove(api_key)
    }

    /// The record of `api_key` as sent by a client, revoked or not.
    pub(crate) fn lookup(&self, api_key: &[u8]) -> Option<&KeyRecord> {
        std::str::from_utf8(api_key).ok().and_then(|key| self.keys.get(key))
    }

    /// Every key with its record, in key order (for snapshots).
    pub(crate) fn entries(&self) -> Vec<(&String, &KeyRecord)> {
        let mut entries: Vec<_> = self.keys.iter().collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        entries
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }
}

impl Default for KeyStore {
    fn default() -> KeyStore {
        KeyStore::new(KEY_STORE_KEYS_MAX_DEFAULT)
    }
}

impl fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyStore")
            .field("keys", &self.keys.len())
            .field("keys_max", &self.keys_max)
            .finish()
    }
}

fn api_key_format_ok(api_key: &[u8]) -> bool {
    (1..=API_KEY_BYTES_MAX).contains(&api_key.len()) && api_key.iter().all(u8::is_ascii_alphanumeric)
}

#[cfg(test)]
const ALPHANUMERIC: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Derives a new (API key, secret) pair, each 64 ASCII letters and digits,
/// from 64 random bytes the caller read from the OS.
///
/// Both are expanded from all of `entropy` with SHA-256 under different
/// labels, so the public key says nothing about the secret. Bytes that would
/// bias the alphabet (≥ 248 = 4 × 62) are skipped rather than reduced.
#[cfg(test)]
pub(crate) fn generate_key_pair(entropy: &[u8; 64]) -> (String, String) {
    (
        expand_alphanumeric(b"tradsys api key", entropy),
        expand_alphanumeric(b"tradsys api secret", entropy),
    )
}

#[cfg(test)]
fn expand_alphanumeric(label: &[u8], entropy: &[u8; 64]) -> String {
    let unbiased_below = (256 / ALPHANUMERIC.len() * ALPHANUMERIC.len()) as u8;
    let mut out = String::with_capacity(GENERATED_KEY_CHARS);
    let mut block: u32 = 0;
    while out.len() < GENERATED_KEY_CHARS {
        let digest = Sha256::new()
            .chain_update(label)
            .chain_update(block.to_be_bytes())
            .chain_update(entropy)
            .finalize();
        let usable = digest.iter().filter(|&&b| b < unbiased_below);
        for &b in usable.take(GENERATED_KEY_CHARS - out.len()) {
            out.push(ALPHANUMERIC[usize::from(b) % ALPHANUMERIC.len()] as char);
        }
        block += 1;
    }
    out
}

/// An authentication failure, as Binance reports it.
///
/// No variant carries a key, a secret or a signature, so `Debug` and
/// `Display` cannot leak one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AuthError {
    /// No `X-MBX-APIKEY`, or not shaped like a key.
    #[error("API-key format invalid.")]
    ApiKeyFormat,
    /// Unknown or revoked key, or a key without the needed scope.
    #[error("Invalid API-key, IP, or permissions for action.")]
    ApiKeyRejected,
    #[error("Mandatory parameter '{0}' was not sent, was empty/null, or malformed.")]
    Mandatory(&'static str),
    #[error("Illegal characters found in parameter 'recvWindow'; legal range is '0 to 60000, up to 3 decimals'.")]
    RecvWindowMalformed,
    #[error("recvWindow must be less than 60000")]
    RecvWindowTooLarge,
    #[error("Timestamp for this request was 1000ms ahead of the server's time.")]
    TimestampAhead,
    #[error("Timestamp for this request is outside of the recvWindow.")]
    TimestampOutside,
    #[error("Signature for this request is not valid.")]
    BadSignature,
    /// `signature` sent more than once (query and body, or twice in one).
    #[error("Duplicate values for a parameter detected.")]
    DuplicateSignature,
}

impl AuthError {
    /// Binance's error code.
    pub(crate) fn code(&self) -> i32 {
        match self {
            AuthError::ApiKeyFormat => binance::BAD_API_KEY_FMT,
            AuthError::ApiKeyRejected => binance::REJECTED_MBX_KEY,
            AuthError::Mandatory(_) => binance::MANDATORY_PARAM_EMPTY_OR_MALFORMED,
            AuthError::RecvWindowMalformed => binance::ILLEGAL_CHARS,
            AuthError::RecvWindowTooLarge => binance::BAD_RECV_WINDOW,
            AuthError::TimestampAhead | AuthError::TimestampOutside => binance::INVALID_TIMESTAMP,
            AuthError::BadSignature => binance::INVALID_SIGNATURE,
            AuthError::DuplicateSignature => binance::TOO_MANY_PARAMETERS,
        }
    }

    /// The message clients see next to [`code`](Self::code).
    pub(crate) fn msg(&self) -> String {
        self.to_string()
    }

    /// The HTTP status: 401 for key problems, 400 for the request itself.
    pub(crate) fn status(&self) -> u16 {
        match self {
            AuthError::ApiKeyFormat | AuthError::ApiKeyRejected => 401,
            _ => 400,
        }
    }
}

impl From<AuthError> for HttpError {
    fn from(error: AuthError) -> HttpError {
        HttpError::new(error.status(), error.code(), error.msg())
    }
}

/// Splits a signed request into what was signed and the signature sent.
///
/// Binance signs the query string immediately followed by the body (no
/// separator), without the `signature` parameter itself. Clients append
/// `&signature=…` to whichever part they send last: binance-connector puts
/// everything in the query, even for POST; ccxt puts POST parameters in the
/// body. The pair is cut out together with one adjacent `&` (the one before
/// it, or after it when it comes first), which is what the client had before
/// appending it. The payload borrows when nothing needs joining.
pub(crate) fn signature_payload<'a>(query: &'a [u8], body: &'a [u8]) -> Result<(Cow<'a, [u8]>, String), AuthError> {
    let in_query = find_signature(query)?;
    let in_body = find_signature(body)?;
    let (payload, signature) = match (in_query, in_body) {
        (Some(_), Some(_)) => return Err(AuthError::DuplicateSignature),
        (None, None) => return Err(AuthError::Mandatory("signature")),
        (Some(found), None) => (join(found.without(query), body), found.value(query)),
        (None, Some(found)) => (join(query, found.without(body)), found.value(body)),
    };
    if signature.is_empty() {
        return Err(AuthError::Mandatory("signature"));
    }
    let signature = std::str::from_utf8(signature).map_err(|_| AuthError::BadSignature)?;
    Ok((payload, signature.to_owned()))
}

/// Where a `signature` pair sits in one part of the request.
#[derive(Clone, Copy)]
struct Found {
    /// The value after `signature=`; empty for a bare `signature`.
    value: (usize, usize),
    /// The pair and the one `&` removed with it.
    cut: (usize, usize),
}

impl Found {
    fn value(self, part: &[u8]) -> &[u8] {
        &part[self.value.0..self.value.1]
    }

    fn without(self, part: &[u8]) -> Cow<'_, [u8]> {
        if self.cut.0 == 0 {
            return Cow::Borrowed(&part[self.cut.1..]);
        }
        if self.cut.1 == part.len() {
            return Cow::Borrowed(&part[..self.cut.0]);
        }
        Cow::Owned([&part[..self.cut.0], &part[self.cut.1..]].concat())
    }
}

fn find_signature(part: &[u8]) -> Result<Option<Found>, AuthError> {
    const NAME: &[u8] = b"signature";
    let mut found = None;
    let mut start = 0;
    for pair in part.split(|&b| b == b'&') {
        let end = start + pair.len();
        let value_start = match pair.strip_prefix(NAME) {
            Some(b"") => Some(end),
            Some(rest) if rest.first() == Some(&b'=') => Some(start + NAME.len() + 1),
            _ => None,
        };
        if let Some(value_start) = value_start {
            if found.is_some() {
                return Err(AuthError::DuplicateSignature);
            }
            let cut = if start > 0 {
                (start - 1, end)
            } else {
                (start, (end + 1).min(part.len()))
            };
            found = Some(Found {
                value: (value_start, end),
                cut,
            });
        }
        start = end + 1;
    }
    Ok(found)
}

fn join<'a>(first: impl Into<Cow<'a, [u8]>>, second: impl Into<Cow<'a, [u8]>>) -> Cow<'a, [u8]> {
    let (first, second) = (first.into(), second.into());
    match (first.is_empty(), second.is_empty()) {
        (_, true) => first,
        (true, false) => second,
        (false, false) => Cow::Owned([first.as_ref(), second.as_ref()].concat()),
    }
}

/// The lowercase hex HMAC-SHA256 of `payload` under `secret`, as clients
/// compute it.
pub fn sign(secret: &[u8], payload: &[u8]) -> String {
    let mut mac = hmac_for(secret);
    mac.update(payload);
    let tag = mac.finalize().into_bytes();
    let mut out = String::with_capacity(tag.len() * 2);
    for b in tag {
        out.push(char::from(HEX_DIGITS[usize::from(b >> 4)]));
        out.push(char::from(HEX_DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Whether `signature_hex` (either case) is the HMAC-SHA256 of `payload`
/// under `secret`. The comparison takes the same time wherever the first
/// wrong byte is.
pub(crate) fn verify(secret: &[u8], payload: &[u8], signature_hex: &str) -> bool {
    let Some(tag) = decode_hex_32(signature_hex.as_bytes()) else {
        return false;
    };
    let mut mac = hmac_for(secret);
    mac.update(payload);
    mac.verify_slice(&tag).is_ok()
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

fn hmac_for(secret: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length (long ones are hashed first); this
    // constructor only fails for fixed-size MACs.
    match HmacSha256::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of every length"),
    }
}

fn decode_hex_32(hex: &[u8]) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let high = (pair[0] as char).to_digit(16)?;
        let low = (pair[1] as char).to_digit(16)?;
        *byte = (high * 16 + low) as u8;
    }
    Some(out)
}

/// Checks `timestamp` against the server's clock and `recvWindow`, exactly
/// as Binance does: accept when `timestamp < now + 1000 ms` and
/// `now - timestamp <= recvWindow`.
///
/// `timestamp` may be in milliseconds or microseconds, `recvWindow` in
/// milliseconds with up to three decimals; both are compared in
/// microseconds so neither loses precision.
pub(crate) fn check_timestamp(
    timestamp: Option<&str>,
    recv_window: Option<&str>,
    now_ms: u64,
) -> Result<(), AuthError> {
    let recv_window_us = parse_recv_window_us(recv_window)?;
    let timestamp_us = parse_timestamp_us(timestamp)?;
    let now_us = now_ms.saturating_mul(1_000);
    if timestamp_us >= now_us.saturating_add(TIMESTAMP_AHEAD_MS_MAX * 1_000) {
        return Err(AuthError::TimestampAhead);
    }
    if now_us.saturating_sub(timestamp_us) > recv_window_us {
        return Err(AuthError::TimestampOutside);
    }
    Ok(())
}

fn parse_timestamp_us(timestamp: Option<&str>) -> Result<u64, AuthError> {
    let missing = AuthError::Mandatory("timestamp");
    let digits = timestamp.ok_or(missing)?;
    if digits.is_empty() || digits.len() > TIMESTAMP_DIGITS_MAX || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(missing);
    }
    let value = digits.parse::<u64>().map_err(|_| missing)?;
    if value >= TIMESTAMP_MICROS_MIN {
        Ok(value)
    } else {
        Ok(value * 1_000)
    }
}

/// `recvWindow` in microseconds: digits, optionally a point and 1–3 more.
fn parse_recv_window_us(recv_window: Option<&str>) -> Result<u64, AuthError> {
    let Some(text) = recv_window else {
        return Ok(RECV_WINDOW_MS_DEFAULT * 1_000);
    };
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits_ok = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let fraction_ok = !text.contains('.') || (1..=3).contains(&fraction.len());
    if whole.is_empty() || whole.len() > 9 || !digits_ok(whole) || !digits_ok(fraction) || !fraction_ok {
        return Err(AuthError::RecvWindowMalformed);
    }
    let whole_ms: u64 = whole.parse().map_err(|_| AuthError::RecvWindowMalformed)?;
    let fraction_us: u64 = format!("{fraction:0<3}")
        .parse()
        .map_err(|_| AuthError::RecvWindowMalformed)?;
    let window_us = whole_ms * 1_000 + fraction_us;
    if window_us > RECV_WINDOW_MS_MAX * 1_000 {
        return Err(AuthError::RecvWindowTooLarge);
    }
    Ok(window_us)
}

/// One request's authentication inputs, taken from the framed request.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct AuthRequest<'a> {
    /// The `X-MBX-APIKEY` header value, if sent.
    pub(crate) api_key: Option<&'a [u8]>,
    /// The raw query string, without `?`, exactly as received.
    pub(crate) query: &'a [u8],
    /// The raw body, exactly as received.
    pub(crate) body: &'a [u8],
    /// The decoded `timestamp` parameter (the query's if both carry it).
    pub(crate) timestamp: Option<&'a str>,
    /// The decoded `recvWindow` parameter (the query's if both carry it).
    pub(crate) recv_window: Option<&'a str>,
}

/// Binance's API key types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyType {
    HmacSha256,
    Ed25519,
    Rsa,
}

/// Who a request acts for, once authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AuthContext {
    pub(crate) user_id: u64,
    /// The API key (never the secret) the request came with.
    pub(crate) key: String,
    pub(crate) scopes: Scopes,
    pub(crate) key_type: KeyType,
}

/// Authenticates one request to an endpoint needing `needed`; `signed` is
/// true for TRADE and USER_DATA endpoints (USER_STREAM ones need the key
/// only).
///
/// Order of checks: key shape (-2014), key known and live (-2015), then for
/// signed requests `recvWindow` and `timestamp` (-1131, -1102, -1021), the
/// signature (-1102, -1022), and last the scope (-2015). The scope comes
/// after the signature so that someone holding only an API key cannot learn
/// what it is allowed to do.
pub(crate) fn authenticate(
    store: &KeyStore,
    request: &AuthRequest,
    needed: Scope,
    signed: bool,
    now_ms: u64,
) -> Result<AuthContext, AuthError> {
    let api_key = request.api_key.ok_or(AuthError::ApiKeyFormat)?;
    if !api_key_format_ok(api_key) {
        return Err(AuthError::ApiKeyFormat);
    }
    let record = store
        .lookup(api_key)
        .filter(|r| !r.revoked)
        .ok_or(AuthError::ApiKeyRejected)?;
    if signed {
        check_timestamp(request.timestamp, request.recv_window, now_ms)?;
        let (payload, signature) = signature_payload(request.query, request.body)?;
        if !verify(record.secret.as_bytes(), &payload, &signature) {
            return Err(AuthError::BadSignature);
        }
    }
    if !record.scopes.contains(needed) {
        return Err(AuthError::ApiKeyRejected);
    }
    Ok(AuthContext {
        user_id: record.user_id,
        key: String::from_utf8_lossy(api_key).into_owned(),
        scopes: record.scopes,
        key_type: KeyType::HmacSha256,
    })
}

/// What a WebSocket API request proves: the signature of a payload the
/// connection built (parameters sorted by name, `signature` left out), or
/// nothing beyond the session's logon.
#[derive(Clone, Copy, Debug)]
pub(crate) enum WsProof<'a> {
    Payload {
        payload: &'a [u8],
        signature: Option<&'a str>,
    },
    /// The session logged on with this key; `session.logon` checked the
    /// signature. Binance still wants a `timestamp` on signed requests.
    Session,
    /// The key alone: a USER_STREAM method on a logged-on session.
    Key,
}

/// [`authenticate`] for the WebSocket API: the same checks in the same
/// order and with the same codes, over the payload the connection built
/// instead of the query string and body.
pub(crate) fn authenticate_ws(
    store: &KeyStore,
    api_key: &[u8],
    proof: WsProof,
    timestamp: Option<&str>,
    recv_window: Option<&str>,
    needed: Scope,
    now_ms: u64,
) -> Result<AuthContext, AuthError> {
    if !api_key_format_ok(api_key) {
        return Err(AuthError::ApiKeyFormat);
    }
    let record = store
        .lookup(api_key)
        .filter(|r| !r.revoked)
        .ok_or(AuthError::ApiKeyRejected)?;
    if !matches!(proof, WsProof::Key) {
        check_timestamp(timestamp, recv_window, now_ms)?;
    }
    if let WsProof::Payload { payload, signature } = proof {
        let signature = signature
            .filter(|s| !s.is_empty())
            .ok_or(AuthError::Mandatory("signature"))?;
        if !verify(record.secret.as_bytes(), payload, signature) {
            return Err(AuthError::BadSignature);
        }
    }
    if !record.scopes.contains(needed) {
        return Err(AuthError::ApiKeyRejected);
    }
    Ok(AuthContext {
        user_id: record.user_id,
        key: String::from_utf8_lossy(api_key).into_owned(),
        scopes: record.scopes,
        key_type: KeyType::HmacSha256,
    })
}

/// Decimal digits of the user id at the start of API and listen keys.
pub(crate) const KEY_USER_DIGITS: usize = 12;
/// The user a key (API or listen key) belongs to: its first digits.
pub(crate) fn user_of_key(key: &[u8]) -> Option<UserId> {
    let digits = key.get(..KEY_USER_DIGITS)?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// A key for `user`: the user id in `KEY_USER_DIGITS` digits, then letters
/// and digits drawn from `entropy`.
pub(crate) fn key_for(user: UserId, entropy: &[u8], len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut key = format!("{user:0width$}", width = KEY_USER_DIGITS);
    key.extend(
        entropy
            .iter()
            .take(len - KEY_USER_DIGITS)
            .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char),
    );
    key
}

/// Fills `buf` from the kernel's random source. Start-up and key creation
/// only; it may block until the kernel's pool is ready, once per boot.
pub(crate) fn random_bytes(buf: &mut [u8]) {
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: the pointer and length describe the unfilled part of `buf`.
        let n = unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
        if n > 0 {
            filled += n as usize;
        } else {
            let error = std::io::Error::last_os_error();
            assert!(
                error.kind() == std::io::ErrorKind::Interrupted,
                "getrandom failed: {error}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The example key pair of Binance's SIGNED endpoint documentation.
    const DOC_API_KEY: &str = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A";
    const DOC_SECRET: &str = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j";
    const DOC_PARAMS: &str =
        "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559";
    const DOC_SIGNATURE: &str = "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71";
    const DOC_QUERY_PART: &str = "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC";
    const DOC_BODY_PART: &str = "quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559";
    const DOC_MIXED_SIGNATURE: &str = "0fd168b8ddb4876a0358a8d14d0c9f3da0e9b20c5d52b2a00fcf7d1c602f9a77";
    const DOC_NON_ASCII_PARAMS: &str = "symbol=%EF%BC%91%EF%BC%92%EF%BC%93%EF%BC%94%EF%BC%95%EF%BC%96&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559";
    const DOC_NON_ASCII_SIGNATURE: &str = "e1353ec6b14d888f1164ae9af8228a3dbd508bc82eb867db8ab6046442f33ef3";
    const DOC_TIME_MS: u64 = 1_499_827_319_559;

    #[test]
    fn binance_documented_signatures() {
        let secret = DOC_SECRET.as_bytes();
        assert_eq!(sign(secret, DOC_PARAMS.as_bytes()), DOC_SIGNATURE);
        assert!(verify(secret, DOC_PARAMS.as_bytes(), DOC_SIGNATURE));
        let mixed = format!("{DOC_QUERY_PART}{DOC_BODY_PART}");
        assert_eq!(sign(secret, mixed.as_bytes()), DOC_MIXED_SIGNATURE);
        assert_eq!(sign(secret, DOC_NON_ASCII_PARAMS.as_bytes()), DOC_NON_ASCII_SIGNATURE);
        assert!(verify(secret, DOC_PARAMS.as_bytes(), &DOC_SIGNATURE.to_uppercase()));
    }

    #[test]
    fn verify_rejects_near_misses() {
        let secret = DOC_SECRET.as_bytes();
        let payload = DOC_PARAMS.as_bytes();
        let mut last_byte_off = DOC_SIGNATURE.to_owned();
        last_byte_off.replace_range(63.., "0");
        let mut first_byte_off = DOC_SIGNATURE.to_owned();
        first_byte_off.replace_range(..1, "d");
        let table: &[(&str, bool)] = &[
            (DOC_SIGNATURE, true),
            (&last_byte_off, false),
            (&first_byte_off, false),
            (&DOC_SIGNATURE[..62], false),
            (&format!("{DOC_SIGNATURE}00"), false),
            ("", false),
            (&DOC_SIGNATURE.replace('c', "g"), false),
            (&DOC_SIGNATURE.replacen('c', "é", 1)[..64], false),
        ];
        for (signature, expected) in table {
            assert_eq!(verify(secret, payload, signature), *expected, "{signature:?}");
        }
        assert!(!verify(b"wrong secret", payload, DOC_SIGNATURE));
    }

    #[test]
    fn extracts_signature_where_clients_put_it() {
        let all_signed = format!("{DOC_PARAMS}&signature=abc");
        let body_signed = format!("{DOC_BODY_PART}&signature=abc");
        let mixed = format!("{DOC_QUERY_PART}{DOC_BODY_PART}");
        type Case<'a> = (&'a str, &'a str, Result<(&'a str, &'a str), AuthError>);
        let table: &[Case] = &[
            // binance-connector: everything in the query, even for POST.
            (&all_signed, "", Ok((DOC_PARAMS, "abc"))),
            // ccxt: POST parameters in the body, signature last.
            ("", &all_signed, Ok((DOC_PARAMS, "abc"))),
            // Binance's mixed example: the signature ends the body.
            (DOC_QUERY_PART, &body_signed, Ok((&mixed, "abc"))),
            ("signature=abc&a=1", "b=2", Ok(("a=1b=2", "abc"))),
            ("a=1&signature=abc&b=2", "", Ok(("a=1&b=2", "abc"))),
            ("a=1", "signature=abc", Ok(("a=1", "abc"))),
            ("a=1&signature=ABC", "c=3", Ok(("a=1c=3", "ABC"))),
            ("signatures=abc&a=1", "", Err(AuthError::Mandatory("signature"))),
            ("a=1", "", Err(AuthError::Mandatory("signature"))),
            ("a=1&signature=", "", Err(AuthError::Mandatory("signature"))),
            ("a=1&signature", "", Err(AuthError::Mandatory("signature"))),
            ("a=1&signature=x", "signature=x", Err(AuthError::DuplicateSignature)),
            ("signature=x&signature=x", "", Err(AuthError::DuplicateSignature)),
        ];
        for (query, body, expected) in table {
            let got = signature_payload(query.as_bytes(), body.as_bytes());
            let got = got.map(|(payload, signature)| (payload.into_owned(), signature));
            let expected = expected.map(|(payload, signature)| (payload.as_bytes().to_vec(), signature.to_owned()));
            assert_eq!(got, expected, "{query:?} {body:?}");
        }
    }

    #[test]
    fn payload_borrows_when_nothing_is_joined() {
        let query = format!("{DOC_PARAMS}&signature={DOC_SIGNATURE}");
        let (payload, _) = signature_payload(query.as_bytes(), b"").unwrap();
        assert!(matches!(payload, Cow::Borrowed(_)));
    }

    #[test]
    fn checks_timestamp_like_binance() {
        let now = DOC_TIME_MS;
        let ts = |offset: i64| (now as i64 + offset).to_string();
        type Case = (Option<String>, Option<&'static str>, Result<(), AuthError>);
        let table: Vec<Case> = vec![
            (Some(ts(0)), None, Ok(())),
            (Some(ts(999)), None, Ok(())),
            (Some(ts(1000)), None, Err(AuthError::TimestampAhead)),
            (Some(ts(-5000)), None, Ok(())),
            (Some(ts(-5001)), None, Err(AuthError::TimestampOutside)),
            (Some(ts(-60_000)), Some("60000"), Ok(())),
            (Some(ts(-60_001)), Some("60000"), Err(AuthError::TimestampOutside)),
            (Some(ts(-100)), Some("100"), Ok(())),
            (Some((now * 1_000 - 100_999).to_string()), Some("100.999"), Ok(())),
            (
                Some((now * 1_000 - 101_000).to_string()),
                Some("100.999"),
                Err(AuthError::TimestampOutside),
            ),
            (Some(ts(-101)), Some("100.999"), Err(AuthError::TimestampOutside)),
            (Some(ts(0)), Some("0"), Ok(())),
            (Some(ts(-1)), Some("0"), Err(AuthError::TimestampOutside)),
            (Some(ts(0)), Some("60000.001"), Err(AuthError::RecvWindowTooLarge)),
            (Some(ts(0)), Some("60001"), Err(AuthError::RecvWindowTooLarge)),
            (Some(ts(0)), Some("999999999"), Err(AuthError::RecvWindowTooLarge)),
            (Some(ts(0)), Some(""), Err(AuthError::RecvWindowMalformed)),
            (Some(ts(0)), Some("-1"), Err(AuthError::RecvWindowMalformed)),
            (Some(ts(0)), Some("5000."), Err(AuthError::RecvWindowMalformed)),
            (Some(ts(0)), Some("5000.0001"), Err(AuthError::RecvWindowMalformed)),
            (Some(ts(0)), Some("1e3"), Err(AuthError::RecvWindowMalformed)),
            (
                Some(ts(0)),
                Some("9999999999999999999999"),
                Err(AuthError::RecvWindowMalformed),
            ),
            (None, None, Err(AuthError::Mandatory("timestamp"))),
            (Some(String::new()), None, Err(AuthError::Mandatory("timestamp"))),
            (Some("-1".into()), None, Err(AuthError::Mandatory("timestamp"))),
            (Some("12.5".into()), None, Err(AuthError::Mandatory("timestamp"))),
            (
                Some("99999999999999999999".into()),
                None,
                Err(AuthError::Mandatory("timestamp")),
            ),
            // Microseconds, accepted like milliseconds.
            (Some(format!("{}000", ts(-5000))), None, Ok(())),
            (Some(format!("{}999", ts(999))), None, Ok(())),
            (Some(format!("{}000", ts(1000))), None, Err(AuthError::TimestampAhead)),
            (Some(format!("{}001", ts(-5000))), None, Ok(())),
            (
                Some(format!("{}999", ts(-5001))),
                None,
                Err(AuthError::TimestampOutside),
            ),
        ];
        for (timestamp, recv_window, expected) in table {
            let got = check_timestamp(timestamp.as_deref(), recv_window, now);
            assert_eq!(got, expected, "{timestamp:?} {recv_window:?}");
        }
    }

    fn store() -> KeyStore {
        let mut store = KeyStore::new(8);
        let record = |user_id, scopes| KeyRecord {
            user_id,
            secret: DOC_SECRET.to_owned(),
            scopes,
            revoked: false,
        };
        store.insert(DOC_API_KEY.to_owned(), record(7, Scopes::ALL)).unwrap();
        store
            .insert("readonly".to_owned(), record(8, Scopes::parse("READ").unwrap()))
            .unwrap();
        store.insert("revoked".to_owned(), record(9, Scopes::ALL)).unwrap();
        assert!(store.revoke("revoked"));
        store
    }

    #[test]
    fn authenticates_with_exact_codes() {
        let store = store();
        let signed_query = format!("{DOC_PARAMS}&signature={DOC_SIGNATURE}");
        let mixed_body = format!("{DOC_BODY_PART}&signature={DOC_MIXED_SIGNATURE}");
        let good = AuthRequest {
            api_key: Some(DOC_API_KEY.as_bytes()),
            query: signed_query.as_bytes(),
            body: b"",
            timestamp: Some("1499827319559"),
            recv_window: Some("5000"),
        };
        let now = DOC_TIME_MS + 10;
        type Case<'a> = (&'a str, AuthRequest<'a>, Scope, bool, Result<u64, i32>);
        let table: Vec<Case> = vec![
            ("doc example in query", good, Scope::Trade, true, Ok(7)),
            (
                "doc example split",
                AuthRequest {
                    query: DOC_QUERY_PART.as_bytes(),
                    body: mixed_body.as_bytes(),
                    ..good
                },
                Scope::Trade,
                true,
                Ok(7),
            ),
            (
                "doc example in body",
                AuthRequest {
                    query: b"",
                    body: signed_query.as_bytes(),
                    ..good
                },
                Scope::Trade,
                true,
                Ok(7),
            ),
            (
                "user stream needs no signature",
                AuthRequest { query: b"", ..good },
                Scope::UserStream,
                false,
                Ok(7),
            ),
            (
                "no key",
                AuthRequest { api_key: None, ..good },
                Scope::Trade,
                true,
                Err(-2014),
            ),
            (
                "empty key",
                AuthRequest {
                    api_key: Some(b""),
                    ..good
                },
                Scope::Trade,
                true,
                Err(-2014),
            ),
            (
                "key with a symbol",
                AuthRequest {
                    api_key: Some(b"abc-def"),
                    ..good
                },
                Scope::Trade,
                true,
                Err(-2014),
            ),
            (
                "key too long",
                AuthRequest {
                    api_key: Some(&[b'a'; 65]),
                    ..good
                },
                Scope::Trade,
                true,
                Err(-2014),
            ),
            (
                "unknown key",
                AuthRequest {
                    api_key: Some(b"nosuchkey"),
                    ..good
                },
                Scope::Trade,
                true,
                Err(-2015),
            ),
            (
                "revoked key",
                AuthRequest {
                    api_key: Some(b"revoked"),
                    ..good
                },
                Scope::Trade,
                true,
                Err(-2015),
            ),
            (
                "revoked key, user stream",
                AuthRequest {
                    api_key: Some(b"revoked"),
                    ..good
                },
                Scope::UserStream,
                false,
                Err(-2015),
            ),
            (
                "read-only key trading",
                AuthRequest {
                    api_key: Some(b"readonly"),
                    ..good
                },
                Scope::Trade,
                true,
                Err(-2015),
            ),
            (
                "read-only key reading",
                AuthRequest {
                    api_key: Some(b"readonly"),
                    ..good
                },
                Scope::Read,
                true,
                Ok(8),
            ),
            (
                "read-only key, user stream",
                AuthRequest {
                    api_key: Some(b"readonly"),
                    ..good
                },
                Scope::UserStream,
                false,
                Err(-2015),
            ),
            (
                "no timestamp",
                AuthRequest {
                    timestamp: None,
                    ..good
                },
                Scope::Trade,
                true,
                Err(-1102),
            ),
            (
                "recvWindow too large",
                AuthRequest {
                    recv_window: Some("60001"),
                    ..good
                },
                Scope::Trade,
                true,
                Err(-1131),
            ),
            (
                "late",
                AuthRequest {
                    recv_window: Some("5"),
                    ..good
                },
                Scope::Trade,
                true,
                Err(-1021),
            ),
            (
                "no signature",
                AuthRequest {
                    query: DOC_PARAMS.as_bytes(),
                    ..good
                },
                Scope::Trade,
                true,
                Err(-1102),
            ),
            (
                "tampered query",
                AuthRequest {
                    query: &signed_query.as_bytes()[1..],
                    ..good
                },
                Scope::Trade,
                true,
                Err(-1022),
            ),
            (
                "extra body",
                AuthRequest { body: b"x=1", ..good },
                Scope::Trade,
                true,
                Err(-1022),
            ),
            (
                "signature twice",
                AuthRequest {
                    body: b"signature=00",
                    ..good
                },
                Scope::Trade,
                true,
                Err(-1101),
            ),
            // Checks run in Binance's order: the key before the timestamp,
            // the timestamp before the signature.
            (
                "unknown key and late",
                AuthRequest {
                    api_key: Some(b"nosuchkey"),
                    recv_window: Some("5"),
                    ..good
                },
                Scope::Trade,
                true,
                Err(-2015),
            ),
            (
                "late and unsigned",
                AuthRequest {
                    query: DOC_PARAMS.as_bytes(),
                    recv_window: Some("5"),
                    ..good
                },
                Scope::Trade,
                true,
                Err(-1021),
            ),
            (
                "bad signature without the scope",
                AuthRequest {
                    api_key: Some(b"readonly"),
                    body: b"x=1",
                    ..good
                },
                Scope::Trade,
                true,
                Err(-1022),
            ),
        ];
        for (name, request, needed, signed, expected) in table {
            let got = authenticate(&store, &request, needed, signed, now);
            assert_eq!(
                got.as_ref().map(|c| c.user_id).map_err(AuthError::code),
                expected,
                "{name}"
            );
            if let Ok(context) = got {
                assert_eq!(context.key.as_bytes(), request.api_key.unwrap(), "{name}");
            }
        }
    }

    #[test]
    fn errors_carry_binance_codes_messages_and_statuses() {
        let table: &[(AuthError, i32, u16, &str)] = &[
            (AuthError::ApiKeyFormat, -2014, 401, "API-key format invalid."),
            (
                AuthError::ApiKeyRejected,
                -2015,
                401,
                "Invalid API-key, IP, or permissions for action.",
            ),
            (
                AuthError::Mandatory("timestamp"),
                -1102,
                400,
                "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed.",
            ),
            (
                AuthError::RecvWindowTooLarge,
                -1131,
                400,
                "recvWindow must be less than 60000",
            ),
            (
                AuthError::TimestampAhead,
                -1021,
                400,
                "Timestamp for this request was 1000ms ahead of the server's time.",
            ),
            (
                AuthError::TimestampOutside,
                -1021,
                400,
                "Timestamp for this request is outside of the recvWindow.",
            ),
            (
                AuthError::BadSignature,
                -1022,
                400,
                "Signature for this request is not valid.",
            ),
            (
                AuthError::DuplicateSignature,
                -1101,
                400,
                "Duplicate values for a parameter detected.",
            ),
        ];
        for &(error, code, status, msg) in table {
            assert_eq!(
                (error.code(), error.status(), error.msg().as_str()),
                (code, status, msg)
            );
            let http: HttpError = error.into();
            assert_eq!(
                (http.status, http.code, http.msg.as_str(), http.close),
                (status, code, msg, false)
            );
        }
    }

    #[test]
    fn secrets_never_printed() {
        let store = store();
        let record = store.lookup(DOC_API_KEY.as_bytes()).unwrap();
        let printed = [format!("{record:?}"), format!("{record:#?}"), format!("{store:?}")];
        for text in &printed {
            assert!(!text.contains(DOC_SECRET), "{text}");
            assert!(!text.contains(&DOC_SECRET[..16]), "{text}");
        }
        assert!(printed[0].contains("<redacted>"));
        let request = AuthRequest {
            api_key: Some(DOC_API_KEY.as_bytes()),
            query: b"timestamp=1&signature=00",
            timestamp: Some("1"),
            ..AuthRequest::default()
        };
        let error = authenticate(&store, &request, Scope::Trade, true, 1).unwrap_err();
        assert!(!format!("{error:?} {error}").contains(DOC_SECRET));
        let context = authenticate(&store, &request, Scope::UserStream, false, 1).unwrap();
        assert!(!format!("{context:?}").contains(DOC_SECRET));
    }

    #[test]
    fn parses_scopes() {
        let table: &[(&str, Option<&[Scope]>)] = &[
            ("READ", Some(&[Scope::Read])),
            ("READ,TRADE", Some(&[Scope::Read, Scope::Trade])),
            (" USER_STREAM , READ ", Some(&[Scope::Read, Scope::UserStream])),
            ("READ,TRADE,USER_STREAM", Some(&Scope::ALL)),
            ("", Some(&[])),
            ("read", None),
            ("READ,ADMIN", None),
        ];
        for (text, expected) in table {
            let got = Scopes::parse(text);
            let expected = expected.map(|list| list.iter().fold(Scopes::NONE, |set, s| set.with(*s)));
            assert_eq!(got, expected, "{text:?}");
        }
        assert_eq!(format!("{:?}", Scopes::ALL), r#"{"READ", "TRADE", "USER_STREAM"}"#);
    }

    #[test]
    fn key_store_is_bounded_and_checks_keys() {
        let mut store = KeyStore::new(2);
        let record = KeyRecord {
            user_id: 1,
            secret: "s".into(),
            scopes: Scopes::ALL,
            revoked: false,
        };
        assert_eq!(
            store.insert("a-b".into(), record.clone()),
            Err(KeyStoreError::BadFormat)
        );
        assert_eq!(
            store.insert(String::new(), record.clone()),
            Err(KeyStoreError::BadFormat)
        );
        assert_eq!(store.insert("a".into(), record.clone()), Ok(()));
        assert_eq!(store.insert("a".into(), record.clone()), Err(KeyStoreError::Duplicate));
        assert_eq!(store.insert("b".into(), record.clone()), Ok(()));
        assert_eq!(store.insert("c".into(), record.clone()), Err(KeyStoreError::Full(2)));
        assert!(!store.revoke("c"));
        assert!(store.remove("a").is_some());
        assert_eq!(store.insert("c".into(), record), Ok(()));
        assert_eq!(store.len(), 2);
        assert!(store.lookup(&[0xff, 0xfe]).is_none());
    }

    #[test]
    fn generated_keys_are_alphanumeric_distinct_and_deterministic() {
        let mut seen = std::collections::HashSet::new();
        for seed in 0..=255u8 {
            let mut entropy = [seed; 64];
            entropy[63] = seed.wrapping_mul(31);
            let (key, secret) = generate_key_pair(&entropy);
            assert_eq!((key.len(), secret.len()), (GENERATED_KEY_CHARS, GENERATED_KEY_CHARS));
            assert!(api_key_format_ok(key.as_bytes()) && api_key_format_ok(secret.as_bytes()));
            assert_ne!(key, secret);
            assert_eq!(generate_key_pair(&entropy), (key.clone(), secret.clone()));
            assert!(seen.insert(key) && seen.insert(secret));
        }
    }

    #[test]
    fn generated_pair_authenticates() {
        let (key, secret) = generate_key_pair(&[42; 64]);
        let mut store = KeyStore::default();
        let record = KeyRecord {
            user_id: 3,
            secret: secret.clone(),
            scopes: Scopes::ALL,
            revoked: false,
        };
        store.insert(key.clone(), record).unwrap();
        let body = "symbol=BTCUSDT&timestamp=1700000000000";
        let body = format!("{body}&signature={}", sign(secret.as_bytes(), body.as_bytes()));
        let request = AuthRequest {
            api_key: Some(key.as_bytes()),
            body: body.as_bytes(),
            timestamp: Some("1700000000000"),
            ..AuthRequest::default()
        };
        let context = authenticate(&store, &request, Scope::Trade, true, 1_700_000_000_000).unwrap();
        assert_eq!((context.user_id, context.key), (3, key));
    }

    proptest! {
        #[test]
        fn any_mutation_of_a_signed_payload_fails(
            secret in proptest::collection::vec(any::<u8>(), 1..80),
            payload in proptest::collection::vec(any::<u8>(), 0..200),
            position in any::<prop::sample::Index>(),
            bit in 0u8..8,
            mutation in 0u8..3,
        ) {
            let signature = sign(&secret, &payload);
            prop_assert!(verify(&secret, &payload, &signature));
            let mut mutated = payload.clone();
            match mutation {
                0 if !mutated.is_empty() => {
                    let i = position.index(mutated.len());
                    mutated[i] ^= 1 << bit;
                }
                1 if !mutated.is_empty() => {
                    mutated.remove(position.index(mutated.len()));
                }
                _ => mutated.insert(position.index(mutated.len() + 1), bit),
            }
            prop_assert!(!verify(&secret, &mutated, &signature));
        }

        #[test]
        fn any_mutation_of_a_signature_fails(
            payload in proptest::collection::vec(any::<u8>(), 0..200),
            position in 0usize..64,
            replacement in prop::sample::select(b"0123456789abcdefABCDEFxz ".to_vec()),
        ) {
            let signature = sign(DOC_SECRET.as_bytes(), &payload);
            let mut mutated = signature.clone().into_bytes();
            prop_assume!(!mutated[position].eq_ignore_ascii_case(&replacement));
            mutated[position] = replacement;
            let mutated = String::from_utf8(mutated).unwrap();
            prop_assert!(!verify(DOC_SECRET.as_bytes(), &payload, &mutated));
        }
    }
}
