//! Re-planning one borrower at once after a change through the API
//! (`api::Replan`), with the daemon's current rules.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use crate::engine::Engine;
use crate::planner::TickReport;
use crate::store::StoreError;

/// The daemon's re-planner: the engine it plans with is replaced when the
/// configuration or the templates are reloaded.
pub(super) struct EngineReplan {
    pub(super) engine: Arc<Mutex<Engine>>,
}

#[async_trait::async_trait]
impl crate::api::Replan for EngineReplan {
    async fn borrower(
        &self,
        external_id: &str,
        now: DateTime<Utc>,
    ) -> Result<TickReport, StoreError> {
        let engine = self
            .engine
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        engine.replan_borrower(now, external_id).await
    }
}
