//! The exact part of a provider's rate limit: a log of the cells granted in
//! the last window, so no window of the rate's length ever holds more than
//! its count. governor (in `guard`) paces sends at the rate and lets a
//! message's parts go together; on its own it lets its burst through on top
//! of the steady rate in some window, which is why the rate used to be cut
//! by the burst (0.94 of 50/s). With this log behind it, governor runs at
//! the full rate and the log refuses the excess.
//!
//! Grants are computed, not waited for: `reserve` takes the current instant
//! and returns the instant the cells may be used, so tests drive it with
//! made-up instants and the guard does the sleeping.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How much longer than the rate's period the log's window is: the time
/// between a grant and the provider's receipt varies by a few hundred
/// microseconds on loopback (more under load), and a provider counting
/// arrivals must still never see the count in one period. Costs at most
/// 0.5% of a per-second rate.
pub const MARGIN: Duration = Duration::from_millis(5);

/// The cells granted within the last window, oldest first.
#[derive(Debug)]
pub struct Window {
    count: u32,
    span: Duration,
    granted: VecDeque<(Instant, u32)>,
    held: u32,
}

impl Window {
    /// At most `count` cells in any `per` (plus [`MARGIN`]).
    pub fn new(count: u32, per: Duration) -> Window {
        Window {
            count: count.max(1),
            span: per + MARGIN,
            granted: VecDeque::new(),
            held: 0,
        }
    }

    /// The window's length: the rate's period plus the margin.
    pub fn span(&self) -> Duration {
        self.span
    }

    /// Grants `cells` at the earliest instant, not before `now` nor before
    /// the last grant, at which the window ending there holds room for
    /// them, and records them. A message with more cells than the whole
    /// count goes alone in an otherwise empty window (it cannot be split
    /// across windows at the provider anyway).
    pub fn reserve(&mut self, now: Instant, cells: u32) -> Instant {
        let cells = cells.max(1);
        let need = cells.min(self.count);
        let mut at = match self.granted.back() {
            Some(&(last, _)) => now.max(last),
            None => now,
        };
        loop {
            while let Some(&(t, c)) = self.granted.front() {
                if t + self.span > at {
                    break;
                }
                self.granted.pop_front();
                self.held -= c;
            }
            if self.held + need <= self.count {
                break;
            }
            // The oldest grant's cells leave the window at t + span.
            let (t, _) = self.granted[0];
            at = at.max(t + self.span);
        }
        self.granted.push_back((at, cells));
        self.held += cells;
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The most cells granted in any half-open window of `span`.
    fn most_in_any(grants: &[(Instant, u32)], span: Duration) -> u32 {
        let mut most = 0;
        for (i, &(start, _)) in grants.iter().enumerate() {
            let n: u32 = grants[i..]
                .iter()
                .take_while(|(t, _)| *t < start + span)
                .map(|(_, c)| c)
                .sum();
            most = most.max(n);
        }
        most
    }

    proptest! {
        /// Whatever arrives, and however many parts each message has, no
        /// window of the period plus the margin holds more than the count,
        /// and grants never go back in time.
        #[test]
        fn no_window_ever_holds_more_than_the_count(
            count in 1u32..60,
            asks in prop::collection::vec((0u64..40_000, 1u32..4), 1..400),
        ) {
            let t0 = Instant::now();
            let mut w = Window::new(count, Duration::from_secs(1));
            let mut now = t0;
            let mut grants = Vec::new();
            for (gap_us, cells) in asks {
                now += Duration::from_micros(gap_us);
                let at = w.reserve(now, cells);
                prop_assert!(at >= now);
                if let Some(&(last, _)) = grants.last() {
                    prop_assert!(at >= last);
                }
                grants.push((at, cells));
            }
            let allowed = grants.iter().map(|&(_, c)| c).max().unwrap().max(count);
            prop_assert!(most_in_any(&grants, w.span()) <= allowed);
        }
    }

    #[test]
    fn a_saturated_window_sends_at_the_full_rate() {
        // 2-part messages at 50 parts/s, asked for as fast as they are
        // granted, for a minute: the average is the rate less the margin.
        let t0 = Instant::now();
        let mut w = Window::new(50, Duration::from_secs(1));
        let mut now = t0;
        let mut parts = 0;
        while now < t0 + Duration::from_secs(60) {
            now = w.reserve(now, 2);
            parts += 2;
        }
        let rate = f64::from(parts) / (now - t0).as_secs_f64();
        assert!((0.99 * 50.0..=50.0 + 2.0 / 60.0).contains(&rate), "{rate}");
    }

    #[test]
    fn a_message_larger_than_the_count_goes_alone() {
        let t0 = Instant::now();
        let mut w = Window::new(2, Duration::from_secs(1));
        assert_eq!(w.reserve(t0, 1), t0);
        let big = w.reserve(t0, 3);
        assert_eq!(big, t0 + w.span(), "waits for an empty window");
        assert_eq!(w.reserve(t0, 1), big + w.span(), "and fills it alone");
    }
}
