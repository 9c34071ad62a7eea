//! `App::run`: the daemon's main loop, its API server, systemd
//! notifications, signals for reload, and the stop deadline.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::*;

impl App {
    /// Runs until `shutdown` is cancelled, then closes the store. A stop
    /// lets the send in hand finish and claims nothing new.
    pub async fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(store = %self.config.store.url, sources = self.watches.len(), "duebell started");
        let notify = crate::notify::Notifier::from_env();
        let watchdog = notify.watchdog_interval();
        let server_stop = shutdown.child_token();
        let server = if self.config.api.listen.is_empty() {
            None
        } else {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let listen = self.config.api.listen.clone();
            let router = if self.config.console.enabled {
                crate::console::router(self.console_state())
            } else {
                crate::api::router(self.api.clone())
            };
            let stop = server_stop.clone();
            let task =
                tokio::spawn(async move { crate::api::serve(&listen, router, stop, tx).await });
            match rx.await {
                Ok(addr) => {
                    self.api_addr.send_replace(Some(addr));
                }
                Err(_) => {
                    return match task.await {
                        Ok(Err(e)) => Err(e),
                        _ => Err(anyhow::anyhow!(
                            "the API server stopped before it could listen"
                        )),
                    };
                }
            }
            Some(task)
        };
        // Ready: the store is migrated and the API listens.
        self.api
            .ready
            .store(true, std::sync::atomic::Ordering::SeqCst);
        notify.ready();
        let replan = self.api.replan.clone();
        let work = self.api.work.clone();
        let reload = self.reload.clone();
        let wakeups = self.store.wakeups();
        // Claims of messages being sent stay this instance's while it
        // lives; the task stops after the last send is recorded.
        let renewing = CancellationToken::new();
        let renewer = {
            let (store, clock, stop) = (self.store.clone(), self.clock.clone(), renewing.clone());
            let instance = self.parts.instance.to_string();
            let lease = self.config.daemon.claim_lease.get();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(lease / 3) => {}
                    }
                    let until = clock.now()
                        + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX);
                    if let Err(e) = store.renew_claims(&instance, until).await {
                        tracing::warn!("cannot renew claim leases: {e}");
                    }
                }
            })
        };
        // Bounce mailboxes are read on their own schedule; a reading cut
        // off by the stop leaves its mail to be read again.
        let reading = CancellationToken::new();
        let readers: Vec<_> = crate::bounces::mailboxes(&self.config.providers)
            .into_iter()
            .map(|mb| {
                tokio::spawn(crate::bounces::keep_reading(
                    mb,
                    self.store.clone(),
                    self.parts.unsubscribe.clone(),
                    self.parts.metrics.clone(),
                    self.config.bounces.clone(),
                    self.clock.clone(),
                    reading.clone(),
                ))
            })
            .collect();
        let deadline = self.config.daemon.stop_deadline.get();
        let mut last_status = String::new();
        let mut backoff = Duration::ZERO;
        loop {
            // A stop lets the cycle in hand (the sends in flight, as nothing
            // new is claimed once `shutdown` is cancelled) finish up to the
            // deadline; a send cut off stays `sending` and is reconciled at
            // the next start.
            let stopping = shutdown.clone();
            let outcome = tokio::select! {
                r = self.cycle(&shutdown) => Some(r),
                _ = async { stopping.cancelled().await; tokio::time::sleep(deadline).await } => None,
            };
            match outcome {
                Some(Err(e)) => {
                    // Back off while the failure lasts (a store that is
                    // down): 1 s doubling to 30 s.
                    backoff = (backoff * 2).clamp(Duration::from_secs(1), Duration::from_secs(30));
                    tracing::error!("cycle failed: {e:#}; retrying in {backoff:?}");
                }
                Some(Ok(_)) => backoff = Duration::ZERO,
                None => {
                    tracing::warn!("stop deadline passed with a send in flight; it will be reconciled at the next start");
                    break;
                }
            }
            if watchdog.is_some() {
                notify.watchdog();
            }
            if notify.enabled() {
                if let Ok(status) = crate::api::routes::summary(&self.api).await {
                    if status.summary != last_status {
                        notify.status(&status.summary);
                        last_status = status.summary;
                    }
                }
            }
            if shutdown.is_cancelled() {
                break;
            }
            // The watchdog is still pinged on time while backing off.
            let hold_off = backoff.min(watchdog.unwrap_or(Duration::MAX));
            let wake = self
                .next_wake(watchdog)
                .await
                .max(Instant::now() + hold_off);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep_until(wake) => {}
                _ = work.notified() => {
                    // The API planned new work for one borrower.
                }
                _ = replan.notified() => {
                    // A change through the API: plan at once.
                    self.next_tick = None;
                    self.plan_requested = true;
                }
                _ = async { match &wakeups { Some(w) => w.work.notified().await, None => std::future::pending().await } } => {
                    // Another instance committed work.
                }
                _ = async { match &wakeups { Some(w) => w.plan.notified().await, None => std::future::pending().await } } => {
                    self.plan_requested = true;
                }
                _ = reload.notified() => {
                    tracing::info!("reload requested");
                    notify.reloading();
                    self.reload_config();
                    notify.ready();
                }
            }
        }
        tracing::info!("shutting down");
        notify.stopping();
        renewing.cancel();
        let _ = renewer.await;
        reading.cancel();
        for r in readers {
            let _ = r.await;
        }
        self.release_roles().await;
        server_stop.cancel();
        if let Some(task) = server {
            let _ = task.await;
        }
        self.store.close().await;
        Ok(())
    }
}
