//! Work in flight: a few boxed futures polled together, the first to end
//! taken out (the planner's page writes, the sending loop's transactions).
//! A `Vec` is enough for the handful either keeps at once.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A boxed future that may borrow for `'a`.
pub type InFlight<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Polls every future of `running`; the first that has ended is taken out
/// and its output returned. Use through `std::future::poll_fn`, and only
/// while `running` is not empty (an empty list is pending forever).
pub fn first_ended<T>(running: &mut Vec<InFlight<'_, T>>, cx: &mut Context<'_>) -> Poll<T> {
    for i in 0..running.len() {
        if let Poll::Ready(out) = running[i].as_mut().poll(cx) {
            drop(running.swap_remove(i));
            return Poll::Ready(out);
        }
    }
    Poll::Pending
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_to_end_is_taken_out_and_the_rest_kept() {
        let (tx, rx) = tokio::sync::oneshot::channel::<u8>();
        let mut running: Vec<InFlight<'_, u8>> = vec![
            Box::pin(async move { rx.await.unwrap_or(0) }),
            Box::pin(async { 7 }),
        ];
        let out = std::future::poll_fn(|cx| first_ended(&mut running, cx)).await;
        assert_eq!(out, 7);
        assert_eq!(running.len(), 1);
        tx.send(3).unwrap();
        let out = std::future::poll_fn(|cx| first_ended(&mut running, cx)).await;
        assert_eq!(out, 3);
        assert!(running.is_empty());
    }
}
