//! Provider templates: what an SMS template declares for providers that
//! send only pre-approved templates (`<name>.sms.toml` beside it), and their
//! parameters evaluated for one message.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{problem, MessageContext, ProviderParams, TemplateProblem, TemplateSet};

/// Provider template declarations for one SMS template
/// (`<name>.sms.toml` beside it):
///
/// ```toml
/// [aliyun]
/// template_code = "SMS_123456"
/// params = { name = "borrower.name", amount = "loan.amount_due | money(loan.currency)" }
/// [tencent]
/// template_id = "1234567"
/// params = ["borrower.name", "loan.amount_due | money(loan.currency)"]
/// ```
/// Each parameter is a template expression evaluated against the context.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderTemplates {
    pub aliyun: Option<AliyunTemplate>,
    pub tencent: Option<TencentTemplate>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AliyunTemplate {
    pub template_code: String,
    pub params: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TencentTemplate {
    pub template_id: String,
    pub params: Vec<String>,
}

impl TemplateSet {
    pub(super) fn provider_params(
        &self,
        p: &ProviderTemplates,
        ctx: &MessageContext,
        file: &str,
    ) -> Result<ProviderParams, TemplateProblem> {
        let eval = |expr: &str| -> Result<String, TemplateProblem> {
            let e = self
                .env
                .compile_expression(expr)
                .map_err(|e| problem(file, &e))?;
            let v = e.eval(ctx).map_err(|e| problem(file, &e))?;
            if v.is_undefined() || v.is_none() {
                return Err(TemplateProblem {
                    file: file.to_owned(),
                    line: None,
                    message: format!("provider parameter `{expr}` is empty"),
                });
            }
            Ok(v.to_string())
        };
        let mut out = ProviderParams::default();
        if let Some(a) = &p.aliyun {
            let mut params = BTreeMap::new();
            for (k, expr) in &a.params {
                params.insert(k.clone(), eval(expr)?);
            }
            out.aliyun = Some((a.template_code.clone(), params));
        }
        if let Some(t) = &p.tencent {
            let params = t
                .params
                .iter()
                .map(|e| eval(e))
                .collect::<Result<Vec<_>, _>>()?;
            out.tencent = Some((t.template_id.clone(), params));
        }
        Ok(out)
    }
}
