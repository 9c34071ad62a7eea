//! Operator pause switches, read before every claim.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Sending switches: all sending, or one provider, paused by an operator
/// (through the API). The dispatcher reads them before every claim.
#[derive(Debug, Default)]
pub struct Pauses {
    pub all: AtomicBool,
    pub providers: Mutex<std::collections::BTreeSet<String>>,
}

impl Pauses {
    pub fn is_paused(&self, provider: Option<&str>) -> bool {
        self.all.load(Ordering::SeqCst)
            || provider.is_some_and(|p| {
                self.providers
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains(p)
            })
    }
}
