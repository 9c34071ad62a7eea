//! The repayment offer a message makes (README: Offers).

use chrono::{DateTime, Utc};

use super::Dispatcher;
use crate::store::ClaimView;

impl Dispatcher {
    /// The offer this message makes: its step's offer for each of its loans
    /// at that step, made now or (another channel, a retry) as made before;
    /// shown only while open, so a taken or expired offer is never repeated.
    /// The message's first loan's offer is the one the template sees.
    pub(super) async fn offer(
        &self,
        now: DateTime<Utc>,
        view: &ClaimView,
        loans: &[i64],
        tz: chrono_tz::Tz,
        locale: &str,
    ) -> Option<crate::templates::OfferContext> {
        let config = self
            .policy
            .steps
            .iter()
            .find(|s| s.id == view.step)?
            .offer
            .as_ref()?;
        let mut shown = None;
        for l in view
            .loans
            .iter()
            .filter(|l| loans.contains(&l.pk) && l.step.as_deref() == Some(view.step.as_str()))
        {
            let terms = config.for_loan(l.amount_due.amount, l.amount_due.currency.code(), now);
            match self
                .store
                .offer_for(now, l.pk, l.due_date, &view.step, &terms)
                .await
            {
                Ok(row) if row.state == crate::domain::OfferState::Open => {
                    if row.made_at.timestamp_millis() == now.timestamp_millis() {
                        // Made by this message (not read back by the
                        // step's other channel or a retry).
                        self.metrics.inc(
                            "duebell_offers_total",
                            &[("kind", row.terms.kind.as_str()), ("state", "made")],
                            1.0,
                        );
                    }
                    if shown.is_none() {
                        shown = Some(crate::templates::OfferContext::new(&row.terms, tz, locale));
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    // Sent without it: no offer is recorded, so none is owed.
                    tracing::warn!(message_id = view.message_id, error = %e, "offer not made: the store did not answer");
                }
            }
        }
        shown
    }
}
