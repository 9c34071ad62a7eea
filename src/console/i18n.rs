//! The console's words in English and Chinese. A user's language is the
//! one they chose (`PUT /v1/session/locale`), else the browser's
//! `Accept-Language`, else English. The pages get the whole table, so the
//! script words its messages the same way.

/// `en` or `zh-CN`.
pub(super) fn choose(chosen: Option<&str>, accept_language: Option<&str>) -> &'static str {
    match chosen {
        Some("zh-CN") => return "zh-CN",
        Some("en") => return "en",
        _ => {}
    }
    let accept = accept_language.unwrap_or("");
    // The first language listed wins (browsers list by preference).
    let first = accept
        .split(',')
        .next()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if first.starts_with("zh") {
        "zh-CN"
    } else {
        "en"
    }
}

/// (key, English, Chinese).
const WORDS: &[(&str, &str, &str)] = &[
    ("title", "duebell console", "duebell 控制台"),
    ("nav.home", "Today", "今日"),
    ("nav.templates", "Templates", "消息模板"),
    ("nav.settings", "Quiet hours & caps", "免打扰时段与上限"),
    ("nav.borrowers", "Borrowers", "借款人"),
    ("nav.operations", "Operations", "运行"),
    ("nav.compliance", "Compliance", "合规"),
    ("logout", "Log out", "退出登录"),
    ("login", "Log in", "登录"),
    ("login.name", "Name", "用户名"),
    ("login.password", "Password", "密码"),
    (
        "login.failed",
        "Wrong name or password.",
        "用户名或密码错误。",
    ),
    ("language", "Language", "语言"),
    ("role", "Role", "角色"),
    ("loading", "Loading…", "加载中…"),
    ("error", "Error", "错误"),
    (
        "needs_role",
        "Your role cannot open this page.",
        "您的角色无权访问此页面。",
    ),
    (
        "tpl.list",
        "Templates by locale and channel",
        "按语言和渠道列出的模板",
    ),
    ("tpl.locale", "Locale", "语言"),
    ("tpl.name", "Template", "模板"),
    ("tpl.channel", "Channel", "渠道"),
    ("tpl.version", "Version", "版本"),
    ("tpl.edit", "Edit", "编辑"),
    ("tpl.preview", "Preview", "预览"),
    ("tpl.sample", "Sample", "示例"),
    (
        "tpl.borrower",
        "Or a borrower id (masked)",
        "或借款人编号（脱敏）",
    ),
    ("tpl.chars", "characters", "字符"),
    ("tpl.parts", "parts", "条"),
    (
        "tpl.parts_cn",
        "parts in mainland China, with the 【signature】",
        "条（中国大陆，含【签名】）",
    ),
    ("tpl.subject", "Subject", "主题"),
    ("tpl.text", "Text", "纯文本"),
    ("tpl.html", "HTML", "HTML"),
    (
        "tpl.problems",
        "Problems (publishing is blocked until there are none)",
        "问题（全部解决前无法发布）",
    ),
    (
        "tpl.no_problems",
        "No problems: ready to publish.",
        "没有问题，可以发布。",
    ),
    (
        "tpl.note",
        "What changed (for the history)",
        "修改说明（记入历史）",
    ),
    ("tpl.publish", "Publish", "发布"),
    ("tpl.published", "Published version", "已发布版本"),
    ("tpl.history", "History", "历史版本"),
    ("tpl.rollback", "Roll back to this version", "回滚到此版本"),
    (
        "tpl.conflict",
        "Someone changed this template meanwhile. Reload to see it.",
        "此模板已被他人修改，请重新加载。",
    ),
    (
        "set.quiet",
        "Quiet-hours rules (the first rule matching a channel and zone applies)",
        "免打扰规则（按渠道和时区匹配第一条）",
    ),
    ("set.caps", "Contact caps", "联系次数上限"),
    ("set.steps", "Reminder ladder", "提醒阶梯"),
    ("set.add_rule", "Add an entry", "添加一条"),
    ("set.remove", "Remove", "删除"),
    ("set.add_field", "Add a field (name)", "添加字段（名称）"),
    (
        "set.lists",
        "Lists are comma-separated; an empty day list means no contact that day.",
        "列表用逗号分隔；某天的列表为空表示当天不联系。",
    ),
    ("set.impact", "Show what this changes today", "查看今日影响"),
    ("set.would_defer", "would be deferred", "将推迟"),
    ("set.would_release", "would be released", "将放行"),
    ("set.would_suppress", "would be suppressed", "将不再发送"),
    ("set.would_allow", "would be allowed again", "将恢复发送"),
    ("set.save", "Save and apply", "保存并生效"),
    (
        "set.saved",
        "Saved; the daemon reloaded the settings.",
        "已保存，守护进程已重新加载设置。",
    ),
    (
        "set.note",
        "Why (for the change log)",
        "修改原因（记入变更日志）",
    ),
    (
        "bor.search",
        "Borrower id, phone (+86…) or email",
        "借款人编号、手机号（+86…）或邮箱",
    ),
    ("bor.find", "Find", "查找"),
    ("bor.none", "No borrower found.", "未找到借款人。"),
    ("bor.timeline", "Timeline", "时间线"),
    ("bor.state", "State", "状态"),
    ("bor.reason", "Reason", "原因"),
    ("bor.hold", "Add a hold", "添加暂停"),
    ("bor.hold_kind", "Kind", "类型"),
    ("bor.until", "Until (date)", "截止日期"),
    ("bor.end_hold", "End hold number", "结束暂停编号"),
    ("bor.opt_out", "Opt out", "退订"),
    ("bor.opt_in", "Opt back in", "恢复订阅"),
    ("bor.done", "Done.", "完成。"),
    ("ops.status", "Status", "状态"),
    ("ops.pause", "Pause", "暂停"),
    ("ops.resume", "Resume", "恢复"),
    ("ops.all", "all providers", "所有通道"),
    (
        "ops.unknown",
        "Messages whose outcome is unknown",
        "结果未知的消息",
    ),
    ("ops.release", "Send again", "重新发送"),
    ("ops.today", "Today: messages sent, deferred and suppressed, by reason", "今日：按原因统计的已发送、推迟和不再发送的消息"),
    ("ops.by_reason", "Messages by state and reason", "按状态和原因统计的消息"),
    ("where.files", "Changes made here are written to these files and applied at once; edits made on the server appear here as versions of their own.", "此处的修改写入以下文件并立即生效；在服务器上直接修改的内容会作为单独的版本显示在这里。"),
    ("ops.cancel", "Close without sending", "关闭不发送"),
    ("cmp.audit", "Audit export", "审计导出"),
    ("cmp.from", "From", "起始日期"),
    ("cmp.to", "To", "结束日期"),
    ("cmp.download", "Download", "下载"),
    ("cmp.changes", "Change log", "变更日志"),
    ("cmp.when", "When", "时间"),
    ("cmp.who", "Who", "操作人"),
    ("cmp.what", "What", "内容"),
];

/// The table for `locale` as a JSON object.
pub(super) fn table(locale: &str) -> serde_json::Value {
    let zh = locale == "zh-CN";
    WORDS
        .iter()
        .map(|(k, en, cn)| {
            (
                (*k).to_owned(),
                serde_json::Value::from(if zh { *cn } else { *en }),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// One word.
pub(super) fn word(locale: &str, key: &str) -> &'static str {
    let zh = locale == "zh-CN";
    WORDS
        .iter()
        .find(|(k, ..)| *k == key)
        .map_or("", |(_, en, cn)| if zh { cn } else { en })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_browser_language_is_the_default_and_a_choice_wins() {
        assert_eq!(choose(None, Some("zh-CN,zh;q=0.9,en;q=0.8")), "zh-CN");
        assert_eq!(choose(None, Some("en-US,en;q=0.9,zh;q=0.5")), "en");
        assert_eq!(choose(Some("en"), Some("zh-CN")), "en");
        assert_eq!(choose(None, None), "en");
        assert_eq!(word("zh-CN", "tpl.publish"), "发布");
    }

    #[test]
    fn every_word_has_both_languages() {
        for (k, en, cn) in WORDS {
            assert!(!en.is_empty() && !cn.is_empty(), "{k}");
        }
    }
}
