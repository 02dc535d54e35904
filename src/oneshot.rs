//! A single-threaded one-shot slot: one side fills it, the other awaits it.
//!
//! Used to hand a result from the code that completes an operation (a mesh
//! receive loop, the engine host) to the task waiting for it, on the same
//! shard. It needs no executor support, which keeps the waiting logic out of
//! the executor-specific modules.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

struct State<T> {
    value: Option<T>,
    waker: Option<Waker>,
    sender_alive: bool,
}

/// The filling half; dropping it unfilled wakes the receiver with `None`.
pub struct Sender<T>(Rc<RefCell<State<T>>>);
/// The awaiting half: resolves to `Some(value)`, or `None` if the sender was
/// dropped without sending.
pub struct Receiver<T>(Rc<RefCell<State<T>>>);

pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let state = Rc::new(RefCell::new(State {
        value: None,
        waker: None,
        sender_alive: true,
    }));
    (Sender(state.clone()), Receiver(state))
}

impl<T> Sender<T> {
    pub fn send(self, value: T) {
        let waker = {
            let mut state = self.0.borrow_mut();
            state.value = Some(value);
            state.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut state = self.0.borrow_mut();
            state.sender_alive = false;
            state.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Future for Receiver<T> {
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut state = self.0.borrow_mut();
        if let Some(value) = state.value.take() {
            return Poll::Ready(Some(value));
        }
        if !state.sender_alive {
            return Poll::Ready(None);
        }
        state.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivers_or_reports_a_dropped_sender() {
        let (tx, rx) = channel();
        tx.send(7);
        assert_eq!(futures_lite::future::block_on(rx), Some(7));
        let (tx, rx) = channel::<u8>();
        drop(tx);
        assert_eq!(futures_lite::future::block_on(rx), None);
    }
}
