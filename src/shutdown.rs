//! One shutdown path: the first SIGTERM/SIGINT starts an orderly drain; a second one
//! exits at once.

/// Resolves on the first SIGTERM or SIGINT, and arms an immediate exit on the second.
pub async fn signal() {
    wait_for_signal().await;
    tracing::info!("signal received: draining (send another to exit at once)");
    actix_rt::spawn(async {
        wait_for_signal().await;
        eprintln!("second signal: exiting now");
        std::process::exit(130);
    });
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the daemon");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
