//! A listener served on a thread of its own, on a current-thread runtime:
//! the agent (so no poll or HTTP render ever delays a check) and HTTP (so
//! no render, however heavy, ever delays a poll). Only the poller and the
//! signal handling stay on the main runtime.

use std::future::Future;
use std::io;

use log::{error, warn};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// How a served thread is scheduled against the poller's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// As the rest of remora.
    Normal,
    /// Below it (nice 10): best effort, for readers who can wait.
    Background,
}

/// Runs `serve(listener)` on a new thread named `name` until it returns.
/// Returns a task on the caller's runtime that ends when the thread does.
pub fn serve_on_own_thread<S, F>(
    name: &'static str,
    priority: Priority,
    listener: TcpListener,
    serve: S,
) -> io::Result<JoinHandle<()>>
where
    S: FnOnce(TcpListener) -> F + Send + 'static,
    F: Future<Output = ()>,
{
    // A listener belongs to the runtime that registered it: hand it over
    // as a plain socket and register it again on the thread's own runtime.
    let listener = listener.into_std()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (done, finished) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name(format!("remora-{name}"))
        .spawn(move || {
            if priority == Priority::Background {
                lower_priority(name);
            }
            runtime.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(listener) => serve(listener).await,
                    Err(err) => error!("{name}: cannot serve its listener: {err}"),
                }
            });
            let _ = done.send(());
        })?;
    Ok(tokio::spawn(async move {
        let _ = finished.await;
    }))
}

/// Nice 10 for this thread: it yields to the poller's.
fn lower_priority(name: &str) {
    if let Err(err) = crate::os::lower_this_threads_priority() {
        warn!("{name}: cannot lower the thread's priority: {err}");
    }
}
