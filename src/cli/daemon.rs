//! `import` and `run`: the commands that change the book or send, and the
//! signal handling around the daemon.

use super::*;

pub(super) async fn import(
    loaded: LoadedConfig,
    paths: &[PathBuf],
    no_progress: bool,
) -> ExitStatus {
    let store = match open_store(&loaded.config.store).await {
        Ok(s) => s,
        Err(status) => return status,
    };
    let progress = if no_progress {
        Progress::Off
    } else {
        Progress::Auto
    };
    let mut status = ExitStatus::Ok;
    for path in paths {
        match sources::import_file(store.as_ref(), path, SystemClock.now(), progress).await {
            Ok(report) => {
                for e in &report.errors {
                    eprintln!("{e}");
                }
                println!(
                    "{}: {} ({})",
                    report.path,
                    report.counts,
                    report.kind.as_str()
                );
                if report.counts.rejected > 0 {
                    status = ExitStatus::Failed;
                }
            }
            Err(e) => {
                eprintln!("{e}");
                println!("{}: not imported", path.display());
                status = ExitStatus::Failed;
            }
        }
    }
    store.close().await;
    status
}

pub(super) async fn run(loaded: LoadedConfig, once: bool) -> ExitStatus {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let path = loaded.path.clone();
    // The same checks as `duebell check`: a template or policy it refuses
    // never starts the daemon.
    if let Err(problems) = crate::engine::load_templates(&loaded.config) {
        for p in &problems {
            eprintln!("{p}");
        }
        eprintln!(
            "duebell: {} problem(s) in the templates; not starting",
            problems.len()
        );
        return ExitStatus::BadConfig;
    }
    let mut app = match App::build(loaded.config, clock).await {
        Ok(a) => a,
        Err(e) => {
            tracing::error!("{e:#}");
            return ExitStatus::Failed;
        }
    };
    if once {
        let report = app.run_once().await;
        app.release_roles().await;
        app.store().close().await;
        return match report {
            Ok(r) => {
                tracing::info!(
                    planned = r.planned,
                    sent = r.sent,
                    decided = r.decided,
                    failed = r.failed,
                    "cycle done"
                );
                if r.failures.is_empty() {
                    ExitStatus::Ok
                } else {
                    ExitStatus::Failed
                }
            }
            Err(e) => {
                tracing::error!("{e:#}");
                ExitStatus::Failed
            }
        };
    }
    let app = app.with_config_file(path);
    let shutdown = CancellationToken::new();
    let signals = match shutdown_on_signal(shutdown.clone(), app.reload_handle()) {
        Ok(h) => h,
        Err(e) => {
            tracing::error!("cannot install signal handlers: {e}");
            return ExitStatus::Failed;
        }
    };
    let result = app.run(shutdown).await;
    signals.abort();
    match result {
        Ok(()) => ExitStatus::Ok,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitStatus::Failed
        }
    }
}

/// Cancels `token` on SIGTERM or SIGINT; notifies `reload` on SIGHUP.
pub(super) fn shutdown_on_signal(
    token: CancellationToken,
    reload: Arc<tokio::sync::Notify>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
                _ = hup.recv() => {
                    reload.notify_one();
                    continue;
                }
            };
            tracing::info!(signal = name, "stop requested");
            token.cancel();
            return;
        }
    }))
}
