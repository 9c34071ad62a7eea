//! What every adapter runs behind: a rate limit (governor for the pace, the
//! `window` log for the exact count, both charged per SMS part), a
//! concurrency limit, a timeout, provider throttling (`Retry-After`
//! pauses the provider), and a circuit breaker that opens after repeated
//! transient failures so traffic moves to the next provider, then lets one
//! probe through after a cool-down.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use governor::{Quota, RateLimiter};
use serde::Deserialize;

use super::{window, Outbound, Provider, ProviderConfig, ProviderError, Receipt};

/// Consecutive transient failures that open the breaker.
pub const BREAKER_THRESHOLD: u32 = 5;
/// How long an open breaker waits before letting a probe through.
pub const BREAKER_COOL_DOWN: Duration = Duration::from_secs(30);

/// The default burst's floor: the shipped `templates.sms_max_segments`.
pub const MIN_BURST: u32 = 3;

/// `"10/s"`, `"600/m"`, `"3600/h"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

impl Rate {
    pub fn parse(raw: &str) -> Result<Rate, String> {
        let bad = || format!("`{raw}` is not a rate; write e.g. 10/s, 600/m or 3600/h");
        let (n, unit) = raw.trim().split_once('/').ok_or_else(bad)?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        let per = match unit.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        if count == 0 {
            return Err(format!("`{raw}`: a rate must be at least 1"));
        }
        Ok(Rate { count, per })
    }

    /// Per second, as a float (for metrics and docs).
    pub fn per_second(&self) -> f64 {
        f64::from(self.count) / self.per.as_secs_f64()
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Rate::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The pace of one process's limiter: a cell every `(per + MARGIN) /
/// count`, with a burst so a message's parts go together and timer
/// granularity is absorbed. governor lets that burst through on top of the
/// steady rate in some window; the `window` log behind it refuses what
/// would exceed the count, so the steady rate need not give the burst up.
pub fn quota(rate: Rate, burst: Option<u32>) -> Result<Quota, String> {
    if burst == Some(0) {
        return Err("burst must be at least 1".into());
    }
    let burst = burst_for(rate, burst);
    let interval = spacing(rate.per + window::MARGIN, rate.count);
    let burst = NonZeroU32::new(burst).ok_or("burst must be at least 1")?;
    Quota::with_period(interval)
        .map(|q| q.allow_burst(burst))
        .ok_or_else(|| "rate too high to express".to_owned())
}

pub use crate::shared_rate::SharedRate;

/// The configured burst, or by default 5 ms of the rate and at least 3: a
/// message's parts are taken from the limiter at once (so its parts never
/// straddle two windows at the provider), which needs a burst of at least
/// its part count.
fn burst_for(rate: Rate, burst: Option<u32>) -> u32 {
    burst
        .unwrap_or_else(|| ((rate.per_second() * 0.005).ceil() as u32).max(MIN_BURST))
        .max(1)
}

/// One cell's share of `span` when it holds `cells`, rounded up to the
/// nanosecond: truncating would let the rate be exceeded by a hair.
fn spacing(span: Duration, cells: u32) -> Duration {
    Duration::from_nanos(span.as_nanos().div_ceil(u128::from(cells.max(1))) as u64)
}

/// The steady interval and burst that hold `rate` in every window for the
/// cluster's shared limiter, which has no log of the other instances'
/// grants: there the burst comes out of the steady rate.
pub fn cells(rate: Rate, burst: Option<u32>) -> (Duration, u32) {
    let burst = burst_for(rate, burst);
    // Replenish one cell every period/(count - burst) when that leaves a
    // positive steady rate, else every period/count with a burst of 1.
    let steady = rate.count.saturating_sub(burst).max(1);
    let interval = spacing(rate.per, steady);
    (interval, burst)
}

#[derive(Debug, Default)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
    probing: bool,
    throttled_until: Option<Instant>,
}

/// One process's rate limit: governor's pace, then the window's count.
struct Limit {
    pace: governor::DefaultDirectRateLimiter,
    window: Mutex<window::Window>,
    /// Serialises messages with more parts than the burst (see `take`).
    oversize: tokio::sync::Mutex<()>,
}

impl Limit {
    fn new(rate: Rate, burst: Option<u32>) -> Result<Limit, String> {
        Ok(Limit {
            pace: RateLimiter::direct(quota(rate, burst)?),
            window: Mutex::new(window::Window::new(rate.count, rate.per)),
            oversize: tokio::sync::Mutex::new(()),
        })
    }

    /// Waits until `parts` cells may be used. Providers count parts, not
    /// messages, so all of a message's parts are taken at once; one with
    /// more parts than the burst takes them from governor one by one,
    /// holding the others off, and from the window together.
    async fn take(&self, parts: u32) {
        let n = NonZeroU32::new(parts).unwrap_or(NonZeroU32::MIN);
        if self.pace.until_n_ready(n).await.is_err() {
            let _one_at_a_time = self.oversize.lock().await;
            for _ in 0..n.get() {
                self.pace.until_ready().await;
            }
        }
        // Grants come out of the log in order, so the lock is not held
        // across the wait.
        let at = self
            .window
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .reserve(Instant::now(), n.get());
        tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
    }
}

pub struct Guarded {
    inner: Arc<dyn Provider>,
    limiter: Option<Limit>,
    /// With several instances: the cluster's limiter, its interval and burst.
    shared: Option<(Arc<dyn SharedRate>, Duration, u32)>,
    slots: tokio::sync::Semaphore,
    timeout: Duration,
    state: Mutex<Breaker>,
    metrics: Arc<crate::metrics::Metrics>,
    cool_down: Duration,
}

impl Guarded {
    pub fn new(
        inner: Arc<dyn Provider>,
        cfg: &ProviderConfig,
        metrics: Arc<crate::metrics::Metrics>,
        shared_rate: Option<Arc<dyn SharedRate>>,
    ) -> Result<Guarded, String> {
        let mut limiter = cfg.rate.map(|r| Limit::new(r, cfg.burst)).transpose()?;
        let shared = match (cfg.rate, shared_rate) {
            (Some(rate), Some(s)) => {
                limiter = None;
                // Instances send from different processes, so the time
                // between a reservation and the provider's receipt varies
                // more than within one: keep 5% of each window (at least
                // one cell) spare for that jitter, i.e. 50 ms of spread.
                // Measured on 2 cores with three instances of 8 sends in
                // flight each: with 2% spare one window in a few CI runs
                // held the rate plus one (the spread reached ~30 ms).
                let spare = Rate {
                    count: rate.count.saturating_sub((rate.count / 20).max(1)).max(1),
                    per: rate.per,
                };
                let (interval, burst) = cells(spare, cfg.burst);
                Some((s, interval, burst))
            }
            _ => None,
        };
        metrics.set("duebell_circuit_open", &[("provider", inner.name())], 0.0);
        Ok(Guarded {
            inner,
            limiter,
            shared,
            slots: tokio::sync::Semaphore::new(cfg.concurrency.max(1) as usize),
            timeout: cfg.timeout.get(),
            state: Mutex::new(Breaker::default()),
            metrics,
            cool_down: cfg.cool_down.get(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `Err` when the breaker is open or the provider asked us to back off.
    fn admit(&self) -> Result<(), ProviderError> {
        let now = Instant::now();
        let mut b = self.lock();
        if let Some(t) = b.throttled_until {
            if t > now {
                return Err(ProviderError::Transient {
                    code: "throttled".into(),
                    retry_after: Some(t - now),
                    maybe_delivered: false,
                    throttle: false,
                });
            }
            b.throttled_until = None;
        }
        match b.open_until {
            Some(t) if t > now => Err(ProviderError::Transient {
                code: "circuit open".into(),
                retry_after: Some(t - now),
                maybe_delivered: false,
                throttle: false,
            }),
            Some(_) if b.probing => Err(ProviderError::Transient {
                code: "circuit half-open".into(),
                retry_after: None,
                maybe_delivered: false,
                throttle: false,
            }),
            Some(_) => {
                // Cool-down over: this call is the probe.
                b.probing = true;
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn record(&self, result: &Result<Receipt, ProviderError>) {
        let mut b = self.lock();
        let name = self.inner.name();
        match result {
            Err(ProviderError::Transient {
                retry_after,
                throttle,
                ..
            }) => {
                if *throttle {
                    b.throttled_until =
                        Some(Instant::now() + retry_after.unwrap_or(Duration::from_secs(1)));
                }
                b.failures += 1;
                if b.probing || b.failures >= BREAKER_THRESHOLD {
                    if b.open_until.is_none() || b.probing {
                        tracing::warn!(
                            provider = name,
                            failures = b.failures,
                            "circuit opened; traffic moves to the next provider"
                        );
                    }
                    b.open_until = Some(Instant::now() + self.cool_down);
                    b.probing = false;
                    self.metrics
                        .set("duebell_circuit_open", &[("provider", name)], 1.0);
                }
            }
            _ => {
                if b.open_until.is_some() {
                    tracing::info!(provider = name, "circuit closed; provider healthy again");
                }
                *b = Breaker::default();
                self.metrics
                    .set("duebell_circuit_open", &[("provider", name)], 0.0);
            }
        }
    }
}

#[async_trait]
impl Provider for Guarded {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn send(&self, m: &Outbound) -> Result<Receipt, ProviderError> {
        self.admit()?;
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| ProviderError::Transient {
                code: "closing".into(),
                retry_after: None,
                maybe_delivered: false,
                throttle: false,
            })?;
        if let Some((shared, interval, burst)) = &self.shared {
            let started = Instant::now();
            let parts = m.segments.unwrap_or(1).max(1) as u32;
            let key = format!("provider:{}", self.inner.name());
            match shared.reserve(&key, parts, *interval, *burst).await {
                Ok(wait) => tokio::time::sleep(wait).await,
                Err(e) => {
                    return Err(ProviderError::Transient {
                        code: e,
                        retry_after: Some(Duration::from_secs(1)),
                        maybe_delivered: false,
                        throttle: false,
                    })
                }
            }
            self.metrics.observe(
                "duebell_rate_limit_wait_seconds",
                &[("provider", self.inner.name())],
                started.elapsed().as_secs_f64(),
            );
        }
        if let Some(l) = &self.limiter {
            let started = Instant::now();
            l.take(m.segments.unwrap_or(1).max(1) as u32).await;
            self.metrics.observe(
                "duebell_rate_limit_wait_seconds",
                &[("provider", self.inner.name())],
                started.elapsed().as_secs_f64(),
            );
        }
        let result = match tokio::time::timeout(self.timeout, self.inner.send(m)).await {
            Ok(r) => r,
            // The request may have reached the provider.
            Err(_) => Err(ProviderError::Transient {
                code: "timeout".into(),
                retry_after: None,
                maybe_delivered: true,
                throttle: false,
            }),
        };
        self.record(&result);
        result
    }

    /// Look-ups go through the same breaker, rate limit and timeout as
    /// sends: an open circuit or a slow provider answers nothing.
    async fn lookup(&self, q: &super::LookupQuery) -> super::Lookup {
        if self.admit().is_err() {
            return super::Lookup::Unanswered;
        }
        if let Some(l) = &self.limiter {
            l.take(1).await;
        }
        match tokio::time::timeout(self.timeout, self.inner.lookup(q)).await {
            Ok(answer) => answer,
            Err(_) => super::Lookup::Unanswered,
        }
    }

    fn replay_safe(&self) -> bool {
        self.inner.replay_safe()
    }

    fn can_look_up(&self) -> bool {
        self.inner.can_look_up()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_and_quotas_never_exceed_them() {
        assert_eq!(
            Rate::parse("10/s").unwrap(),
            Rate {
                count: 10,
                per: Duration::from_secs(1)
            }
        );
        assert!(
            Rate::parse("10/d").is_err()
                && Rate::parse("0/s").is_err()
                && Rate::parse("x").is_err()
        );
        // 1000/s: burst 5, paced at 1000 per 1.005 s (the window's span),
        // so the window, not the pace, is what binds after a burst.
        let q = quota(Rate::parse("1000/s").unwrap(), None).unwrap();
        assert_eq!(q.burst_size().get(), 5);
        let steady = 1.0 / q.replenish_interval().as_secs_f64();
        assert!((995.0..1000.0).contains(&steady), "{steady}");
        // The cluster's limiter has no window: its burst comes out of the
        // steady rate, so the first second holds at most the rate.
        let (interval, burst) = cells(Rate::parse("1000/s").unwrap(), None);
        let first_second = f64::from(burst) + 1.0 / interval.as_secs_f64();
        assert!(first_second <= 1000.0 + 1e-6, "{first_second}");
        let slow = quota(Rate::parse("1/s").unwrap(), None).unwrap();
        assert_eq!(slow.burst_size().get(), MIN_BURST);
        let set = quota(Rate::parse("1/s").unwrap(), Some(1)).unwrap();
        assert_eq!(set.burst_size().get(), 1);
    }
}
