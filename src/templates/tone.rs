//! Tone at the gate: the rendered text of a step whose stage is listed in
//! `[tone] stages` (shipped: `firm`, `formal`) must not contain any phrase
//! of `[tone] forbidden` for its locale: threats, mention of family,
//! employer or contacts, shaming words. `templates check` renders every
//! such template against the samples and refuses a match; the dispatcher
//! checks each real message again before it is sent.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `[tone]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ToneConfig {
    /// Policy step stages whose messages are checked.
    pub stages: Vec<String>,
    /// Forbidden phrases by locale or language (`zh-CN`, `zh`, `en`…);
    /// a locale is checked against its own list and its language's.
    /// Matching ignores case.
    pub forbidden: BTreeMap<String, Vec<String>>,
}

impl Default for ToneConfig {
    fn default() -> Self {
        let list = |words: &[&str]| words.iter().map(|w| (*w).to_owned()).collect();
        ToneConfig {
            stages: vec!["firm".to_owned(), "formal".to_owned()],
            forbidden: BTreeMap::from([
                ("zh-CN".to_owned(), list(SHIPPED_ZH)),
                ("en".to_owned(), list(SHIPPED_EN)),
            ]),
        }
    }
}

/// Threats, legal consequences the lender has not started, family,
/// employer and contacts, shaming (contact-rules.md, "What humane means").
pub const SHIPPED_ZH: &[&str] = &[
    "起诉",
    "坐牢",
    "拘留",
    "逮捕",
    "报警",
    "公安",
    "刑事",
    "法院传票",
    "上门",
    "黑名单",
    "曝光",
    "老赖",
    "丢人",
    "家人",
    "父母",
    "配偶",
    "亲友",
    "亲属",
    "通讯录",
    "单位",
    "领导",
    "同事",
];
pub const SHIPPED_EN: &[&str] = &[
    "arrest",
    "jail",
    "prison",
    "police",
    "criminal",
    "sue you",
    "lawsuit",
    "court summons",
    "blacklist",
    "deadbeat",
    "shame",
    "disgrace",
    "your family",
    "your relatives",
    "your employer",
    "your boss",
    "your colleagues",
    "your neighbours",
    "your neighbors",
    "your contacts",
    "visit your home",
];

impl ToneConfig {
    pub fn applies(&self, stage: &str) -> bool {
        self.stages.iter().any(|s| s == stage)
    }

    /// The first forbidden phrase for `locale` found in any of `texts`.
    pub fn find<'a>(&'a self, locale: &str, texts: &[&str]) -> Option<&'a str> {
        let language = locale.split(['-', '_']).next().unwrap_or(locale);
        let lowered: Vec<String> = texts.iter().map(|t| t.to_lowercase()).collect();
        self.forbidden
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(locale) || k.eq_ignore_ascii_case(language))
            .flat_map(|(_, phrases)| phrases)
            .find(|p| {
                let p = p.to_lowercase();
                !p.is_empty() && lowered.iter().any(|t| t.contains(&p))
            })
            .map(String::as_str)
    }

    /// A real message of a step at `stage`: `Err(phrase)` when it renders
    /// a forbidden phrase. The borrower's own name is theirs, not our tone
    /// (a Mr Shames still gets his reminder), so it is left out.
    pub fn check_message(
        &self,
        stage: &str,
        ctx: &super::MessageContext,
        content: &super::Content,
    ) -> Result<(), String> {
        if !self.applies(stage) {
            return Ok(());
        }
        let mut texts = vec![content.body()];
        if let super::Content::Email { html, subject, .. } = content {
            texts.push(html);
            texts.push(subject);
        }
        let name = ctx.borrower.name.trim();
        let texts: Vec<String> = texts
            .iter()
            .map(|t| {
                if name.is_empty() {
                    (*t).to_owned()
                } else {
                    t.replace(name, "")
                }
            })
            .collect();
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        match self.find(&ctx.locale, &texts) {
            Some(phrase) => Err(phrase.to_owned()),
            None => Ok(()),
        }
    }

    /// Cross-field rules, as (key, message).
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (locale, phrases) in &self.forbidden {
            if crate::domain::Locale::parse(locale).is_err() {
                out.push((
                    format!("tone.forbidden.{locale}"),
                    format!("`{locale}` is not a locale or language tag (zh-CN, zh, en…)"),
                ));
            }
            if let Some(i) = phrases.iter().position(|p| p.trim().is_empty()) {
                out.push((
                    format!("tone.forbidden.{locale}[{i}]"),
                    "is empty: it would match every message".to_owned(),
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_locale_is_checked_against_its_own_and_its_languages_list() {
        let mut tone = ToneConfig::default();
        tone.forbidden.insert("zh".into(), vec!["催命".into()]);
        assert_eq!(tone.find("zh-CN", &["我们将联系您的家人"]), Some("家人"));
        assert_eq!(tone.find("zh-CN", &["别催命了"]), Some("催命"));
        assert_eq!(
            tone.find("en-GB", &["We may tell Your Employer."]),
            Some("your employer")
        );
        assert_eq!(tone.find("en", &["Please pay by Friday."]), None);
        // Another locale's list does not apply.
        assert_eq!(tone.find("en", &["家人"]), None);
        assert!(tone.applies("firm") && !tone.applies("friendly"));
    }

    #[test]
    fn empty_phrases_and_bad_locales_are_refused() {
        let mut tone = ToneConfig::default();
        tone.forbidden
            .insert("not a locale".into(), vec![" ".into()]);
        let found = tone.validate();
        assert_eq!(found.len(), 2, "{found:?}");
    }
}
