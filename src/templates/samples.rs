//! The sample contexts `templates/samples.toml` declares, which `check`,
//! `render` and previews render every template against; and the plain-text
//! preview of a rendered message.

use super::*;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Samples {
    pub sample: Vec<Sample>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sample {
    pub name: String,
    pub step: String,
    pub stage: String,
    pub borrower: SampleBorrower,
    pub loans: Vec<LoanContext>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleBorrower {
    pub name: String,
    pub phone: String,
}

impl Samples {
    pub fn load(dir: &Path) -> Result<Samples, TemplateProblem> {
        let path = dir.join("samples.toml");
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(&path).map_err(|e| TemplateProblem {
            file: shown.clone(),
            line: None,
            message: format!("cannot read: {e}"),
        })?;
        let samples: Samples = toml::from_str(&text).map_err(|e| TemplateProblem {
            file: shown.clone(),
            line: e.span().map(|s| text[..s.start].matches('\n').count() + 1),
            message: e.message().trim().to_owned(),
        })?;
        if samples.sample.iter().any(|s| s.loans.is_empty()) {
            return Err(TemplateProblem {
                file: shown,
                line: None,
                message: "every sample needs at least one loan".to_owned(),
            });
        }
        Ok(samples)
    }

    pub fn get(&self, name: &str) -> Option<&Sample> {
        self.sample.iter().find(|s| s.name == name)
    }
}

/// The text `duebell render` prints: headers, then exactly the content.
pub fn preview(r: &Rendered) -> String {
    let mut out = format!(
        "template: {} ({}, version {})\n",
        r.template, r.locale, r.version
    );
    match &r.content {
        Content::Sms {
            body,
            count,
            china_count,
        } => {
            out.push_str(&format!(
                "sms: {} parts, {:?}, {} units",
                count.segments, count.encoding, count.units
            ));
            if let Some(c) = china_count {
                out.push_str(&format!(
                    "; China billing with signature: {} parts, {} characters",
                    c.segments, c.units
                ));
            }
            out.push_str(&format!("\n\n{body}\n"));
        }
        Content::Email {
            subject,
            text,
            html,
        } => {
            out.push_str(&format!(
                "subject: {subject}\n\n--- text/plain ---\n{text}\n--- text/html ---\n{html}\n"
            ));
        }
    }
    if let Some((code, params)) = &r.provider.aliyun {
        out.push_str(&format!(
            "aliyun: TemplateCode {code} TemplateParam {}\n",
            serde_json::to_string(params).unwrap_or_default()
        ));
    }
    if let Some((id, params)) = &r.provider.tencent {
        out.push_str(&format!(
            "tencent: TemplateId {id} TemplateParamSet {}\n",
            serde_json::to_string(params).unwrap_or_default()
        ));
    }
    out
}
