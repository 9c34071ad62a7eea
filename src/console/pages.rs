//! The console's pages: a server-rendered shell per page (navigation, the
//! user's words in their language, the CSRF token), and one vendored
//! script (`assets/console.js`, no build step) that draws the page from
//! the `/v1` routes and sends every change through them. A page asked for
//! without a session redirects to the login page.

use axum::extract::{Path, Request};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;

use super::{i18n, ConsoleState};
use crate::api::access::{Need, Principal};
use crate::api::routes::Route;

pub(super) fn routes() -> Vec<Route<ConsoleState>> {
    let page = |name: &'static str, need: Need| {
        get(move |req: Request| async move { shell(name, need, String::new(), req) })
    };
    vec![
        (
            "get",
            "/console",
            "Console",
            Need::Open,
            get(|| async { Redirect::to("/console/") }),
        ),
        (
            "get",
            "/console/",
            "Console: today",
            Need::Open,
            page("home", Need::Read),
        ),
        (
            "get",
            "/console/login",
            "Console: log in",
            Need::Open,
            get(login),
        ),
        (
            "get",
            "/console/templates",
            "Console: templates",
            Need::Open,
            page("templates", Need::Read),
        ),
        (
            "get",
            "/console/templates/{locale}/{name}/{channel}",
            "Console: template editor",
            Need::Open,
            get(
                |Path((l, n, c)): Path<(String, String, String)>, req: Request| async move {
                    shell("editor", Need::Read, format!("{l}/{n}/{c}"), req)
                },
            ),
        ),
        (
            "get",
            "/console/settings",
            "Console: quiet hours and caps",
            Need::Open,
            page("settings", Need::Read),
        ),
        (
            "get",
            "/console/borrowers",
            "Console: borrowers",
            Need::Open,
            page("borrowers", Need::Compliance),
        ),
        (
            "get",
            "/console/operations",
            "Console: operations",
            Need::Open,
            page("operations", Need::Read),
        ),
        (
            "get",
            "/console/compliance",
            "Console: compliance",
            Need::Open,
            page("compliance", Need::Compliance),
        ),
        (
            "get",
            "/console/assets/{file}",
            "Console: script and style",
            Need::Open,
            get(asset),
        ),
    ]
}

const SCRIPT: &str = include_str!("assets/console.js");
const STYLE: &str = include_str!("assets/console.css");

async fn asset(Path(file): Path<String>) -> Response {
    match file.as_str() {
        "console.js" => (
            [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
            SCRIPT,
        )
            .into_response(),
        "console.css" => {
            ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

/// HTML-escapes text for an element or a quoted attribute.
pub(super) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// JSON safe inside a `<script>` element.
fn script_json(v: &serde_json::Value) -> String {
    v.to_string()
        .replace("</", "<\\/")
        .replace("<!--", "<\\!--")
}

fn accept_language(req: &Request) -> Option<&str> {
    req.headers()
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
}

const NAV: &[(&str, &str, &str)] = &[
    ("home", "/console/", "nav.home"),
    ("templates", "/console/templates", "nav.templates"),
    ("settings", "/console/settings", "nav.settings"),
    ("borrowers", "/console/borrowers", "nav.borrowers"),
    ("operations", "/console/operations", "nav.operations"),
    ("compliance", "/console/compliance", "nav.compliance"),
];

/// The document's start up to the end of `<head>`'s shared part: the
/// language, the title, the style, the words and the script.
fn head(lang: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"{lang}\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title}</title><link rel=\"stylesheet\" href=\"/console/assets/console.css\">\
<script>window.T = {words};</script>\
<script src=\"/console/assets/console.js\" defer></script>",
        title = esc(i18n::word(lang, "title")),
        words = script_json(&i18n::table(lang)),
    )
}

fn shell(page: &str, need: Need, arg: String, req: Request) -> Response {
    let Some(who) = req.extensions().get::<Principal>().cloned() else {
        let next = req.uri().path();
        return Redirect::to(&format!(
            "/console/login?next={}",
            url::form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
        ))
        .into_response();
    };
    let lang = i18n::choose(who.locale.as_deref(), accept_language(&req));
    let t = |k: &str| esc(i18n::word(lang, k));
    let nav: String = NAV
        .iter()
        .map(|(p, href, key)| {
            let current = if *p == page || (page == "editor" && *p == "templates") {
                " aria-current=\"page\""
            } else {
                ""
            };
            format!("<a href=\"{href}\"{current}>{}</a>", t(key))
        })
        .collect();
    let main = if need.allows(who.role) {
        format!("<p class=\"muted\">{}</p>", t("loading"))
    } else {
        format!("<p class=\"error\" role=\"alert\">{}</p>", t("needs_role"))
    };
    let me = serde_json::json!({ "name": who.name, "role": who.role.as_str(), "lang": lang });
    let options: String = [("en", "English"), ("zh-CN", "中文")]
        .iter()
        .map(|(v, label)| {
            let sel = if *v == lang { " selected" } else { "" };
            format!("<option value=\"{v}\"{sel}>{label}</option>")
        })
        .collect();
    let allowed = need.allows(who.role);
    Html(format!(
        "{head}<meta name=\"csrf\" content=\"{csrf}\">\
<script>window.ME = {me};</script></head>\
<body data-page=\"{page}\" data-arg=\"{arg}\" data-allowed=\"{allowed}\">\
<header><strong class=\"brand\">duebell</strong><nav aria-label=\"main\">{nav}</nav>\
<span class=\"who\">{name} · {role}</span>\
<label class=\"lang\">{language} <select id=\"lang\">{options}</select></label>\
<button id=\"logout\" type=\"button\">{logout}</button></header>\
<main id=\"main\" tabindex=\"-1\">{main}</main></body></html>",
        head = head(lang),
        csrf = esc(who.csrf.as_deref().unwrap_or("")),
        me = script_json(&me),
        arg = esc(&arg),
        name = esc(&who.name),
        role = esc(who.role.as_str()),
        language = t("language"),
        logout = t("logout"),
    ))
    .into_response()
}

async fn login(req: Request) -> Response {
    let lang = i18n::choose(None, accept_language(&req));
    let t = |k: &str| esc(i18n::word(lang, k));
    Html(format!(
        "{head}</head><body data-page=\"login\"><main id=\"main\" class=\"login\"><h1>{title}</h1>\
<form id=\"login-form\"><label>{name_label}<input id=\"login-name\" name=\"name\" autocomplete=\"username\" required autofocus></label>\
<label>{password_label}<input id=\"login-password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label>\
<button type=\"submit\" id=\"login-submit\">{login}</button>\
<p id=\"login-error\" class=\"error\" role=\"alert\"></p></form></main></body></html>",
        head = head(lang),
        title = t("title"),
        name_label = t("login.name"),
        password_label = t("login.password"),
        login = t("login"),
    ))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_script_json_cannot_break_out() {
        assert_eq!(esc("<b a=\"x\">&'"), "&lt;b a=&quot;x&quot;&gt;&amp;&#39;");
        let v = serde_json::json!({ "k": "</script><script>alert(1)</script>" });
        assert!(!script_json(&v).contains("</script>"));
    }
}
