//! Money: a decimal amount with its ISO 4217 currency. Never a float: amounts
//! are parsed from text into `rust_decimal::Decimal` and compared exactly.

use std::fmt;

use rust_decimal::Decimal;

use super::Invalid;

/// ISO 4217 codes in circulation, with their minor-unit digits. Codes not in
/// the list are refused: a typo'd currency would print a wrong symbol in
/// every reminder.
const CURRENCIES: &[(&str, u32)] = &[
    ("AED", 2),
    ("AFN", 2),
    ("ALL", 2),
    ("AMD", 2),
    ("ANG", 2),
    ("AOA", 2),
    ("ARS", 2),
    ("AUD", 2),
    ("AWG", 2),
    ("AZN", 2),
    ("BAM", 2),
    ("BBD", 2),
    ("BDT", 2),
    ("BGN", 2),
    ("BHD", 3),
    ("BIF", 0),
    ("BMD", 2),
    ("BND", 2),
    ("BOB", 2),
    ("BRL", 2),
    ("BSD", 2),
    ("BTN", 2),
    ("BWP", 2),
    ("BYN", 2),
    ("BZD", 2),
    ("CAD", 2),
    ("CDF", 2),
    ("CHF", 2),
    ("CLP", 0),
    ("CNY", 2),
    ("COP", 2),
    ("CRC", 2),
    ("CUP", 2),
    ("CVE", 2),
    ("CZK", 2),
    ("DJF", 0),
    ("DKK", 2),
    ("DOP", 2),
    ("DZD", 2),
    ("EGP", 2),
    ("ERN", 2),
    ("ETB", 2),
    ("EUR", 2),
    ("FJD", 2),
    ("FKP", 2),
    ("GBP", 2),
    ("GEL", 2),
    ("GHS", 2),
    ("GIP", 2),
    ("GMD", 2),
    ("GNF", 0),
    ("GTQ", 2),
    ("GYD", 2),
    ("HKD", 2),
    ("HNL", 2),
    ("HTG", 2),
    ("HUF", 2),
    ("IDR", 2),
    ("ILS", 2),
    ("INR", 2),
    ("IQD", 3),
    ("IRR", 2),
    ("ISK", 0),
    ("JMD", 2),
    ("JOD", 3),
    ("JPY", 0),
    ("KES", 2),
    ("KGS", 2),
    ("KHR", 2),
    ("KMF", 0),
    ("KPW", 2),
    ("KRW", 0),
    ("KWD", 3),
    ("KYD", 2),
    ("KZT", 2),
    ("LAK", 2),
    ("LBP", 2),
    ("LKR", 2),
    ("LRD", 2),
    ("LSL", 2),
    ("LYD", 3),
    ("MAD", 2),
    ("MDL", 2),
    ("MGA", 2),
    ("MKD", 2),
    ("MMK", 2),
    ("MNT", 2),
    ("MOP", 2),
    ("MRU", 2),
    ("MUR", 2),
    ("MVR", 2),
    ("MWK", 2),
    ("MXN", 2),
    ("MYR", 2),
    ("MZN", 2),
    ("NAD", 2),
    ("NGN", 2),
    ("NIO", 2),
    ("NOK", 2),
    ("NPR", 2),
    ("NZD", 2),
    ("OMR", 3),
    ("PAB", 2),
    ("PEN", 2),
    ("PGK", 2),
    ("PHP", 2),
    ("PKR", 2),
    ("PLN", 2),
    ("PYG", 0),
    ("QAR", 2),
    ("RON", 2),
    ("RSD", 2),
    ("RUB", 2),
    ("RWF", 0),
    ("SAR", 2),
    ("SBD", 2),
    ("SCR", 2),
    ("SDG", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("SHP", 2),
    ("SLE", 2),
    ("SOS", 2),
    ("SRD", 2),
    ("SSP", 2),
    ("STN", 2),
    ("SVC", 2),
    ("SYP", 2),
    ("SZL", 2),
    ("THB", 2),
    ("TJS", 2),
    ("TMT", 2),
    ("TND", 3),
    ("TOP", 2),
    ("TRY", 2),
    ("TTD", 2),
    ("TWD", 2),
    ("TZS", 2),
    ("UAH", 2),
    ("UGX", 0),
    ("USD", 2),
    ("UYU", 2),
    ("UZS", 2),
    ("VES", 2),
    ("VND", 0),
    ("VUV", 0),
    ("WST", 2),
    ("XAF", 0),
    ("XCD", 2),
    ("XOF", 0),
    ("XPF", 0),
    ("YER", 2),
    ("ZAR", 2),
    ("ZMW", 2),
    ("ZWG", 2),
];

/// An ISO 4217 currency code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency {
    code: &'static str,
    minor_units: u32,
}

impl Currency {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let s = raw.trim().to_ascii_uppercase();
        CURRENCIES
            .iter()
            .find(|(c, _)| *c == s)
            .map(|&(code, minor_units)| Currency { code, minor_units })
            .ok_or_else(|| {
                Invalid::new(format!(
                    "`{}` is not an ISO 4217 currency code; use e.g. CNY, USD, EUR",
                    raw.trim()
                ))
            })
    }
    pub fn code(&self) -> &'static str {
        self.code
    }
    /// Digits after the decimal point in this currency (2 for CNY, 0 for JPY).
    pub fn minor_units(&self) -> u32 {
        self.minor_units
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code)
    }
}

/// An amount of money in one currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Money {
    pub amount: Decimal,
    pub currency: Currency,
}

impl Money {
    /// Parses a non-negative amount with no more decimals than the currency
    /// has minor units: `1234.50 CNY` is fine, `1234.505 CNY` is a data error.
    pub fn parse(amount: &str, currency: Currency) -> Result<Self, Invalid> {
        let amount = parse_amount(amount)?;
        if amount.scale() > currency.minor_units()
            && amount.normalize().scale() > currency.minor_units()
        {
            return Err(Invalid::new(format!(
                "`{amount}` has more decimals than {} allows ({})",
                currency.code(),
                currency.minor_units()
            )));
        }
        Ok(Money { amount, currency })
    }
}

/// Parses a non-negative decimal amount: `1234.50`, `1,234.50` is refused
/// (thousands separators are ambiguous across locales).
pub fn parse_amount(raw: &str) -> Result<Decimal, Invalid> {
    let s = raw.trim();
    if s.is_empty() {
        return Err(Invalid::new("is empty"));
    }
    if !s.chars().all(|c| c.is_ascii_digit() || c == '.') || s.starts_with('.') || s.ends_with('.')
    {
        return Err(Invalid::new(format!(
            "`{s}` is not an amount; write digits with an optional decimal point, e.g. 1234.50"
        )));
    }
    s.parse::<Decimal>()
        .map_err(|e| Invalid::new(format!("`{s}` is not an amount: {e}")))
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount, self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_exact_decimals() {
        let cny = Currency::parse("cny").unwrap();
        let m = Money::parse("1234.50", cny).unwrap();
        assert_eq!(m.amount, Decimal::new(123450, 2));
        assert_eq!(m.to_string(), "1234.50 CNY");
        let sum = parse_amount("0.1").unwrap() + parse_amount("0.2").unwrap();
        assert_eq!(sum, parse_amount("0.3").unwrap());
    }

    #[test]
    fn bad_amounts_and_currencies_are_refused() {
        let cny = Currency::parse("CNY").unwrap();
        for bad in ["", "-5", "1,234.50", "1e3", "abc", ".5", "12."] {
            assert!(Money::parse(bad, cny).is_err(), "{bad} accepted");
        }
        assert!(Money::parse("10.505", cny).is_err());
        assert!(Money::parse("10.500", cny).is_ok());
        let jpy = Currency::parse("JPY").unwrap();
        assert!(Money::parse("10.5", jpy).is_err());
        assert!(Currency::parse("RMB").is_err());
    }
}
