//! May this borrower be contacted on this channel now, and if not, why?
//! Asked in one place by the planner (when it decides) and by the dispatcher
//! (again at claim time, inside the claim transaction), so the two can never
//! disagree in substance or in wording. The answer is a typed `Reason`.

use chrono::NaiveDate;
use chrono_tz::Tz;

use crate::compliance::zones::ZoneSet;
use crate::domain::{Channel, LoanStatus, PhoneNumber};
use crate::reason::Reason;
use crate::store::{ContactView, HoldView, LoanRow, PlanBorrower};

/// The zones a borrower may be in: the stated zone, else those of the phone
/// number's region, else the deployment's default.
pub fn borrower_zones(b: &PlanBorrower, default_tz: Tz) -> ZoneSet {
    let sms = b.contact(Channel::Sms);
    match sms.and_then(|c| c.region.as_deref()) {
        // The region the import worked out: parsing a number against its
        // numbering plan costs more than everything else a planner does
        // for a borrower.
        Some(region) => ZoneSet::resolve_region(
            b.timezone.as_deref().and_then(|z| z.parse::<Tz>().ok()),
            Some(region),
            default_tz,
        ),
        None => zones_of(
            b.timezone.as_deref(),
            sms.map(|c| c.address.as_str()),
            default_tz,
        ),
    }
}

/// The zones of a borrower with this stated zone and this phone number
/// (as stored): what the gate evaluates windows and caps in.
pub fn zones_of(stated: Option<&str>, phone: Option<&str>, default_tz: Tz) -> ZoneSet {
    let stated = stated.and_then(|z| z.parse::<Tz>().ok());
    let phone = phone.and_then(|p| PhoneNumber::parse(p).ok());
    ZoneSet::resolve(stated, phone.as_ref(), default_tz)
}

/// The contact point may be used on `channel`, or why not.
pub fn contact(contact: Option<&ContactView>, channel: Channel) -> Result<&ContactView, Reason> {
    match contact {
        None => Err(Reason::no_address(channel)),
        Some(c) if c.opted_out => Err(Reason::opted_out(channel, None)),
        Some(c) if c.invalid => Err(Reason::address_invalid(channel)),
        Some(c) => Ok(c),
    }
}

/// The active hold that stops contact about `loan` on local `today`.
pub fn active_hold(holds: &[HoldView], loan: Option<i64>, today: NaiveDate) -> Option<&HoldView> {
    holds
        .iter()
        .filter(|h| h.loan.is_none() || h.loan == loan)
        .find(|h| h.until.is_none_or(|u| u >= today))
}

fn hold_reason(h: &HoldView) -> Reason {
    Reason::hold(h.loan.is_some(), h.kind, h.until)
}

/// Whether a hold stops contact about `loan` on local `today`.
pub fn held(holds: &[HoldView], loan: &LoanRow, today: NaiveDate) -> Result<(), Reason> {
    match active_hold(holds, Some(loan.pk), today) {
        Some(h) => Err(hold_reason(h)),
        None => Ok(()),
    }
}

/// Whether a loan may still be reminded about: active and not held.
pub fn loan(holds: &[HoldView], loan: &LoanRow, today: NaiveDate) -> Result<(), Reason> {
    if loan.status != LoanStatus::Active {
        return Err(Reason::loan_status(&loan.external_id, loan.status));
    }
    held(holds, loan, today)
}

/// Of `loans`, those that may still be reminded about; or, when none may,
/// every loan's reason together.
pub fn loans(holds: &[HoldView], loans: &[LoanRow], today: NaiveDate) -> Result<Vec<i64>, Reason> {
    let mut dropped = Vec::new();
    let mut eligible = Vec::new();
    for l in loans {
        match loan(holds, l, today) {
            Ok(()) => eligible.push(l.pk),
            Err(r) => dropped.push(r),
        }
    }
    if eligible.is_empty() {
        Err(Reason::loans_dropped(&dropped))
    } else {
        Ok(eligible)
    }
}
