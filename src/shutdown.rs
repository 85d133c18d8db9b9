//! One shutdown path: the first SIGTERM/SIGINT starts an orderly drain; a second one
//! exits at once.

use std::future::Future;

use tokio::signal::unix::{signal as unix_signal, Signal, SignalKind};

/// Installs the SIGTERM and SIGINT handlers *now* (so a signal that arrives during
/// start-up is not the default "terminate") and returns a future that resolves on the
/// first one; it then arms an immediate exit on the second. Call inside a runtime.
pub fn signal() -> impl Future<Output = ()> {
    let term = unix_signal(SignalKind::terminate());
    let int = unix_signal(SignalKind::interrupt());
    async move {
        let (mut term, mut int) = match (term, int) {
            (Ok(t), Ok(i)) => (t, i),
            (t, i) => {
                tracing::warn!(
                    term = t.is_ok(),
                    int = i.is_ok(),
                    "cannot listen for signals; the daemon stops only when killed"
                );
                std::future::pending::<()>().await;
                return;
            }
        };
        next(&mut term, &mut int).await;
        tracing::info!("signal received: draining (send another to exit at once)");
        actix_rt::spawn(async move {
            next(&mut term, &mut int).await;
            eprintln!("second signal: exiting now");
            std::process::exit(130);
        });
    }
}

async fn next(term: &mut Signal, int: &mut Signal) {
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
