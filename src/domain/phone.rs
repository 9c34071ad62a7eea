//! Phone numbers in E.164, validated against libphonenumber's numbering plans
//! (the `phonenumber` crate), so a number that has the right shape but no
//! existing range (`+86 12345`) is refused at import, not at the provider.

use std::fmt;

use super::Invalid;

/// A valid phone number, held in E.164 (`+8613812345678`). Displays masked.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PhoneNumber {
    e164: String,
    country_code: u16,
    region: Option<String>,
}

impl PhoneNumber {
    /// Accepts E.164 with optional spaces, dashes, dots or parentheses as
    /// people type them; a national number without `+` is refused because
    /// the loan book gives no reliable country to read it in.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let s = raw.trim();
        let compact: String = s
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')' | '\u{a0}'))
            .collect();
        if !compact.starts_with('+') {
            return Err(Invalid::new(format!(
                "`{}` is not in E.164: start with + and the country code, e.g. +8613812345678",
                mask_phone(&compact)
            )));
        }
        if compact.len() < 4 || !compact[1..].chars().all(|c| c.is_ascii_digit()) {
            return Err(Invalid::new(format!(
                "`{}` is not a phone number: only digits may follow +",
                mask_phone(&compact)
            )));
        }
        let parsed = phonenumber::parse(None, &compact).map_err(|e| {
            Invalid::new(format!(
                "`{}` is not a phone number: {e}",
                mask_phone(&compact)
            ))
        })?;
        if !parsed.is_valid() {
            return Err(Invalid::new(format!(
                "`{}` is not a valid number in its country's numbering plan",
                mask_phone(&compact)
            )));
        }
        let e164 = parsed.format().mode(phonenumber::Mode::E164).to_string();
        let region = parsed.country().id().map(|id| format!("{id:?}"));
        Ok(PhoneNumber {
            e164,
            country_code: parsed.code().value(),
            region,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.e164
    }

    /// The calling code: 86 for mainland China, 1 for NANP.
    pub fn country_code(&self) -> u16 {
        self.country_code
    }

    /// ISO 3166 region the number belongs to (`CN`, `US`), when the
    /// numbering plan tells.
    pub fn region(&self) -> Option<&str> {
        self.region.as_deref()
    }
}

/// `+86138****5678`: the country and operator prefix and the last four
/// digits, enough for support to recognise a number, not to dial it.
pub fn mask_phone(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    if chars.len() <= 8 {
        let keep: String = chars.iter().take(3).collect();
        return format!("{keep}****");
    }
    let head: String = chars[..6].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}****{tail}")
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&mask_phone(&self.e164))
    }
}

impl fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhoneNumber({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_numbers_parse_to_e164() {
        let p = PhoneNumber::parse("+86 138-1234-5678").unwrap();
        assert_eq!(p.as_str(), "+8613812345678");
        assert_eq!(p.country_code(), 86);
        assert_eq!(p.region(), Some("CN"));
        let us = PhoneNumber::parse("+1 (212) 555-0123").unwrap();
        assert_eq!(us.as_str(), "+12125550123");
        assert_eq!(us.region(), Some("US"));
    }

    #[test]
    fn numbers_outside_the_numbering_plan_are_refused() {
        for bad in [
            "+86 12345",
            "13812345678",
            "+",
            "+86abc",
            "+999123456789",
            "",
        ] {
            assert!(PhoneNumber::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn display_masks_the_number() {
        let p = PhoneNumber::parse("+8613812345678").unwrap();
        assert_eq!(p.to_string(), "+86138****5678");
        assert!(!format!("{p:?}").contains("1234"));
    }
}
