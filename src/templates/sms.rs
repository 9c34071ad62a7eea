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

/// What each ASCII character costs in GSM-7, from the two tables: 1 (basic),
/// 2 (extension) or 0 (not in GSM-7). Searching the tables for each
/// character of each message was 1.5% of the sending loop's CPU.
const ASCII_COST: [u8; 128] = ascii_costs();

const fn ascii_costs() -> [u8; 128] {
    let mut cost = [0u8; 128];
    // A UTF-8 byte under 128 is an ASCII character, never part of another.
    let (basic, extension) = (GSM7_BASIC.as_bytes(), GSM7_EXTENSION.as_bytes());
    let mut i = 0;
    while i < basic.len() {
        if basic[i] < 128 {
            cost[basic[i] as usize] = 1;
        }
        i += 1;
    }
    let mut i = 0;
    while i < extension.len() {
        if extension[i] < 128 {
            cost[extension[i] as usize] = 2;
        }
        i += 1;
    }
    cost
}

/// Septets a character costs in GSM-7, or `None` outside it.
fn gsm7_cost(c: char) -> Option<usize> {
    let cost = match c.is_ascii() {
        true => ASCII_COST[c as usize],
        false if GSM7_BASIC.contains(c) => 1,
        false if GSM7_EXTENSION.contains(c) => 2,
        false => 0,
    };
    (cost > 0).then_some(usize::from(cost))
}

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
        match gsm7_cost(c) {
            Some(cost) => units += cost,
            None => {
                gsm = false;
                break;
            }
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
    fn each_character_costs_what_the_two_tables_say() {
        for c in (0..0x3000u32).filter_map(char::from_u32) {
            let expected = if GSM7_BASIC.contains(c) {
                Some(1)
            } else if GSM7_EXTENSION.contains(c) {
                Some(2)
            } else {
                None
            };
            assert_eq!(gsm7_cost(c), expected, "{c:?}");
        }
    }

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
