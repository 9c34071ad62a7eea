//! systemd's notify protocol, spoken directly: datagrams to
//! `$NOTIFY_SOCKET` (`READY=1`, `STATUS=…`, `WATCHDOG=1`, `RELOADING=1`,
//! `STOPPING=1`). A no-op when not run by systemd with `Type=notify`.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

pub struct Notifier {
    socket: Option<(UnixDatagram, std::os::unix::net::SocketAddr)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` from the
    /// environment.
    pub fn from_env() -> Notifier {
        let socket = std::env::var("NOTIFY_SOCKET").ok().and_then(|path| {
            let addr = if let Some(name) = path.strip_prefix('@') {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).ok()?
            } else {
                std::os::unix::net::SocketAddr::from_pathname(&path).ok()?
            };
            Some((UnixDatagram::unbound().ok()?, addr))
        });
        let for_us = std::env::var("WATCHDOG_PID")
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            .is_none_or(|p| p == std::process::id());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.parse::<u64>().ok())
            .filter(|u| *u > 0 && for_us)
            .map(Duration::from_micros);
        Notifier { socket, watchdog }
    }

    pub fn enabled(&self) -> bool {
        self.socket.is_some()
    }

    /// How often to ping the watchdog: half of `WatchdogSec`.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|d| d / 2)
    }

    pub fn send(&self, state: &str) {
        if let Some((sock, addr)) = &self.socket {
            if let Err(e) = sock.send_to_addr(state.as_bytes(), addr) {
                tracing::warn!("cannot notify systemd: {e}");
            }
        }
    }

    pub fn ready(&self) {
        self.send("READY=1");
    }

    pub fn status(&self, line: &str) {
        self.send(&format!("STATUS={}", line.replace('\n', " ")));
    }

    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    pub fn reloading(&self) {
        let ts = approx_monotonic_usec();
        self.send(&format!("RELOADING=1\nMONOTONIC_USEC={ts}"));
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }
}

/// CLOCK_MONOTONIC in microseconds, as systemd wants with RELOADING=1.
fn approx_monotonic_usec() -> u128 {
    // /proc/uptime is CLOCK_BOOTTIME-ish; tokio's Instant is monotonic but
    // opaque. systemd tolerates an approximate value here.
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|x| x.parse::<f64>().ok())
        })
        .map_or(0, |secs| (secs * 1_000_000.0) as u128)
}
