//! Webhook deliveries: a job per account, that POSTs the account's
//! oldest waiting event, then lets the queue move on to the next one
//! (`Queue::next_event`), so that an account's events arrive in order and
//! one at a time whatever the number of workers. A delivery that fails
//! (no connection, a timeout, a status other than 2xx) fails the job: it
//! runs again after its backoff, with the same event. At its last attempt
//! the event becomes a dead letter and the account's next event goes on.
//!
//! Connections are HTTP/1.1 and kept alive per address (at most
//! [`IDLE_PER_ADDRESS_MAX`] idle per worker), through TLS (rustls, ring)
//! for `https://` URLs: the receiver's certificate is checked against the
//! public CA roots, or against `webhook_ca_file` when it is set. A reply
//! is read to its end (`Content-Length`); one without it closes its
//! connection.

use super::worker::Finished;
use super::{Job, JobKind, Priority, Queue};
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use futures_rustls::client::TlsStream;
use futures_rustls::pki_types::pem::PemObject;
use futures_rustls::pki_types::{CertificateDer, ServerName};
use futures_rustls::rustls::{ClientConfig, RootCertStore};
use futures_rustls::TlsConnector;
use glommio::net::TcpStream;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The longest URL a webhook may have.
const URL_BYTES_MAX: usize = 2048;
/// Idle connections a worker keeps per address.
const IDLE_PER_ADDRESS_MAX: usize = 16;
/// The largest reply head and body read from a receiver.
const REPLY_BYTES_MAX: usize = 64 * 1024;

/// A webhook URL, checked: `http://host[:port]/path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Target {
    /// `host:port`, to connect to.
    pub(crate) addr: String,
    /// The `Host` header.
    pub(crate) host: String,
    /// Path and query.
    pub(crate) path: String,
    /// `https`: the name the certificate must carry, else `None`.
    pub(crate) tls_name: Option<String>,
}

/// Checks `url`; the error says what is wrong.
pub(crate) fn parse_url(url: &str) -> Result<Target, String> {
    if url.len() > URL_BYTES_MAX || !url.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "a webhook URL has at most {URL_BYTES_MAX} printable ASCII characters"
        ));
    }
    let (rest, tls, default_port) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
        (Some(rest), _) => (rest, false, 80),
        (_, Some(rest)) => (rest, true, 443),
        _ => return Err("a webhook URL starts with http:// or https://".into()),
    };
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err("a webhook URL names its host (and no user)".into());
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => {
            let port: u16 = port.parse().map_err(|_| format!("bad port in {url}"))?;
            (host, port)
        }
        _ => (authority, default_port),
    };
    if host.is_empty() || port == 0 {
        return Err(format!("bad host or port in {url}"));
    }
    let name = host.trim_start_matches('[').trim_end_matches(']');
    if tls && ServerName::try_from(name.to_string()).is_err() {
        return Err(format!("{name} is not a name a certificate can carry"));
    }
    Ok(Target {
        addr: format!("{host}:{port}"),
        host: authority.to_string(),
        path: path.to_string(),
        tls_name: tls.then(|| name.to_string()),
    })
}

/// An event as it waits for delivery: whose, where to, signed, its id and
/// body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Delivery {
    pub(crate) user: u64,
    pub(crate) url: String,
    pub(crate) id: String,
    /// Hex HMAC-SHA256 of `body` with the webhook's secret.
    pub(crate) signature: String,
    pub(crate) body: String,
}

/// The job that delivers `user`'s waiting events.
pub(crate) fn job(user: u64, now_ms: u64) -> Job {
    Job {
        id: format!("w{user}t{now_ms}"),
        kind: JobKind::Webhook,
        priority: Priority::High,
        payload: user.to_string(),
        attempts: 0,
        enqueued_ms: now_ms,
    }
}

/// A dead letter's job: the event itself, so that re-queueing it puts it
/// back at the end of its account's events.
fn dead_job(job: &Job, event: &str) -> Job {
    Job {
        payload: event.to_string(),
        attempts: job.attempts + 1,
        ..job.clone()
    }
}

/// A connection to a receiver.
enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// Keep-alive connections of one worker, and how it checks receivers'
/// certificates.
pub(crate) struct Pool {
    idle: RefCell<HashMap<String, Vec<Conn>>>,
    tls: TlsConnector,
}

impl Pool {
    /// A pool that trusts the public CA roots (webpki-roots), or only the
    /// PEM certificates of `ca_file` when it names one.
    pub(crate) fn new(ca_file: Option<&Path>) -> Result<Pool, String> {
        let mut roots = RootCertStore::empty();
        match ca_file {
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            Some(path) => {
                let certs = CertificateDer::pem_file_iter(path).map_err(|e| format!("{}: {e}", path.display()))?;
                for cert in certs {
                    let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
                    roots.add(cert).map_err(|e| format!("{}: {e}", path.display()))?;
                }
                if roots.is_empty() {
                    return Err(format!("{}: no certificate in it", path.display()));
                }
            }
        }
        // ring: builds with the C compiler alone (aws-lc-rs needs cmake);
        // it has no post-quantum key exchange, which rustls now notes.
        #[allow(deprecated)]
        let provider = Arc::new(futures_rustls::rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Pool {
            idle: RefCell::default(),
            tls: TlsConnector::from(Arc::new(config)),
        })
    }
}

/// Runs one webhook job: delivers the account's oldest event, or puts a
/// re-queued dead letter back in its account's events.
pub(crate) async fn run(
    queue: &Queue,
    pool: &Pool,
    job: &Job,
    attempts_max: u32,
    timeout_ms: u64,
) -> Result<Finished, String> {
    let now_ms = crate::clock::now_ms();
    let Ok(user) = job.payload.parse::<u64>() else {
        // A dead letter re-queued: its event goes back in line.
        let delivery: Delivery = serde_json::from_str(&job.payload).map_err(|e| format!("not a webhook event: {e}"))?;
        queue
            .push_event(delivery.user, &job.payload, &self::job(delivery.user, now_ms))
            .await
            .map_err(|e| e.to_string())?;
        return Ok(Finished::Done);
    };
    let Some(event) = queue.head_event(user).await.map_err(|e| e.to_string())? else {
        return Ok(Finished::Done);
    };
    let next = self::job(user, now_ms);
    let delivery: Delivery = match serde_json::from_str(&event) {
        Ok(delivery) => delivery,
        Err(e) => {
            let error = format!("not a webhook event: {e}");
            queue
                .next_event(user, &next, Some((&dead_job(job, &event), &error)))
                .await
                .map_err(|e| e.to_string())?;
            return Ok(Finished::DeadLettered);
        }
    };
    let outcome = match parse_url(&delivery.url) {
        Ok(target) => post(pool, &target, &delivery, timeout_ms).await,
        Err(e) => Err(e),
    };
    match outcome {
        Ok(()) => {
            queue.next_event(user, &next, None).await.map_err(|e| e.to_string())?;
            Ok(Finished::Done)
        }
        Err(error) if job.attempts + 1 >= attempts_max => {
            queue
                .next_event(user, &next, Some((&dead_job(job, &event), &error)))
                .await
                .map_err(|e| e.to_string())?;
            Ok(Finished::DeadLettered)
        }
        Err(error) => Err(error),
    }
}

/// POSTs `delivery` to `target`: Ok for a 2xx reply.
async fn post(pool: &Pool, target: &Target, delivery: &Delivery, timeout_ms: u64) -> Result<(), String> {
    let request = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         X-Tradsys-Event-Id: {}\r\nX-Tradsys-Signature: {}\r\n\r\n{}",
        target.path,
        target.host,
        delivery.body.len(),
        delivery.id,
        delivery.signature,
        delivery.body
    );
    let key = format!("{}{}", if target.tls_name.is_some() { "s:" } else { "" }, target.addr);
    let idle = pool.idle.borrow_mut().get_mut(&key).and_then(Vec::pop);
    let exchange = async {
        let mut conn = match idle {
            Some(conn) => conn,
            None => connect(pool, target).await?,
        };
        let (status, keep) = match &mut conn {
            Conn::Plain(stream) => exchange(stream, request.as_bytes()).await?,
            Conn::Tls(stream) => exchange(stream.as_mut(), request.as_bytes()).await?,
        };
        Ok::<_, String>((conn, status, keep))
    };
    let timed_out = async {
        glommio::timer::sleep(Duration::from_millis(timeout_ms)).await;
        Err(format!("no reply from {} within {timeout_ms} ms", target.addr))
    };
    let (stream, status, keep) = futures_lite::future::or(exchange, timed_out).await?;
    if keep {
        let mut idle = pool.idle.borrow_mut();
        let streams = idle.entry(key).or_default();
        if streams.len() < IDLE_PER_ADDRESS_MAX {
            streams.push(stream);
        }
    }
    match status {
        200..=299 => Ok(()),
        status => Err(format!("the receiver answered {status}")),
    }
}

/// A new connection to `target`, through TLS for `https`.
async fn connect(pool: &Pool, target: &Target) -> Result<Conn, String> {
    let stream = TcpStream::connect(target.addr.as_str())
        .await
        .map_err(|e| format!("connect to {}: {e}", target.addr))?;
    let Some(name) = &target.tls_name else {
        return Ok(Conn::Plain(stream));
    };
    let name = ServerName::try_from(name.clone()).map_err(|e| format!("{name}: {e}"))?;
    let tls = pool
        .tls
        .connect(name, stream)
        .await
        .map_err(|e| format!("TLS with {}: {e}", target.addr))?;
    Ok(Conn::Tls(Box::new(tls)))
}

/// Sends `request` and reads the reply.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, request: &[u8]) -> Result<(u16, bool), String> {
    stream.write_all(request).await.map_err(|e| format!("send: {e}"))?;
    stream.flush().await.map_err(|e| format!("send: {e}"))?;
    read_reply(stream).await
}

/// Reads one reply: its status, and whether the connection can carry
/// the next request.
async fn read_reply<S: AsyncRead + Unpin>(stream: &mut S) -> Result<(u16, bool), String> {
    let mut read = Vec::with_capacity(512);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = read.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if read.len() > REPLY_BYTES_MAX {
            return Err("a reply head too large".into());
        }
        let n = stream.read(&mut chunk).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("the receiver closed the connection".into());
        }
        read.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&read[..head_end]).to_ascii_lowercase();
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("a reply without a status")?;
    let length: Option<usize> = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok());
    let close = head
        .lines()
        .any(|l| l.starts_with("connection:") && l.contains("close"));
    let Some(length) = length.filter(|&l| l <= REPLY_BYTES_MAX) else {
        return Ok((status, false));
    };
    let mut have = read.len() - head_end;
    while have < length {
        let n = stream.read(&mut chunk).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("the receiver closed the connection".into());
        }
        have += n;
    }
    Ok((status, !close && have == length))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_urls_are_http_with_a_host() {
        let target = |addr: &str, host: &str, path: &str| {
            Ok(Target {
                addr: addr.into(),
                host: host.into(),
                path: path.into(),
                tls_name: None,
            })
        };
        assert_eq!(
            parse_url("http://127.0.0.1:9000/hook?a=1"),
            target("127.0.0.1:9000", "127.0.0.1:9000", "/hook?a=1")
        );
        assert_eq!(parse_url("http://localhost"), target("localhost:80", "localhost", "/"));
        let https = parse_url("https://localhost/h").expect("https");
        assert_eq!(
            (https.addr.as_str(), https.tls_name.as_deref()),
            ("localhost:443", Some("localhost"))
        );
        let ip = parse_url("https://127.0.0.1:8443/").expect("https");
        assert_eq!(ip.tls_name.as_deref(), Some("127.0.0.1"));
        assert_eq!(parse_url("http://[::1]:81/x"), target("[::1]:81", "[::1]:81", "/x"));
        for bad in [
            "ftp://x",
            "http://",
            "http://user@h/",
            "http://h:0/",
            "http://h:99999/",
            "http://h /",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }
}
