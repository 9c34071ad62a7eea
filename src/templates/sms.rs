//! SMS length: encoding and how many parts a text is billed as.
//! Rules (../shared/reference/providers.md): GSM-7 160/153 with extension
//! characters counted twice; UCS-2 70/67 with characters outside the BMP
//! counted twice; mainland-China billing counts the 【signature】 plus the
//! body, every character once, 70 then 67 per part.

use serde::Serialize;

/// The GSM 03.38 basic character set.
const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// The GSM 03.38 extension table: each costs an escape plus itself.
const GSM7_EXTENSION: &str = "^{}\\[~]|€\u{000C}";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    Gsm7,
    Ucs2,
}

/// How a text counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SmsCount {
    pub encoding: Encoding,
    /// Septets (GSM-7) or UTF-16 code units (UCS-2).
    pub units: usize,
    pub segments: usize,
}

/// Counts a text as carriers bill it internationally (Twilio and others).
pub fn count(text: &str) -> SmsCount {
    let mut units: usize = 0;
    let mut gsm = true;
    for c in text.chars() {
        if GSM7_BASIC.contains(c) {
            units += 1;
        } else if GSM7_EXTENSION.contains(c) {
            units += 2;
        } else {
            gsm = false;
            break;
        }
    }
    if gsm {
        let segments = if units <= 160 { 1 } else { units.div_ceil(153) };
        return SmsCount {
            encoding: Encoding::Gsm7,
            units,
            segments,
        };
    }
    let units: usize = text.chars().map(char::len_utf16).sum();
    let segments = if units <= 70 { 1 } else { units.div_ceil(67) };
    SmsCount {
        encoding: Encoding::Ucs2,
        units,
        segments,
    }
}

/// Counts a text as mainland-China platforms bill it: the signature the
/// platform prepends (with its brackets) plus the body, one per character.
pub fn count_china(signature: &str, body: &str) -> SmsCount {
    let units = signature.chars().count() + body.chars().count();
    let segments = if units <= 70 { 1 } else { units.div_ceil(67) };
    SmsCount {
        encoding: Encoding::Ucs2,
        units,
        segments,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_counts() {
        let table: &[(&str, Encoding, usize, usize)] = &[
            ("", Encoding::Gsm7, 0, 1),
            (&"a".repeat(160), Encoding::Gsm7, 160, 1),
            (&"a".repeat(161), Encoding::Gsm7, 161, 2),
            (&"a".repeat(306), Encoding::Gsm7, 306, 2),
            (&"a".repeat(307), Encoding::Gsm7, 307, 3),
            // Extension characters count twice: 80 × '€' is 160 septets.
            (&"€".repeat(80), Encoding::Gsm7, 160, 1),
            (&format!("{}{{", "a".repeat(159)), Encoding::Gsm7, 161, 2),
            (
                "Your payment of $120.00 is due Dec 1. Reply STOP to opt out.",
                Encoding::Gsm7,
                60,
                1,
            ),
            // One character outside GSM-7 turns the whole text UCS-2.
            (&format!("{}ç", "a".repeat(69)), Encoding::Ucs2, 70, 1),
            (
                &"a".repeat(71).replace('a', "é").replace('é', "ł"),
                Encoding::Ucs2,
                71,
                2,
            ),
            // Emoji are outside the BMP: two UTF-16 units each.
            (&format!("{}😀", "a".repeat(68)), Encoding::Ucs2, 70, 1),
            (&format!("{}😀", "a".repeat(69)), Encoding::Ucs2, 71, 2),
            (&"中".repeat(70), Encoding::Ucs2, 70, 1),
            (&"中".repeat(134), Encoding::Ucs2, 134, 2),
            (&"中".repeat(135), Encoding::Ucs2, 135, 3),
        ];
        for (text, enc, units, segments) in table {
            let c = count(text);
            assert_eq!(
                (c.encoding, c.units, c.segments),
                (*enc, *units, *segments),
                "{text:?}"
            );
        }
    }

    #[test]
    fn china_billing_counts_the_signature() {
        // The reference example: signature of 5 + body of 155 = 160 → 3 parts.
        let c = count_china("【贷款通】", &"字".repeat(155));
        assert_eq!((c.units, c.segments), (160, 3));
        let c = count_china("【贷款通知】", &"字".repeat(64));
        assert_eq!((c.units, c.segments), (70, 1));
        assert_eq!(count_china("【贷款通知】", &"字".repeat(65)).segments, 2);
    }
}
