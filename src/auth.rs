//! Request authentication for SIGNED (TRADE, USER_DATA) and USER_STREAM
//! endpoints, the Binance Spot way: an API key in `X-MBX-APIKEY`, a
//! `signature` of what the request says, and a `timestamp` that must fall
//! inside `recvWindow`.
//!
//! Keys come in Binance's three types ([`KeyType`]). An HMAC-SHA256 key is a
//! secret the server makes and shares with the user; requests carry the
//! hex HMAC. For Ed25519 and RSA keys the user keeps the private key and
//! gives the server only the public one; requests carry a base64
//! signature. The server then holds nothing that could sign a request: a
//! copy of its data directory lets no one trade.
//!
//! What a signature covers comes two ways ([`SignedPart`]): a REST request
//! signs its query string followed by its body, with the signature among
//! the parameters; a WebSocket API request signs a payload its caller
//! builds from the request's parameters. Both go through [`authenticate`],
//! so the checks, their order and their error codes are the same.
//!
//! This module owns the per-shard API key registry ([`KeyStore`]), the
//! reading of public keys, key generation from caller-supplied entropy,
//! signature extraction and verification, and the timing check. It does no
//! I/O and reads no clock: the caller passes the time and the random bytes,
//! so every decision here replays exactly in tests. The user shard calls
//! [`authenticate`] once per secured request, before rate limits on orders
//! and before any state moves.
//!
//! **Invariant:** an HMAC secret leaves a [`KeyRecord`] only as an HMAC key
//! and into the shard's own snapshots ([`KeyMaterial::to_stored`]; the
//! journal keeps the randomness it was made from); no `Debug` or `Display`
//! output of this module contains one.
//!
//! **Invariant:** HMAC signatures are compared in constant time (`hmac`'s
//! `verify_slice`, built on `subtle`), so response timing says nothing about
//! how much of a forged signature was right. Ed25519 and RSA checks use only
//! public values, so their timing tells nothing anyone could not compute.

use crate::binance;
use crate::http::HttpError;
use base64::Engine;
use hmac::{Hmac, Mac};
use rsa::pkcs1::der::{self, Decode};
use rsa::pkcs8::spki::{ObjectIdentifier, SubjectPublicKeyInfoRef};
use rsa::pkcs8::EncodePublicKey;
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, Pkcs1v15Sign, RsaPublicKey};
use sha2::{Digest, Sha256};
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

/// RSA keys have at least this many bits of modulus: Binance's minimum,
/// and the smallest size still held secure (NIST SP 800-57).
pub(crate) const RSA_KEY_BITS_MIN: usize = 2048;
/// RSA keys have at most this many bits: a signature check on the user's
/// shard costs more the longer the key, and the rsa crate reads no longer.
pub(crate) const RSA_KEY_BITS_MAX: usize = 4096;
/// The longest `publicKey` PEM read (an RSA-4096 one is 800 bytes).
pub(crate) const PUBLIC_KEY_PEM_BYTES_MAX: usize = 4096;
/// The longest signature a key can make: an RSA one is as long as the
/// modulus.
const SIGNATURE_BYTES_MAX: usize = RSA_KEY_BITS_MAX / 8;
/// [`SIGNATURE_BYTES_MAX`] in padded base64; anything longer is refused
/// before decoding.
const SIGNATURE_BASE64_CHARS_MAX: usize = SIGNATURE_BYTES_MAX.div_ceil(3) * 4;

const _: () = assert!(RECV_WINDOW_MS_DEFAULT <= RECV_WINDOW_MS_MAX);
const _: () = assert!(GENERATED_KEY_CHARS <= API_KEY_BYTES_MAX);
const _: () = assert!(RSA_KEY_BITS_MIN <= RSA_KEY_BITS_MAX);
const _: () = assert!(RSA_KEY_BITS_MAX <= RsaPublicKey::MAX_SIZE);
const _: () = assert!(ed25519_dalek::SIGNATURE_LENGTH <= SIGNATURE_BYTES_MAX);

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

/// How a key signs, with Binance's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum KeyType {
    /// A secret shared with the server; the signature is the lowercase
    /// (or uppercase) hex HMAC-SHA256.
    HmacSha256,
    /// An Ed25519 key pair; the signature is the base64 Ed25519 signature.
    Ed25519,
    /// An RSA key pair; the signature is the base64 RSASSA-PKCS1-v1_5
    /// signature with SHA-256.
    Rsa,
}

impl KeyType {
    pub(crate) const ALL: [KeyType; 3] = [KeyType::HmacSha256, KeyType::Ed25519, KeyType::Rsa];

    /// Parses the names used in the admin API.
    pub(crate) fn parse(name: &str) -> Option<KeyType> {
        KeyType::ALL.into_iter().find(|t| t.name() == name)
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            KeyType::HmacSha256 => "HMAC_SHA256",
            KeyType::Ed25519 => "ED25519",
            KeyType::Rsa => "RSA",
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What verifies a key's signatures: the HMAC secret, or the public key of
/// an Ed25519 or RSA pair (whose private key the server never sees).
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum KeyMaterial {
    /// Kept out of `Debug`: logs must never carry it.
    Hmac {
        secret: String,
    },
    Ed25519(ed25519_dalek::VerifyingKey),
    Rsa(RsaPublicKey),
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyMaterial::Hmac { .. } => f.write_str("Hmac { secret: <redacted> }"),
            KeyMaterial::Ed25519(_) => f.write_str("Ed25519"),
            KeyMaterial::Rsa(key) => write!(f, "Rsa({} bits)", key.n().bits()),
        }
    }
}

/// Why a public key (or a stored key) was refused. The admin API answers
/// each with HTTP 400 and [`code`](Self::code).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum KeyError {
    /// Binance's -1106 wording: HMAC keys take no public key.
    #[error("Parameter 'publicKey' sent when not required.")]
    NotWanted,
    #[error("publicKey is longer than {PUBLIC_KEY_PEM_BYTES_MAX} bytes.")]
    TooLong,
    #[error("publicKey holds a private key; send only the public key (BEGIN PUBLIC KEY).")]
    PrivateKey,
    #[error("publicKey is not a PEM public key (BEGIN PUBLIC KEY, or BEGIN RSA PUBLIC KEY for RSA).")]
    NotPem,
    /// `found` says what the key is instead ("an RSA key", "a key of
    /// algorithm 1.2.840.10045.2.1").
    #[error("publicKey is {found}, not an {expected} key.")]
    WrongKind { expected: KeyType, found: String },
    #[error("publicKey is not a valid {0} public key.")]
    Malformed(KeyType),
    #[error("RSA keys must have {RSA_KEY_BITS_MIN} to {RSA_KEY_BITS_MAX} bits; this one has {0}.")]
    RsaBits(usize),
    #[error("publicKey is a weak Ed25519 key (a point of small order), which verifies forged signatures.")]
    WeakEd25519,
}

impl KeyError {
    /// Binance's error code.
    pub(crate) fn code(&self) -> i32 {
        match self {
            KeyError::NotWanted => binance::PARAM_NOT_REQUIRED,
            _ => binance::ILLEGAL_CHARS,
        }
    }
}

impl From<KeyError> for HttpError {
    fn from(error: KeyError) -> HttpError {
        HttpError::new(400, error.code(), error.to_string())
    }
}

impl KeyMaterial {
    pub(crate) fn key_type(&self) -> KeyType {
        match self {
            KeyMaterial::Hmac { .. } => KeyType::HmacSha256,
            KeyMaterial::Ed25519(_) => KeyType::Ed25519,
            KeyMaterial::Rsa(_) => KeyType::Rsa,
        }
    }

    /// Reads the public key a user gave for a key of `key_type`: SPKI PEM
    /// (`BEGIN PUBLIC KEY`), or for RSA also PKCS#1 (`BEGIN RSA PUBLIC
    /// KEY`), as `openssl` writes them. Refuses what the server would not
    /// trust to verify requests: RSA moduli outside
    /// [`RSA_KEY_BITS_MIN`]..=[`RSA_KEY_BITS_MAX`] bits and weak Ed25519
    /// points.
    pub(crate) fn from_public_pem(key_type: KeyType, pem: &str) -> Result<KeyMaterial, KeyError> {
        if key_type == KeyType::HmacSha256 {
            return Err(KeyError::NotWanted);
        }
        if pem.len() > PUBLIC_KEY_PEM_BYTES_MAX {
            return Err(KeyError::TooLong);
        }
        let (label, der) = der::pem::decode_vec(pem.trim().as_bytes()).map_err(|_| KeyError::NotPem)?;
        let material = match label {
            "PUBLIC KEY" => from_spki_der(key_type, &der)?,
            "RSA PUBLIC KEY" if key_type == KeyType::Rsa => rsa_from_pkcs1_der(&der)?,
            "RSA PUBLIC KEY" => {
                return Err(KeyError::WrongKind {
                    expected: key_type,
                    found: "an RSA key".into(),
                })
            }
            label if label.ends_with("PRIVATE KEY") => return Err(KeyError::PrivateKey),
            _ => return Err(KeyError::NotPem),
        };
        match &material {
            KeyMaterial::Rsa(key) => {
                let bits = key.n().bits();
                if !(RSA_KEY_BITS_MIN..=RSA_KEY_BITS_MAX).contains(&bits) {
                    return Err(KeyError::RsaBits(bits));
                }
            }
            KeyMaterial::Ed25519(key) if key.is_weak() => return Err(KeyError::WeakEd25519),
            _ => {}
        }
        Ok(material)
    }

    /// The material as the journal and snapshots keep it: the secret's
    /// bytes for HMAC, the public key as SPKI DER otherwise (one canonical
    /// form, whichever PEM the key came in). [`from_stored`](Self::from_stored)
    /// reads it back.
    pub(crate) fn to_stored(&self) -> Vec<u8> {
        let der = match self {
            KeyMaterial::Hmac { secret } => return secret.as_bytes().to_vec(),
            KeyMaterial::Ed25519(key) => key.to_public_key_der(),
            KeyMaterial::Rsa(key) => key.to_public_key_der(),
        };
        match der {
            Ok(document) => document.into_vec(),
            // Both crates encode a key they hold into a fixed structure.
            Err(e) => unreachable!("encoding a {} public key failed: {e}", self.key_type()),
        }
    }

    /// Reads [`to_stored`](Self::to_stored)'s bytes back. The limits of
    /// [`from_public_pem`](Self::from_public_pem) are not applied again: a
    /// key accepted once stays readable if they change.
    pub(crate) fn from_stored(key_type: KeyType, stored: &[u8]) -> Result<KeyMaterial, KeyError> {
        match key_type {
            KeyType::HmacSha256 => match std::str::from_utf8(stored) {
                Ok(secret) => Ok(KeyMaterial::Hmac {
                    secret: secret.to_owned(),
                }),
                Err(_) => Err(KeyError::Malformed(key_type)),
            },
            KeyType::Ed25519 | KeyType::Rsa => from_spki_der(key_type, stored),
        }
    }

    /// Whether `signature`, as the client sent it (decoded from the URL),
    /// signs `payload` under this key: hex HMAC-SHA256 for HMAC keys,
    /// base64 (standard alphabet, padded) for Ed25519 and RSA ones.
    pub(crate) fn verify(&self, payload: &[u8], signature: &str) -> bool {
        match self {
            KeyMaterial::Hmac { secret } => verify(secret.as_bytes(), payload, signature),
            KeyMaterial::Ed25519(key) => decode_base64_signature(signature)
                .and_then(|bytes| ed25519_dalek::Signature::from_slice(&bytes).ok())
                // Strict: no small-order keys, no malleable signatures.
                .is_some_and(|signature| key.verify_strict(payload, &signature).is_ok()),
            KeyMaterial::Rsa(key) => decode_base64_signature(signature).is_some_and(|bytes| {
                key.verify(Pkcs1v15Sign::new::<Sha256>(), &Sha256::digest(payload), &bytes)
                    .is_ok()
            }),
        }
    }
}

/// An SPKI DER public key of `key_type` (Ed25519 or RSA). The algorithm
/// named in it must be the type's, so that a key of the other type (or of
/// neither) is named as such.
fn from_spki_der(key_type: KeyType, der: &[u8]) -> Result<KeyMaterial, KeyError> {
    let spki = SubjectPublicKeyInfoRef::from_der(der).map_err(|_| KeyError::Malformed(key_type))?;
    let found = key_type_of(spki.algorithm.oid);
    if found != Some(key_type) {
        let found = match found {
            Some(other) => format!("an {other} key"),
            None => format!("a key of algorithm {}", spki.algorithm.oid),
        };
        return Err(KeyError::WrongKind {
            expected: key_type,
            found,
        });
    }
    match key_type {
        KeyType::Ed25519 => ed25519_dalek::VerifyingKey::try_from(spki)
            .map(KeyMaterial::Ed25519)
            .map_err(|_| KeyError::Malformed(key_type)),
        KeyType::Rsa => {
            let pkcs1 = spki
                .subject_public_key
                .as_bytes()
                .ok_or(KeyError::Malformed(key_type))?;
            rsa_from_pkcs1_der(pkcs1)
        }
        KeyType::HmacSha256 => Err(KeyError::NotWanted),
    }
}

/// The key type whose public keys carry algorithm `oid`.
fn key_type_of(oid: ObjectIdentifier) -> Option<KeyType> {
    if oid == rsa::pkcs1::ALGORITHM_OID {
        Some(KeyType::Rsa)
    } else if oid == ed25519_dalek::pkcs8::ALGORITHM_OID {
        Some(KeyType::Ed25519)
    } else {
        None
    }
}

/// A PKCS#1 DER RSA public key. The modulus is measured before the rsa
/// crate sees it, so that a key too long for it gets the size error, not
/// "not valid".
fn rsa_from_pkcs1_der(der: &[u8]) -> Result<KeyMaterial, KeyError> {
    let malformed = KeyError::Malformed(KeyType::Rsa);
    let parts = rsa::pkcs1::RsaPublicKey::from_der(der).map_err(|_| malformed.clone())?;
    let n = BigUint::from_bytes_be(parts.modulus.as_bytes());
    let e = BigUint::from_bytes_be(parts.public_exponent.as_bytes());
    if n.bits() > RsaPublicKey::MAX_SIZE {
        return Err(KeyError::RsaBits(n.bits()));
    }
    RsaPublicKey::new(n, e).map(KeyMaterial::Rsa).map_err(|_| malformed)
}

/// A base64 signature's bytes; `None` if it is not canonical padded base64
/// of the standard alphabet, or longer than any key's signature.
fn decode_base64_signature(signature: &str) -> Option<Vec<u8>> {
    if signature.len() > SIGNATURE_BASE64_CHARS_MAX {
        return None;
    }
    base64::engine::general_purpose::STANDARD.decode(signature).ok()
}

/// One API key's owner, material and permissions.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct KeyRecord {
    pub(crate) user_id: u64,
    /// What verifies the key's signatures; its `Debug` keeps an HMAC
    /// secret out of logs.
    pub(crate) material: KeyMaterial,
    pub(crate) scopes: Scopes,
    pub(crate) revoked: bool,
}

impl KeyRecord {
    pub(crate) fn key_type(&self) -> KeyType {
        self.material.key_type()
    }

    /// Whether `signature` (as sent, URL-decoded) signs `payload` under
    /// this key; see [`KeyMaterial::verify`].
    pub(crate) fn verify(&self, payload: &[u8], signature: &str) -> bool {
        self.material.verify(payload, signature)
    }
}

impl fmt::Debug for KeyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRecord")
            .field("user_id", &self.user_id)
            .field("material", &self.material)
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
///
/// The signature comes back URL-decoded: base64 signatures carry `+`, `/`
/// and `=`, which clients send as `%2B`, `%2F` and `%3D` (a bare `+` reads
/// as a space, as in every form-encoded value, so it fails to verify).
/// Hex signatures have nothing to decode.
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
    let signature = crate::http::percent_decode(signature).ok_or(AuthError::BadSignature)?;
    Ok((payload, signature.into_owned()))
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

/// What a request's signature covers.
#[derive(Clone, Copy, Debug)]
pub(crate) enum SignedPart<'a> {
    /// REST: the query string immediately followed by the body, with the
    /// `signature` parameter cut out (`signature_payload`).
    QueryAndBody { query: &'a [u8], body: &'a [u8] },
    /// WebSocket API: the payload the caller built (parameters sorted by
    /// name, `signature` excluded) and the signature as sent, if any.
    Payload {
        payload: &'a [u8],
        signature: Option<&'a str>,
    },
    /// WebSocket API: a request on a session logged on with this key;
    /// `session.logon` checked its signature, so only the request's
    /// `timestamp` and `recvWindow` are checked (Binance's rule).
    Session,
}

/// One request's authentication inputs, taken from the framed request.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AuthRequest<'a> {
    /// The `X-MBX-APIKEY` header value (REST) or `apiKey` parameter
    /// (WebSocket API), if sent.
    pub(crate) api_key: Option<&'a [u8]>,
    /// What the signature covers, and where the signature is.
    pub(crate) signed: SignedPart<'a>,
    /// The decoded `timestamp` parameter (the query's if both carry it).
    pub(crate) timestamp: Option<&'a str>,
    /// The decoded `recvWindow` parameter (the query's if both carry it).
    pub(crate) recv_window: Option<&'a str>,
}

/// Who a request acts for, once authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AuthContext {
    pub(crate) user_id: u64,
    /// The API key (never the secret) the request came with.
    pub(crate) key: String,
    pub(crate) key_type: KeyType,
    pub(crate) scopes: Scopes,
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
        check_signature(record, request.signed)?;
    }
    if !record.scopes.contains(needed) {
        return Err(AuthError::ApiKeyRejected);
    }
    Ok(AuthContext {
        user_id: record.user_id,
        key: String::from_utf8_lossy(api_key).into_owned(),
        key_type: record.key_type(),
        scopes: record.scopes,
    })
}

/// Finds the signature of `signed` and verifies it under `record`'s key.
fn check_signature(record: &KeyRecord, signed: SignedPart) -> Result<(), AuthError> {
    let verified = match signed {
        SignedPart::QueryAndBody { query, body } => {
            let (payload, signature) = signature_payload(query, body)?;
            record.verify(&payload, &signature)
        }
        SignedPart::Payload { payload, signature } => {
            // An empty signature is a missing one, as in a query string.
            let signature = signature
                .filter(|s| !s.is_empty())
                .ok_or(AuthError::Mandatory("signature"))?;
            record.verify(payload, signature)
        }
        SignedPart::Session => true,
    };
    if verified {
        Ok(())
    } else {
        Err(AuthError::BadSignature)
    }
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

/// Digits after the user id that name, in a cluster, the instance that
/// owns the key's user when the key was made: a routing hint for the front
/// (`cluster::ClusterMap::nginx`), never trusted for ownership (the map
/// decides; a stale hint costs one hop).
pub(crate) const KEY_HINT_DIGITS: usize = 2;

/// `key` with its hint digits naming instance `instance` (below 100).
pub(crate) fn with_instance_hint(mut key: String, instance: usize) -> String {
    let hint = format!("{:0width$}", instance % 100, width = KEY_HINT_DIGITS);
    key.replace_range(KEY_USER_DIGITS..KEY_USER_DIGITS + KEY_HINT_DIGITS, &hint);
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

    /// A REST request's signed part.
    fn rest<'a>(query: &'a str, body: &'a str) -> SignedPart<'a> {
        SignedPart::QueryAndBody {
            query: query.as_bytes(),
            body: body.as_bytes(),
        }
    }

    fn hmac(secret: &str) -> KeyMaterial {
        KeyMaterial::Hmac {
            secret: secret.to_owned(),
        }
    }

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
            // The value is URL-decoded; `+` is a space, as in any value.
            ("a=1&signature=ab%2Bc%2F%3D", "", Ok(("a=1", "ab+c/="))),
            ("a=1&signature=a+b", "", Ok(("a=1", "a b"))),
            ("a=1&signature=%zz", "", Err(AuthError::BadSignature)),
            ("a=1&signature=%FF", "", Err(AuthError::BadSignature)),
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
            material: hmac(DOC_SECRET),
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
            signed: rest(&signed_query, ""),
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
                    signed: rest(DOC_QUERY_PART, &mixed_body),
                    ..good
                },
                Scope::Trade,
                true,
                Ok(7),
            ),
            (
                "doc example in body",
                AuthRequest {
                    signed: rest("", &signed_query),
                    ..good
                },
                Scope::Trade,
                true,
                Ok(7),
            ),
            (
                "user stream needs no signature",
                AuthRequest {
                    signed: rest("", ""),
                    ..good
                },
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
                    signed: rest(DOC_PARAMS, ""),
                    ..good
                },
                Scope::Trade,
                true,
                Err(-1102),
            ),
            (
                "tampered query",
                AuthRequest {
                    signed: rest(&signed_query[1..], ""),
                    ..good
                },
                Scope::Trade,
                true,
                Err(-1022),
            ),
            (
                "extra body",
                AuthRequest {
                    signed: rest(&signed_query, "x=1"),
                    ..good
                },
                Scope::Trade,
                true,
                Err(-1022),
            ),
            (
                "signature twice",
                AuthRequest {
                    signed: rest(&signed_query, "signature=00"),
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
                    signed: rest(DOC_PARAMS, ""),
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
                    signed: rest(&signed_query, "x=1"),
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
            signed: rest("timestamp=1&signature=00", ""),
            timestamp: Some("1"),
            recv_window: None,
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
            material: hmac("s"),
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
            material: hmac(&secret),
            scopes: Scopes::ALL,
            revoked: false,
        };
        store.insert(key.clone(), record).unwrap();
        let body = "symbol=BTCUSDT&timestamp=1700000000000";
        let body = format!("{body}&signature={}", sign(secret.as_bytes(), body.as_bytes()));
        let request = AuthRequest {
            api_key: Some(key.as_bytes()),
            signed: rest("", &body),
            timestamp: Some("1700000000000"),
            recv_window: None,
        };
        let context = authenticate(&store, &request, Scope::Trade, true, 1_700_000_000_000).unwrap();
        assert_eq!((context.user_id, context.key), (3, key));
    }

    // ---- Ed25519 and RSA keys ----

    const ED25519_PRIVATE_PEM: &str = include_str!("../tests/fixtures/keys/ed25519.pem");
    const ED25519_PUBLIC_PEM: &str = include_str!("../tests/fixtures/keys/ed25519.pub.pem");
    const ED25519_OTHER_PRIVATE_PEM: &str = include_str!("../tests/fixtures/keys/ed25519-other.pem");
    const RSA_PRIVATE_PEM: &str = include_str!("../tests/fixtures/keys/rsa2048.pem");
    const RSA_PUBLIC_PEM: &str = include_str!("../tests/fixtures/keys/rsa2048.pub.pem");
    const RSA_PKCS1_PUBLIC_PEM: &str = include_str!("../tests/fixtures/keys/rsa2048.pkcs1.pub.pem");
    const RSA_OTHER_PRIVATE_PEM: &str = include_str!("../tests/fixtures/keys/rsa2048-other.pem");
    const RSA_2047_PUBLIC_PEM: &str = include_str!("../tests/fixtures/keys/rsa2047.pub.pem");
    const RSA_4096_PUBLIC_PEM: &str = include_str!("../tests/fixtures/keys/rsa4096.pub.pem");
    const RSA_4097_PUBLIC_PEM: &str = include_str!("../tests/fixtures/keys/rsa4097.pub.pem");
    const P256_PUBLIC_PEM: &str = include_str!("../tests/fixtures/keys/p256.pub.pem");
    /// An Ed25519 SPKI whose point is the curve's identity (small order).
    const ED25519_WEAK_PEM: &str = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAAQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n-----END PUBLIC KEY-----\n";

    /// `DOC_PARAMS` signed with the fixture keys by binance-connector 3.13
    /// (pycryptodome), the client's own code: what a real client sends.
    const ED25519_DOC_SIGNATURE: &str =
        "GqwP7SBzPKzUJHYUVKxO5TW+z6LLWP60m6PgSz8/4Ln9zROGcxoWUdezGKRJOFOXRUo9cw59xFuZs5Itx2BuAw==";
    const RSA_DOC_SIGNATURE: &str = "CkryYYdnarhXAXtCYFWse+m+cGcGMkYvL8UgGhboHsCLtyn8N0yNO9WIUh7wa+gRVPwNOmgclo3zS170gbhtRnuFsGGitEFQPrQ+inkkf4xppM3lOLO7FbbzUCSxVvI6zeNkWyG0CKX795WwQiXbhTBYxw/uZ+yyBatPocbJ+Rh0BhlT3sENUZp3BW/KDlIhzV94Xf7g6du3EjUcItqYAZeZ0I9OlYpDTS7fqHB3BOmxWbdVLklwaTOeMFQuEWm2k7nfr34aRK/SJWigDeS/mmNsCZsXAPnrNzad3Xq8sfuMMBKvm82ZqHbfhmmsUOcXzsOvch60TBu1x7N5VH5Thw==";

    /// What signs requests in the tests: the private half of a fixture key
    /// (or the HMAC secret).
    enum Signer {
        Hmac(&'static str),
        Ed25519(ed25519_dalek::SigningKey),
        Rsa(rsa::pkcs1v15::SigningKey<Sha256>),
    }

    impl Signer {
        fn of(key_type: KeyType, other: bool) -> Signer {
            use ed25519_dalek::pkcs8::DecodePrivateKey;
            match (key_type, other) {
                (KeyType::HmacSha256, false) => Signer::Hmac(DOC_SECRET),
                (KeyType::HmacSha256, true) => Signer::Hmac("another secret"),
                (KeyType::Ed25519, other) => {
                    let pem = if other {
                        ED25519_OTHER_PRIVATE_PEM
                    } else {
                        ED25519_PRIVATE_PEM
                    };
                    Signer::Ed25519(ed25519_dalek::SigningKey::from_pkcs8_pem(pem).unwrap())
                }
                (KeyType::Rsa, other) => {
                    let pem = if other { RSA_OTHER_PRIVATE_PEM } else { RSA_PRIVATE_PEM };
                    let private = rsa::RsaPrivateKey::from_pkcs8_pem(pem).unwrap();
                    Signer::Rsa(rsa::pkcs1v15::SigningKey::new(private))
                }
            }
        }

        /// The signature as a client computes it, before URL-encoding:
        /// hex for HMAC, base64 otherwise.
        fn sign(&self, payload: &[u8]) -> String {
            use rsa::signature::{SignatureEncoding, Signer as _};
            let base64 = base64::engine::general_purpose::STANDARD;
            match self {
                Signer::Hmac(secret) => sign(secret.as_bytes(), payload),
                Signer::Ed25519(key) => base64.encode(key.sign(payload).to_bytes()),
                Signer::Rsa(key) => base64.encode(key.sign(payload).to_bytes()),
            }
        }

        /// The same signature bytes in the other encoding (base64 for
        /// HMAC, hex otherwise): what a client mixing the rules sends.
        fn sign_in_wrong_encoding(&self, payload: &[u8]) -> String {
            let base64 = base64::engine::general_purpose::STANDARD;
            let signature = self.sign(payload);
            let bytes = match self {
                Signer::Hmac(_) => return base64.encode(decode_hex_32(signature.as_bytes()).unwrap()),
                _ => base64.decode(signature).unwrap(),
            };
            bytes.iter().map(|b| format!("{b:02x}")).collect()
        }
    }

    fn public_key(key_type: KeyType) -> KeyMaterial {
        match key_type {
            KeyType::HmacSha256 => hmac(DOC_SECRET),
            KeyType::Ed25519 => KeyMaterial::from_public_pem(key_type, ED25519_PUBLIC_PEM).unwrap(),
            KeyType::Rsa => KeyMaterial::from_public_pem(key_type, RSA_PUBLIC_PEM).unwrap(),
        }
    }

    /// Every character as `%XX`, as a client encoding more than it must.
    fn percent_encode_all(text: &str) -> String {
        text.bytes().map(|b| format!("%{b:02X}")).collect()
    }

    /// The URL encoding of a base64 signature (binance-connector's).
    fn url_encode(signature: &str) -> String {
        signature.replace('+', "%2B").replace('/', "%2F").replace('=', "%3D")
    }

    /// One key of each type: users 10 (HMAC), 11 (Ed25519), 12 (RSA).
    fn store_of_each_type() -> KeyStore {
        let mut store = KeyStore::new(8);
        for (i, key_type) in KeyType::ALL.into_iter().enumerate() {
            let record = KeyRecord {
                user_id: 10 + i as u64,
                material: public_key(key_type),
                scopes: Scopes::ALL,
                revoked: false,
            };
            store.insert(api_key_of(key_type).to_owned(), record).unwrap();
        }
        store
    }

    fn api_key_of(key_type: KeyType) -> &'static str {
        match key_type {
            KeyType::HmacSha256 => "hmackey",
            KeyType::Ed25519 => "ed25519key",
            KeyType::Rsa => "rsakey",
        }
    }

    #[test]
    fn fixture_keys_sign_as_binance_connector_does() {
        let payload = DOC_PARAMS.as_bytes();
        let table = [
            (KeyType::HmacSha256, DOC_SIGNATURE),
            (KeyType::Ed25519, ED25519_DOC_SIGNATURE),
            (KeyType::Rsa, RSA_DOC_SIGNATURE),
        ];
        for (key_type, expected) in table {
            assert_eq!(Signer::of(key_type, false).sign(payload), expected, "{key_type}");
            let record = KeyRecord {
                user_id: 1,
                material: public_key(key_type),
                scopes: Scopes::ALL,
                revoked: false,
            };
            assert_eq!(record.key_type(), key_type);
            assert!(record.verify(payload, expected), "{key_type}");
            assert!(!record.verify(&payload[1..], expected), "{key_type}");
        }
    }

    #[test]
    fn authenticates_each_key_type_with_exact_codes() {
        let store = store_of_each_type();
        let now = DOC_TIME_MS + 10;
        let params = DOC_PARAMS;
        // Signatures as clients send them: URL-encoded (base64's `+`, `/`
        // and `=` as %2B, %2F and %3D; hex is the same encoded or not).
        /// (name, the signature from the key's and another key's signer,
        /// timestamp and recvWindow if not the good ones, the error code).
        type Case<'a> = (
            &'a str,
            fn(&Signer, &Signer) -> String,
            Option<&'a str>,
            Option<&'a str>,
            Option<i32>,
        );
        let cases: &[Case] = &[
            (
                "good",
                |s, _| url_encode(&s.sign(DOC_PARAMS.as_bytes())),
                None,
                None,
                None,
            ),
            (
                "bad",
                |s, _| url_encode(&s.sign(b"symbol=LTCBTC&side=SELL")),
                None,
                None,
                Some(-1022),
            ),
            (
                "another key's",
                |_, other| url_encode(&other.sign(DOC_PARAMS.as_bytes())),
                None,
                None,
                Some(-1022),
            ),
            (
                "wrong encoding",
                |s, _| url_encode(&s.sign_in_wrong_encoding(DOC_PARAMS.as_bytes())),
                None,
                None,
                Some(-1022),
            ),
            (
                "every character percent-encoded",
                |s, _| percent_encode_all(&s.sign(DOC_PARAMS.as_bytes())),
                None,
                None,
                None,
            ),
            (
                "stale",
                |s, _| url_encode(&s.sign(DOC_PARAMS.as_bytes())),
                Some("1499827314558"),
                None,
                Some(-1021),
            ),
            (
                "recvWindow too large",
                |s, _| url_encode(&s.sign(DOC_PARAMS.as_bytes())),
                None,
                Some("60001"),
                Some(-1131),
            ),
        ];
        for key_type in KeyType::ALL {
            let (signer, other) = (Signer::of(key_type, false), Signer::of(key_type, true));
            for (name, signature, timestamp, recv_window, expected) in cases {
                let query = format!("{params}&signature={}", signature(&signer, &other));
                let request = AuthRequest {
                    api_key: Some(api_key_of(key_type).as_bytes()),
                    signed: rest(&query, ""),
                    timestamp: Some(timestamp.unwrap_or("1499827319559")),
                    recv_window: Some(recv_window.unwrap_or("5000")),
                };
                let got = authenticate(&store, &request, Scope::Trade, true, now);
                let got = got.map(|c| (c.user_id, c.key_type)).map_err(|e| e.code());
                let user = 10 + KeyType::ALL.iter().position(|t| *t == key_type).unwrap() as u64;
                let expected = expected.map_or(Ok((user, key_type)), Err);
                assert_eq!(got, expected, "{key_type} {name}");
            }
        }
    }

    /// A `+` sent as is reads as a space (form encoding), as on Binance:
    /// base64 signatures must be URL-encoded.
    #[test]
    fn unencoded_plus_in_a_base64_signature_fails() {
        let store = store_of_each_type();
        for (key_type, signature) in [
            (KeyType::Ed25519, ED25519_DOC_SIGNATURE),
            (KeyType::Rsa, RSA_DOC_SIGNATURE),
        ] {
            assert!(signature.contains('+'));
            let query = format!("{DOC_PARAMS}&signature={signature}");
            let request = AuthRequest {
                api_key: Some(api_key_of(key_type).as_bytes()),
                signed: rest(&query, ""),
                timestamp: Some("1499827319559"),
                recv_window: None,
            };
            let got = authenticate(&store, &request, Scope::Trade, true, DOC_TIME_MS);
            assert_eq!(got.map_err(|e| e.code()).map(|c| c.user_id), Err(-1022), "{key_type}");
        }
    }

    #[test]
    fn payload_part_authenticates_each_key_type() {
        let store = store_of_each_type();
        let payload = DOC_PARAMS.as_bytes();
        for key_type in KeyType::ALL {
            let signature = Signer::of(key_type, false).sign(payload);
            let other = Signer::of(key_type, true).sign(payload);
            let encoded = url_encode(&signature);
            let user = 10 + KeyType::ALL.iter().position(|t| *t == key_type).unwrap() as u64;
            type Case<'a> = (&'a str, Option<&'a str>, Result<(u64, KeyType), i32>);
            let table: &[Case] = &[
                ("good", Some(&signature), Ok((user, key_type))),
                ("none", None, Err(-1102)),
                ("empty", Some(""), Err(-1102)),
                ("another key's", Some(&other), Err(-1022)),
                ("tampered", Some(&signature[1..]), Err(-1022)),
                // The WebSocket API's signature is a JSON string, never
                // URL-encoded: it is used as sent. (Hex has nothing to
                // encode, so HMAC is the same either way.)
                (
                    "URL-encoded",
                    Some(&encoded),
                    if encoded == signature {
                        Ok((user, key_type))
                    } else {
                        Err(-1022)
                    },
                ),
            ];
            for (name, signature, expected) in table {
                let request = AuthRequest {
                    api_key: Some(api_key_of(key_type).as_bytes()),
                    signed: SignedPart::Payload {
                        payload,
                        signature: *signature,
                    },
                    timestamp: Some("1499827319559"),
                    recv_window: Some("5000"),
                };
                let got = authenticate(&store, &request, Scope::Trade, true, DOC_TIME_MS);
                let got = got.map(|c| (c.user_id, c.key_type)).map_err(|e| e.code());
                assert_eq!(got, *expected, "{key_type} {name}");
            }
        }
    }

    #[test]
    fn reads_public_keys_and_refuses_the_rest() {
        use KeyType::{Ed25519, HmacSha256, Rsa};
        let wrong = |expected, found: &str| {
            Err(KeyError::WrongKind {
                expected,
                found: found.into(),
            })
        };
        let too_long = format!("{RSA_4096_PUBLIC_PEM}{}", " ".repeat(PUBLIC_KEY_PEM_BYTES_MAX));
        let crlf = RSA_PUBLIC_PEM.replace('\n', "\r\n");
        let not_der = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
        let table: Vec<(KeyType, &str, Result<(), KeyError>)> = vec![
            (Ed25519, ED25519_PUBLIC_PEM, Ok(())),
            (Rsa, RSA_PUBLIC_PEM, Ok(())),
            (Rsa, RSA_PKCS1_PUBLIC_PEM, Ok(())),
            (Rsa, &crlf, Ok(())),
            (Rsa, RSA_4096_PUBLIC_PEM, Ok(())),
            (Rsa, RSA_2047_PUBLIC_PEM, Err(KeyError::RsaBits(2047))),
            (Rsa, RSA_4097_PUBLIC_PEM, Err(KeyError::RsaBits(4097))),
            (Ed25519, RSA_PUBLIC_PEM, wrong(Ed25519, "an RSA key")),
            (Ed25519, RSA_PKCS1_PUBLIC_PEM, wrong(Ed25519, "an RSA key")),
            (Rsa, ED25519_PUBLIC_PEM, wrong(Rsa, "an ED25519 key")),
            (Rsa, P256_PUBLIC_PEM, wrong(Rsa, "a key of algorithm 1.2.840.10045.2.1")),
            (Ed25519, ED25519_PRIVATE_PEM, Err(KeyError::PrivateKey)),
            (Rsa, RSA_PRIVATE_PEM, Err(KeyError::PrivateKey)),
            (Ed25519, ED25519_WEAK_PEM, Err(KeyError::WeakEd25519)),
            (Ed25519, not_der, Err(KeyError::Malformed(Ed25519))),
            (Rsa, not_der, Err(KeyError::Malformed(Rsa))),
            (Ed25519, "", Err(KeyError::NotPem)),
            (
                Rsa,
                "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA",
                Err(KeyError::NotPem),
            ),
            (Ed25519, &ED25519_PUBLIC_PEM[..60], Err(KeyError::NotPem)),
            (Rsa, &too_long, Err(KeyError::TooLong)),
            (HmacSha256, ED25519_PUBLIC_PEM, Err(KeyError::NotWanted)),
        ];
        for (key_type, pem, expected) in table {
            let got = KeyMaterial::from_public_pem(key_type, pem);
            assert_eq!(
                got.as_ref().map(drop).map_err(Clone::clone),
                expected,
                "{key_type} {pem:?}"
            );
            if let Ok(material) = got {
                assert_eq!(material.key_type(), key_type);
            }
        }
        // PKCS#1 and SPKI of one key are the same key.
        assert_eq!(
            KeyMaterial::from_public_pem(Rsa, RSA_PKCS1_PUBLIC_PEM),
            KeyMaterial::from_public_pem(Rsa, RSA_PUBLIC_PEM)
        );
    }

    #[test]
    fn key_errors_carry_codes_and_clear_messages() {
        let table: &[(KeyError, i32, &str)] = &[
            (
                KeyError::NotWanted,
                -1106,
                "Parameter 'publicKey' sent when not required.",
            ),
            (
                KeyError::WrongKind {
                    expected: KeyType::Ed25519,
                    found: "an RSA key".into(),
                },
                -1100,
                "publicKey is an RSA key, not an ED25519 key.",
            ),
            (
                KeyError::RsaBits(1024),
                -1100,
                "RSA keys must have 2048 to 4096 bits; this one has 1024.",
            ),
            (
                KeyError::NotPem,
                -1100,
                "publicKey is not a PEM public key (BEGIN PUBLIC KEY, or BEGIN RSA PUBLIC KEY for RSA).",
            ),
            (
                KeyError::Malformed(KeyType::Rsa),
                -1100,
                "publicKey is not a valid RSA public key.",
            ),
        ];
        for (error, code, msg) in table {
            let http: HttpError = error.clone().into();
            assert_eq!((http.status, http.code, http.msg.as_str()), (400, *code, *msg));
        }
    }

    #[test]
    fn stored_keys_read_back_and_are_canonical() {
        for key_type in KeyType::ALL {
            let material = public_key(key_type);
            let stored = material.to_stored();
            assert_eq!(KeyMaterial::from_stored(key_type, &stored).as_ref(), Ok(&material));
        }
        // Whichever PEM an RSA key came in, it is stored as its SPKI DER.
        let (_, spki) = der::pem::decode_vec(RSA_PUBLIC_PEM.as_bytes()).unwrap();
        let from_pkcs1 = KeyMaterial::from_public_pem(KeyType::Rsa, RSA_PKCS1_PUBLIC_PEM).unwrap();
        assert_eq!(from_pkcs1.to_stored(), spki);
        assert_eq!(hmac(DOC_SECRET).to_stored(), DOC_SECRET.as_bytes());
        let ed25519 = public_key(KeyType::Ed25519).to_stored();
        let table: &[(KeyType, &[u8], KeyError)] = &[
            (KeyType::Ed25519, &[0x30, 0x00], KeyError::Malformed(KeyType::Ed25519)),
            (
                KeyType::Rsa,
                &ed25519,
                KeyError::WrongKind {
                    expected: KeyType::Rsa,
                    found: "an ED25519 key".into(),
                },
            ),
            (KeyType::HmacSha256, &[0xff], KeyError::Malformed(KeyType::HmacSha256)),
        ];
        for (key_type, stored, expected) in table {
            assert_eq!(KeyMaterial::from_stored(*key_type, stored).as_ref(), Err(expected));
        }
    }

    #[test]
    fn key_types_have_binance_names() {
        for (key_type, name) in [
            (KeyType::HmacSha256, "HMAC_SHA256"),
            (KeyType::Ed25519, "ED25519"),
            (KeyType::Rsa, "RSA"),
        ] {
            assert_eq!((key_type.name(), KeyType::parse(name)), (name, Some(key_type)));
        }
        for name in ["HMAC", "ed25519", "Rsa", ""] {
            assert_eq!(KeyType::parse(name), None, "{name}");
        }
    }

    #[test]
    fn public_key_records_print_only_their_type() {
        let store = store_of_each_type();
        let printed: Vec<String> = KeyType::ALL
            .into_iter()
            .map(|t| format!("{:?}", store.lookup(api_key_of(t).as_bytes()).unwrap().material))
            .collect();
        assert_eq!(printed, ["Hmac { secret: <redacted> }", "Ed25519", "Rsa(2048 bits)"]);
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
