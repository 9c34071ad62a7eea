//! The interface of a rate limiter shared by every instance on one store.
//! A leaf, so that the store (which implements it on PostgreSQL) and the
//! providers' guard (which uses it) need not know each other.

use std::time::Duration;

use async_trait::async_trait;

/// A rate limiter shared by every instance on one store (PostgreSQL). It
/// replaces the per-process governor limiter, so the providers see the
/// configured rate from the whole cluster, not from each instance.
#[async_trait]
pub trait SharedRate: Send + Sync {
    /// Reserves `cost` cells of limiter `key` (one cell per `interval`, up
    /// to `burst` at once) and returns how long to wait before using them.
    async fn reserve(
        &self,
        key: &str,
        cost: u32,
        interval: Duration,
        burst: u32,
    ) -> Result<Duration, String>;
}
