//! One connection's outbound queue of frames, bounded in bytes, and the
//! frames events are serialized into once per shard.

use super::*;
use crate::ws::text_frame;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// The frames of one event: raw for `/ws` connections and, built only if a
/// subscriber wants it, wrapped as `{"stream":..,"data":..}`.
pub(super) struct Frames {
    pub(super) raw: Rc<[u8]>,
    pub(super) combined: Option<Rc<[u8]>>,
}

/// What pushing a frame came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Push {
    Queued,
    /// This push overflowed the queue: the connection must close with 1008.
    Overflowed,
    /// The queue had already overflowed; nothing was queued.
    Dropped,
}

/// One connection's queue of frames to write, bounded in bytes.
pub(crate) struct Outbound {
    frames: RefCell<VecDeque<Rc<[u8]>>>,
    bytes: Cell<usize>,
    bytes_max: usize,
    overflowed: Cell<bool>,
    /// The last frame is queued: the connection closes once it is written.
    finished: Cell<bool>,
    combined: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl Outbound {
    pub(crate) fn new(bytes_max: usize, combined: bool) -> Outbound {
        Outbound {
            frames: RefCell::new(VecDeque::new()),
            bytes: Cell::new(0),
            bytes_max,
            overflowed: Cell::new(false),
            finished: Cell::new(false),
            combined: Cell::new(combined),
            waker: Cell::new(None),
        }
    }

    pub(crate) fn is_combined(&self) -> bool {
        self.combined.get()
    }

    pub(crate) fn set_combined(&self, combined: bool) {
        self.combined.set(combined);
    }

    /// Whether no frame waits to be written.
    pub(crate) fn is_empty(&self) -> bool {
        self.frames.borrow().is_empty()
    }

    pub(crate) fn is_overflowed(&self) -> bool {
        self.overflowed.get()
    }

    /// True once the last frame is queued (see [`Outbound::push_last`]).
    pub(crate) fn is_finished(&self) -> bool {
        self.finished.get()
    }

    /// Queues the connection's last frame: later pushes are dropped, and
    /// the connection closes normally once the queue is written.
    pub(crate) fn push_last(&self, frame: Rc<[u8]>) -> Push {
        let push = self.push(frame);
        self.finished.set(true);
        self.wake();
        push
    }

    /// Queues `frame`, or marks the queue overflowed and frees it.
    pub(crate) fn push(&self, frame: Rc<[u8]>) -> Push {
        if self.overflowed.get() || self.finished.get() {
            return Push::Dropped;
        }
        let bytes = self.bytes.get() + frame.len();
        if bytes > self.bytes_max {
            self.overflowed.set(true);
            self.bytes.set(0);
            *self.frames.borrow_mut() = VecDeque::new();
            self.wake();
            return Push::Overflowed;
        }
        self.bytes.set(bytes);
        self.frames.borrow_mut().push_back(frame);
        self.wake();
        Push::Queued
    }

    /// The next frame to write.
    pub(crate) fn pop(&self) -> Option<Rc<[u8]>> {
        let mut frames = self.frames.borrow_mut();
        let frame = frames.pop_front()?;
        self.bytes.set(self.bytes.get() - frame.len());
        if frames.is_empty() && frames.capacity() > OUTBOUND_FRAMES_KEPT_MAX {
            *frames = VecDeque::new();
        }
        Some(frame)
    }

    /// Ready when there is a frame to write, the queue overflowed or the
    /// last frame was queued.
    pub(crate) fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.overflowed.get() || self.finished.get() || !self.frames.borrow().is_empty() {
            return Poll::Ready(());
        }
        self.waker.set(Some(cx.waker().clone()));
        Poll::Pending
    }

    fn wake(&self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }
}

pub(super) fn frame_of(payload: &[u8]) -> Rc<[u8]> {
    // JsonWriter output is UTF-8 by construction.
    Rc::from(text_frame(std::str::from_utf8(payload).unwrap_or("{}")))
}

/// A user event for a WebSocket API subscription.
pub(crate) fn subscription_frame(subscription: u32, payload: &[u8]) -> Rc<[u8]> {
    let mut wrapped = Vec::with_capacity(payload.len() + 40);
    wrapped.extend_from_slice(b"{\"subscriptionId\":");
    wrapped.extend_from_slice(itoa::Buffer::new().format(subscription).as_bytes());
    wrapped.extend_from_slice(b",\"event\":");
    wrapped.extend_from_slice(payload);
    wrapped.push(b'}');
    frame_of(&wrapped)
}

pub(super) fn combined_frame(name: &str, payload: &[u8]) -> Rc<[u8]> {
    let mut wrapped = Vec::with_capacity(payload.len() + name.len() + 32);
    wrapped.extend_from_slice(b"{\"stream\":\"");
    wrapped.extend_from_slice(name.as_bytes());
    wrapped.extend_from_slice(b"\",\"data\":");
    wrapped.extend_from_slice(payload);
    wrapped.push(b'}');
    frame_of(&wrapped)
}
