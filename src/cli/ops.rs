//! Operator commands: `status`, `messages`, `audit`, `migrate`, `store copy`.

use super::*;

/// Opens the store a command needs, or says why it cannot.
pub(super) async fn migrate(config: &crate::config::StoreConfig) -> ExitStatus {
    let store = match open_store(config).await {
        Ok(s) => s,
        Err(status) => return status,
    };
    let version = store.schema_version().await;
    store.close().await;
    match version {
        Ok(v) => {
            out!(
                "{}: {} store at schema version {v}",
                config.url,
                store.backend()
            );
            ExitStatus::Ok
        }
        Err(e) => {
            eprintln!(
                "duebell: cannot read the schema version of {}: {e}",
                config.url
            );
            ExitStatus::Failed
        }
    }
}

pub(super) async fn store_copy(from: &str, to: &str) -> ExitStatus {
    let side = |url: &str| crate::config::StoreConfig {
        url: url.to_owned(),
        ..Default::default()
    };
    for (flag, url) in [("--from", from), ("--to", to)] {
        let c = side(url);
        if c.sqlite_path().is_none() && !c.is_postgres() {
            eprintln!("duebell: {flag} `{url}` is not a store URL; use sqlite://PATH or postgres://USER@HOST:5432/DATABASE");
            return ExitStatus::BadConfig;
        }
    }
    match crate::store::copy(&side(from), &side(to)).await {
        Ok(report) => {
            out!("{:<16} {:>10} {:>10}", "table", "source", "copied");
            for (table, a, b) in &report.tables {
                out!("{table:<16} {a:>10} {b:>10}");
            }
            out!("copied {from} to {to}; every table's count matches");
            ExitStatus::Ok
        }
        Err(e) => {
            eprintln!("duebell: store copy failed, the target is unchanged: {e}");
            ExitStatus::Failed
        }
    }
}
pub(super) async fn status(config: &crate::config::Config) -> ExitStatus {
    if config.api.listen.is_empty() {
        eprintln!("duebell: the API is disabled (api.listen is empty); status needs it");
        return ExitStatus::BadConfig;
    }
    let Some(token) = config.api.tokens.first() else {
        eprintln!("duebell: status needs a token in api.tokens (or api.tokens_file)");
        return ExitStatus::BadConfig;
    };
    // A daemon listening on every interface is reached on loopback.
    let addr = config
        .api
        .listen
        .replace("0.0.0.0", "127.0.0.1")
        .replace("[::]", "[::1]");
    let url = format!("http://{addr}/v1/status");
    let resp = reqwest::Client::new()
        .get(&url)
        .bearer_auth(token.expose())
        .timeout(std::time::Duration::from_secs(10))
        .send()
        .await;
    match resp {
        Ok(r) if r.status().is_success() => match r.json::<crate::api::routes::Status>().await {
            Ok(s) => {
                out!("{}", s.summary);
                for (state, n) in &s.counts {
                    out!("  {state:<12} {n}");
                }
                ExitStatus::Ok
            }
            Err(e) => {
                eprintln!("duebell: unexpected answer from {url}: {e}");
                ExitStatus::Failed
            }
        },
        Ok(r) => {
            eprintln!("duebell: {url} answered {}", r.status());
            ExitStatus::Failed
        }
        Err(e) => {
            eprintln!("duebell: cannot reach the daemon at {url}: {e}; is it running?");
            ExitStatus::Failed
        }
    }
}

pub(super) async fn decide_messages(
    config: &crate::config::Config,
    action: &MessagesAction,
) -> ExitStatus {
    let (ids, release) = match action {
        MessagesAction::Release { ids } => (ids, true),
        MessagesAction::Cancel { ids } => (ids, false),
    };
    let store = match open_store(&config.store).await {
        Ok(s) => s,
        Err(status) => return status,
    };
    let mut status = ExitStatus::Ok;
    for id in ids {
        match store.operator_decide(SystemClock.now(), *id, release).await {
            Ok(Some(crate::store::MessageState::Planned)) => out!("{id}: released"),
            Ok(Some(crate::store::MessageState::Cancelled)) if !release => out!("{id}: cancelled"),
            Ok(Some(other)) => {
                eprintln!("duebell: message {id} is {other}; only unknown or failed messages can be released or cancelled");
                status = ExitStatus::Failed;
            }
            Ok(None) => {
                eprintln!("duebell: no message {id}");
                status = ExitStatus::Failed;
            }
            Err(e) => {
                eprintln!("duebell: {e}");
                status = ExitStatus::Failed;
            }
        }
    }
    store.close().await;
    status
}

pub(super) async fn audit(
    config: &crate::config::Config,
    from: Option<&str>,
    to: Option<&str>,
    format: crate::audit::AuditFormat,
) -> ExitStatus {
    let parse = |flag: &str, v: Option<&str>| -> Result<Option<chrono::NaiveDate>, ExitStatus> {
        v.map(crate::domain::parse_date).transpose().map_err(|e| {
            eprintln!("duebell: {flag}: {e}");
            ExitStatus::BadConfig
        })
    };
    let (from, to) = match (parse("--from", from), parse("--to", to)) {
        (Ok(f), Ok(t)) => (f, t),
        (Err(s), _) | (_, Err(s)) => return s,
    };
    let store = match open_store(&config.store).await {
        Ok(s) => s,
        Err(status) => return status,
    };
    let mut out = std::io::stdout().lock();
    let result = crate::audit::export(
        store.as_ref(),
        from,
        to,
        format,
        config.defaults.timezone.0,
        &mut out,
    )
    .await;
    store.close().await;
    match result {
        Ok(_) => ExitStatus::Ok,
        Err(e) => {
            eprintln!("duebell: {e}");
            ExitStatus::Failed
        }
    }
}

pub(super) async fn messages(
    config: &crate::config::Config,
    state: Option<&str>,
    borrower: Option<&str>,
    limit: u32,
) -> ExitStatus {
    let state = match state
        .map(|s| crate::store::MessageState::parse(s).ok_or(s))
        .transpose()
    {
        Ok(s) => s,
        Err(bad) => {
            let all: Vec<&str> = crate::store::MessageState::ALL
                .iter()
                .map(|s| s.as_str())
                .collect();
            eprintln!(
                "duebell: --state `{bad}` is not a state; use one of {}",
                all.join(", ")
            );
            return ExitStatus::BadConfig;
        }
    };
    let store = match open_store(&config.store).await {
        Ok(s) => s,
        Err(status) => return status,
    };
    let query = crate::store::MessageQuery {
        state,
        borrower: borrower.map(str::to_owned),
        limit: Some(limit),
    };
    match store.messages(&query).await {
        Ok(list) => {
            out!(
                "{:<7} {:<10} {:<6} {:<9} {:<10} {:<21} {:<22} reason",
                "id",
                "borrower",
                "chan",
                "step",
                "state",
                "not_before",
                "loans"
            );
            for m in list {
                out!(
                    "{:<7} {:<10} {:<6} {:<9} {:<10} {:<21} {:<22} {}",
                    m.id,
                    m.borrower_id,
                    m.channel.as_str(),
                    m.step,
                    m.state.as_str(),
                    m.not_before.format("%Y-%m-%dT%H:%M:%SZ"),
                    m.loan_ids.join(","),
                    m.reason.unwrap_or_default()
                );
            }
            store.close().await;
            ExitStatus::Ok
        }
        Err(e) => {
            eprintln!("duebell: {e}");
            ExitStatus::Failed
        }
    }
}

/// The deployment's signer, or the exit status of a failure to read it.
async fn deployment_signer(
    store: &dyn crate::store::Store,
) -> Result<crate::signing::Signer, ExitStatus> {
    crate::app::deployment_signer(store, SystemClock.now())
        .await
        .map_err(|e| {
            eprintln!("duebell: cannot read the deployment key: {e:#}");
            ExitStatus::Failed
        })
}

/// `duebell bounces poll`: every bounce mailbox once.
pub(super) async fn bounces_poll(config: &crate::config::Config) -> ExitStatus {
    let boxes = crate::bounces::mailboxes(&config.providers);
    if boxes.is_empty() {
        eprintln!("duebell: no SMTP provider has a `bounce_mailbox` (README: Bounces)");
        return ExitStatus::Failed;
    }
    let store = match open_store(&config.store).await {
        Ok(s) => s,
        Err(status) => return status,
    };
    let signer = match deployment_signer(store.as_ref()).await {
        Ok(s) => s,
        Err(status) => {
            store.close().await;
            return status;
        }
    };
    let metrics = crate::metrics::Metrics::default();
    let results = crate::bounces::poll_all(
        &boxes,
        store.as_ref(),
        &signer,
        &metrics,
        &config.bounces,
        SystemClock.now(),
    )
    .await;
    store.close().await;
    let mut status = ExitStatus::Ok;
    for (provider, r) in results {
        match r {
            Ok(summary) => out!("{provider:<12} {summary}"),
            Err(e) => {
                eprintln!("duebell: {provider}: {e}");
                status = ExitStatus::Failed;
            }
        }
    }
    status
}

/// The URLs each provider should send its delivery reports to. Aliyun and
/// Tencent sign nothing, so theirs carry a token derived from this
/// deployment's key (kept in the store): a report without it is refused.
pub(super) async fn callbacks(config: &crate::config::Config) -> ExitStatus {
    use crate::providers::ProviderKind;
    let store = match open_store(&config.store).await {
        Ok(s) => s,
        Err(status) => return status,
    };
    let signer = deployment_signer(store.as_ref()).await;
    store.close().await;
    let signer = match signer {
        Ok(s) => s,
        Err(status) => return status,
    };
    let base = config.api.public_url.trim_end_matches('/');
    for p in &config.providers {
        let url = match p.kind {
            ProviderKind::Aliyun | ProviderKind::Tencent => {
                let kind = format!("{:?}", p.kind).to_lowercase();
                format!(
                    "{base}/webhooks/{kind}/{}/report/{}",
                    p.name,
                    signer.callback_token(&p.name)
                )
            }
            ProviderKind::Twilio => format!(
                "{base}/webhooks/twilio/{}/inbound (inbound SMS; status callbacks are set per message)",
                p.name
            ),
            _ => continue,
        };
        out!("{:<12} {url}", p.name);
    }
    ExitStatus::Ok
}
