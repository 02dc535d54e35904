//! A shard's second Redis connection, in SUBSCRIBE mode on one channel:
//! the client of `super` is request/response only, and a subscribed
//! connection can carry nothing else.
//!
//! The connection is opened like the client's (`AUTH`, `SELECT` from the
//! URL), subscribes, and hands every message to the callback. An idle
//! connection is checked with `PING` every `heartbeat_ms` (allowed while
//! subscribed) and dropped when the answer takes over `command_timeout_ms`;
//! a lost connection is reopened after exponential backoff with full
//! jitter. The callback hears when the subscription starts and when it is
//! lost, since messages published meanwhile are gone for good.
//!
//! **Bounds:** one message over `reply_bytes_max` drops the connection.

use super::{connect, encode_command, within, RedisError, RedisLimits, RedisTarget, Reply};
use crate::resilience::{xorshift, Backoff};
use futures_lite::AsyncWriteExt;
use glommio::net::TcpStream;
use redis_protocol::resp2::decode::decode;
use std::cell::Cell;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

/// What the subscriber tells its owner.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Event<'a> {
    /// Subscribed (again): messages flow from now on.
    Subscribed,
    /// The connection is gone; messages published until the next
    /// `Subscribed` are not seen.
    Lost,
    Message(&'a [u8]),
}

struct Shared {
    closed: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

/// Stops the subscriber when told or dropped.
pub(crate) struct Subscriber {
    shared: Rc<Shared>,
}

impl Subscriber {
    /// Subscribes to `channel` from a task on the current executor, until
    /// [`Subscriber::close`].
    pub(crate) fn start(
        target: RedisTarget,
        limits: RedisLimits,
        channel: String,
        seed: u64,
        on_event: Box<dyn Fn(Event<'_>)>,
    ) -> Subscriber {
        let shared = Rc::new(Shared {
            closed: Cell::new(false),
            waker: Cell::new(None),
        });
        let run = run(shared.clone(), target, limits, channel, seed.max(1), on_event);
        glommio::spawn_local(run).detach();
        Subscriber { shared }
    }

    pub(crate) fn close(&self) {
        self.shared.closed.set(true);
        if let Some(waker) = self.shared.waker.take() {
            waker.wake();
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.close();
    }
}

async fn run(
    shared: Rc<Shared>,
    target: RedisTarget,
    limits: RedisLimits,
    channel: String,
    mut random: u64,
    on_event: Box<dyn Fn(Event<'_>)>,
) {
    let mut backoff = Backoff::new(limits.backoff_base_ms, limits.backoff_max_ms);
    while !shared.closed.get() {
        let session = async {
            let mut stream = connect(&target, &limits).await?;
            let subscribed = listen(&mut stream, &limits, &channel, &on_event, &mut backoff).await;
            let _ = stream.close().await;
            subscribed
        };
        let outcome = futures_lite::future::or(async { Some(session.await) }, async {
            until_closed(&shared).await;
            None
        })
        .await;
        match outcome {
            None => break,
            Some(Err(SessionEnd::Subscribed)) => on_event(Event::Lost),
            Some(Err(SessionEnd::Never)) | Some(Ok(())) => {}
        }
        let delay = backoff.next_delay_ms(xorshift(&mut random));
        futures_lite::future::or(
            glommio::timer::sleep(Duration::from_millis(delay)),
            until_closed(&shared),
        )
        .await;
    }
}

/// When a connection ended: before or after it had subscribed. (Why is
/// not kept: either way it is opened again.)
enum SessionEnd {
    Never,
    Subscribed,
}

impl From<RedisError> for SessionEnd {
    fn from(_: RedisError) -> SessionEnd {
        SessionEnd::Never
    }
}

/// Subscribes and hands messages on until the connection fails.
async fn listen(
    stream: &mut TcpStream,
    limits: &RedisLimits,
    channel: &str,
    on_event: &dyn Fn(Event<'_>),
    backoff: &mut Backoff,
) -> Result<(), SessionEnd> {
    let mut read = Vec::new();
    write(stream, limits, &encode_command(&[b"SUBSCRIBE", channel.as_bytes()])).await?;
    let first = within(
        limits.command_timeout_ms,
        next_frame(stream, &mut read, limits.reply_bytes_max),
    )
    .await??;
    if !is_kind(&first, b"subscribe") {
        return Err(SessionEnd::Never);
    }
    backoff.reset();
    on_event(Event::Subscribed);
    let lost = |_: RedisError| SessionEnd::Subscribed;
    let mut pinged = false;
    loop {
        let wait = if pinged {
            limits.command_timeout_ms
        } else {
            limits.heartbeat_ms
        };
        match within(wait, next_frame(stream, &mut read, limits.reply_bytes_max)).await {
            Ok(Ok(frame)) => {
                pinged = false;
                if let Reply::Array(words) = &frame {
                    if let (true, Some(Reply::Bulk(payload))) = (is_kind(&frame, b"message"), words.get(2)) {
                        on_event(Event::Message(payload));
                    }
                }
            }
            Ok(Err(error)) => return Err(lost(error)),
            Err(_) if pinged => return Err(SessionEnd::Subscribed),
            Err(_) => {
                write(stream, limits, &encode_command(&[b"PING"])).await.map_err(lost)?;
                pinged = true;
            }
        }
    }
}

fn is_kind(frame: &Reply, kind: &[u8]) -> bool {
    matches!(frame, Reply::Array(words) if matches!(words.first(), Some(Reply::Bulk(k)) if k.eq_ignore_ascii_case(kind)))
}

async fn write(stream: &mut TcpStream, limits: &RedisLimits, bytes: &[u8]) -> Result<(), RedisError> {
    within(limits.command_timeout_ms, stream.write_all(bytes))
        .await?
        .map_err(|e| RedisError::Io(e.to_string()))
}

/// The next whole frame; `read` keeps what follows it.
async fn next_frame(stream: &mut TcpStream, read: &mut Vec<u8>, bytes_max: usize) -> Result<Reply, RedisError> {
    let mut chunk = [0u8; 4096];
    loop {
        match decode(read) {
            Ok(Some((frame, used))) => {
                read.drain(..used);
                return Ok(Reply::of(frame));
            }
            Ok(None) => {}
            Err(e) => return Err(RedisError::Protocol(e.to_string())),
        }
        if read.len() > bytes_max {
            return Err(RedisError::Protocol(format!("a message over {bytes_max} bytes")));
        }
        super::read_some(stream, read, &mut chunk).await?;
    }
}

async fn until_closed(shared: &Shared) {
    futures_lite::future::poll_fn(|cx| {
        if shared.closed.get() {
            return Poll::Ready(());
        }
        shared.waker.set(Some(cx.waker().clone()));
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::parse_url;
    use crate::redis::tests::{limits, on_executor};
    use std::cell::RefCell;
    use std::time::Instant;
    use tradsys_redistest::RedisServer;

    async fn until(what: &str, condition: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !condition() {
            assert!(Instant::now() < deadline, "never: {what}");
            glommio::timer::sleep(Duration::from_millis(2)).await;
        }
    }

    #[test]
    fn messages_arrive_and_a_lost_server_is_subscribed_to_again() {
        let mut server = RedisServer::start();
        let url = server.url();
        let port = server.port();
        let (to_test, from_test) = std::sync::mpsc::channel::<()>();
        let (to_server, at_server) = std::sync::mpsc::channel::<()>();
        let client = std::thread::spawn(move || {
            on_executor(move || async move {
                let events: Rc<RefCell<Vec<String>>> = Rc::default();
                let seen = events.clone();
                let on_event = Box::new(move |event: Event<'_>| {
                    seen.borrow_mut().push(match event {
                        Event::Subscribed => "subscribed".to_string(),
                        Event::Lost => "lost".to_string(),
                        Event::Message(m) => String::from_utf8_lossy(m).into_owned(),
                    })
                });
                let limits = RedisLimits {
                    heartbeat_ms: 20,
                    ..limits()
                };
                let target = parse_url(&url).expect("url");
                let subscriber = Subscriber::start(target, limits, "ch".to_string(), 3, on_event);
                until("subscribed", || events.borrow().len() == 1).await;
                to_server.send(()).expect("send");
                until("two messages", || events.borrow().len() == 3).await;
                to_server.send(()).expect("send");
                let _ = from_test.recv();
                until("lost and subscribed again", || events.borrow().len() == 5).await;
                to_server.send(()).expect("send");
                until("one more message", || events.borrow().len() == 6).await;
                subscriber.close();
                assert_eq!(
                    *events.borrow(),
                    ["subscribed", "a 1", "b 2", "lost", "subscribed", "c 3"]
                );
            })
        });
        // One receiver each time: the subscriber, once it said so.
        let publish = |server: &RedisServer, message: &str| {
            assert_eq!(server.command(&["PUBLISH", "ch", message]), ":1\r\n");
        };
        at_server.recv().expect("subscribed");
        publish(&server, "a 1");
        server.command(&["PUBLISH", "other", "x"]);
        publish(&server, "b 2");
        at_server.recv().expect("two messages");
        server.kill9();
        server.start_again();
        assert_eq!(server.port(), port);
        to_test.send(()).expect("send");
        at_server.recv().expect("subscribed again");
        publish(&server, "c 3");
        client.join().expect("the client's thread");
    }
}
