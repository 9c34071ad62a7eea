//! The template context for a message: the borrower, the loans it is
//! about and the step, from what the claim loaded.

use chrono::NaiveDate;

use crate::domain::{mask_phone_text, Channel, PhoneNumber};
use crate::store::{LoanRow, PlanBorrower};
use crate::templates::context::ContextSource;
use crate::templates::{BorrowerContext, LoanContext, MessageContext};

/// The template context for some of a borrower's loans.
#[allow(clippy::too_many_arguments)]
pub fn context_for(
    source: &ContextSource,
    b: &PlanBorrower,
    loans: &[LoanRow],
    include: &[i64],
    channel: Channel,
    locale: &str,
    step: &str,
    stage: &str,
    today: NaiveDate,
) -> MessageContext {
    // A number with a stored region was parsed at import and stored in
    // E.164: mask it as it is rather than parse it again for every send.
    let phone_masked = b
        .contact(Channel::Sms)
        .and_then(|c| match c.region {
            Some(_) => Some(mask_phone_text(&c.address)),
            None => PhoneNumber::parse(&c.address).ok().map(|p| p.to_string()),
        })
        .unwrap_or_default();
    let loans: Vec<LoanContext> = loans
        .iter()
        .filter(|l| include.contains(&l.pk))
        .map(|l| LoanContext {
            id: l.external_id.clone(),
            due_date: l.due_date.format("%Y-%m-%d").to_string(),
            amount_due: l.amount_due.amount.to_string(),
            currency: l.amount_due.currency.code().to_owned(),
            days_past_due: (today - l.due_date).num_days(),
        })
        .collect();
    source.build(
        locale,
        channel,
        BorrowerContext {
            name: b.name.clone(),
            phone_masked,
        },
        loans,
        step,
        stage,
        String::new(),
    )
}
