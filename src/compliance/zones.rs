//! Which time zone(s) a borrower is in: their stated IANA zone; else the
//! zone of their phone number's country when it has one; else the configured
//! default. When that is uncertain (a country spanning several zones, or a
//! phone country that disagrees with the stated zone), every candidate is
//! kept and the gate allows only their overlap: fail closed.

use chrono_tz::Tz;

use crate::domain::PhoneNumber;

/// The zones a borrower may be in. `primary` is used for calendar questions
/// (which local day is it, for the policy ladder and daily caps); `all`
/// for windows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneSet {
    pub primary: Tz,
    pub all: Vec<Tz>,
    /// How the set was chosen, for `plan` and the audit.
    pub source: ZoneSource,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneSource {
    Stated,
    PhoneCountry,
    Default,
    /// Several candidates: the overlap applies.
    Ambiguous,
}

impl ZoneSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ZoneSource::Stated => "stated",
            ZoneSource::PhoneCountry => "phone_country",
            ZoneSource::Default => "default",
            ZoneSource::Ambiguous => "ambiguous",
        }
    }
}

impl ZoneSet {
    pub fn resolve(stated: Option<Tz>, phone: Option<&PhoneNumber>, default: Tz) -> ZoneSet {
        ZoneSet::resolve_region(stated, phone.and_then(|p| p.region()), default)
    }

    /// `resolve` from the phone number's ISO region alone (as the store
    /// keeps it), without parsing the number again.
    pub fn resolve_region(stated: Option<Tz>, region: Option<&str>, default: Tz) -> ZoneSet {
        let country = region.map(country_zones).unwrap_or(&[]);
        let parse =
            |names: &[&str]| -> Vec<Tz> { names.iter().filter_map(|n| n.parse().ok()).collect() };
        match stated {
            Some(z) if country.is_empty() || country.contains(&z.name()) => ZoneSet {
                primary: z,
                all: vec![z],
                source: ZoneSource::Stated,
            },
            Some(z) => {
                let mut all = vec![z];
                all.extend(parse(country).into_iter().filter(|c| *c != z));
                ZoneSet {
                    primary: z,
                    all,
                    source: ZoneSource::Ambiguous,
                }
            }
            None => match parse(country).as_slice() {
                [] => ZoneSet {
                    primary: default,
                    all: vec![default],
                    source: ZoneSource::Default,
                },
                [one] => ZoneSet {
                    primary: *one,
                    all: vec![*one],
                    source: ZoneSource::PhoneCountry,
                },
                many => ZoneSet {
                    primary: many[0],
                    all: many.to_vec(),
                    source: ZoneSource::Ambiguous,
                },
            },
        }
    }
}

/// IANA zones in use per ISO 3166 region, for the countries whose numbers
/// lenders commonly hold. Countries with one legal time (China) list one
/// zone. A region not listed gives no information (the default applies).
/// The first zone of a multi-zone country is its most populous.
pub fn country_zones(region: &str) -> &'static [&'static str] {
    match region {
        "CN" => &["Asia/Shanghai"],
        "HK" => &["Asia/Hong_Kong"],
        "MO" => &["Asia/Macau"],
        "TW" => &["Asia/Taipei"],
        "SG" => &["Asia/Singapore"],
        "MY" => &["Asia/Kuala_Lumpur"],
        "PH" => &["Asia/Manila"],
        "TH" => &["Asia/Bangkok"],
        "VN" => &["Asia/Ho_Chi_Minh"],
        "JP" => &["Asia/Tokyo"],
        "KR" => &["Asia/Seoul"],
        "IN" => &["Asia/Kolkata"],
        "PK" => &["Asia/Karachi"],
        "BD" => &["Asia/Dhaka"],
        "AE" => &["Asia/Dubai"],
        "SA" => &["Asia/Riyadh"],
        "GB" => &["Europe/London"],
        "IE" => &["Europe/Dublin"],
        "FR" => &["Europe/Paris"],
        "DE" => &["Europe/Berlin"],
        "IT" => &["Europe/Rome"],
        "NL" => &["Europe/Amsterdam"],
        "ES" => &["Europe/Madrid", "Atlantic/Canary"],
        "PT" => &["Europe/Lisbon", "Atlantic/Azores"],
        "NG" => &["Africa/Lagos"],
        "KE" => &["Africa/Nairobi"],
        "ZA" => &["Africa/Johannesburg"],
        "EG" => &["Africa/Cairo"],
        "NZ" => &["Pacific/Auckland"],
        "US" => &[
            "America/New_York",
            "America/Chicago",
            "America/Denver",
            "America/Phoenix",
            "America/Los_Angeles",
            "America/Anchorage",
            "Pacific/Honolulu",
        ],
        "CA" => &[
            "America/Toronto",
            "America/Vancouver",
            "America/Edmonton",
            "America/Winnipeg",
            "America/Regina",
            "America/Halifax",
            "America/St_Johns",
        ],
        "AU" => &[
            "Australia/Sydney",
            "Australia/Melbourne",
            "Australia/Brisbane",
            "Australia/Perth",
            "Australia/Adelaide",
            "Australia/Hobart",
            "Australia/Darwin",
        ],
        "MX" => &[
            "America/Mexico_City",
            "America/Cancun",
            "America/Hermosillo",
            "America/Tijuana",
        ],
        "BR" => &[
            "America/Sao_Paulo",
            "America/Manaus",
            "America/Rio_Branco",
            "America/Noronha",
        ],
        "ID" => &["Asia/Jakarta", "Asia/Makassar", "Asia/Jayapura"],
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::{America, Asia, Europe};

    fn phone(s: &str) -> PhoneNumber {
        PhoneNumber::parse(s).unwrap()
    }

    #[test]
    fn a_stated_zone_that_agrees_with_the_phone_is_used_alone() {
        let z = ZoneSet::resolve(
            Some(America::Chicago),
            Some(&phone("+13125550100")),
            Asia::Shanghai,
        );
        assert_eq!(
            (z.all, z.source),
            (vec![America::Chicago], ZoneSource::Stated)
        );
    }

    #[test]
    fn a_single_zone_phone_country_gives_the_zone() {
        let z = ZoneSet::resolve(None, Some(&phone("+447400123456")), Asia::Shanghai);
        assert_eq!(
            (z.all, z.source),
            (vec![Europe::London], ZoneSource::PhoneCountry)
        );
    }

    #[test]
    fn a_multi_zone_country_or_a_disagreement_keeps_every_candidate() {
        let us = ZoneSet::resolve(None, Some(&phone("+12125550123")), Asia::Shanghai);
        assert_eq!(us.source, ZoneSource::Ambiguous);
        assert!(us.all.contains(&America::Los_Angeles) && us.all.contains(&America::New_York));
        let clash = ZoneSet::resolve(
            Some(Europe::London),
            Some(&phone("+8613812345678")),
            Asia::Shanghai,
        );
        assert_eq!(clash.source, ZoneSource::Ambiguous);
        assert_eq!(clash.all, vec![Europe::London, Asia::Shanghai]);
        assert_eq!(clash.primary, Europe::London);
    }

    #[test]
    fn the_stored_region_resolves_as_the_number_does() {
        for (number, stated) in [
            ("+12125550123", None),
            ("+8613812345678", Some(Europe::London)),
            ("+447400123456", Some(Europe::London)),
        ] {
            let p = phone(number);
            let by_number = ZoneSet::resolve(stated, Some(&p), Asia::Shanghai);
            let by_region = ZoneSet::resolve_region(stated, p.region(), Asia::Shanghai);
            assert_eq!(
                (by_number.primary, by_number.all, by_number.source),
                (by_region.primary, by_region.all, by_region.source),
                "{number}"
            );
        }
    }

    #[test]
    fn nothing_known_means_the_default() {
        let z = ZoneSet::resolve(None, None, Asia::Shanghai);
        assert_eq!(
            (z.all, z.source),
            (vec![Asia::Shanghai], ZoneSource::Default)
        );
    }

    #[test]
    fn every_listed_zone_is_in_the_tz_database() {
        for r in [
            "CN", "US", "CA", "AU", "MX", "BR", "ID", "ES", "PT", "GB", "SG",
        ] {
            for z in country_zones(r) {
                assert!(z.parse::<Tz>().is_ok(), "{z}");
            }
        }
    }
}
