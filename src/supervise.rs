//! Background tasks that must not die quietly. A task started with [`spawn`] that panics is
//! logged (with the panic's message) and counted (`consul_dns_task_failures_total{task}`), and
//! its death is reported to the daemon ([`death`]), which stops and exits non-zero rather than
//! run on without it: a dead Consul watch, database listener, relay or TCP acceptor would
//! otherwise leave a daemon that answers, reports itself ready, and has stopped following its
//! source or serving a transport. Tasks that end normally (on cancel, when their channel
//! closes) are no concern of this module.

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll};

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::error;

use crate::telemetry;

/// A background task that ended while nothing asked it to.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("the {task} task {how}; the daemon stops rather than run without it")]
pub struct TaskDied {
    /// Which task (the `task` label of `consul_dns_task_failures_total`).
    pub task: &'static str,
    /// "panicked: <message>", "ended on its own", …
    pub how: String,
}

impl TaskDied {
    /// A task that panicked with `payload`.
    pub fn panicked(task: &'static str, payload: &(dyn Any + Send)) -> TaskDied {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_owned());
        TaskDied { task, how: format!("panicked: {message}") }
    }
}

/// Where deaths are reported: the first one is kept for [`Deaths::first`].
pub(crate) struct Deaths {
    first: Mutex<Option<TaskDied>>,
    notify: Notify,
}

impl Deaths {
    pub(crate) const fn new() -> Deaths {
        Deaths { first: Mutex::new(None), notify: Notify::const_new() }
    }

    /// Logs, counts and keeps `died` (the first one reported wins).
    fn report(&self, died: TaskDied) {
        telemetry::metrics().task_failed(died.task);
        error!(task = died.task, how = %died.how, "A background task died.");
        let mut first = self.first.lock().unwrap_or_else(PoisonError::into_inner);
        if first.is_none() {
            *first = Some(died);
        }
        drop(first);
        self.notify.notify_waiters();
    }

    /// Waits for the first death.
    pub(crate) async fn first(&self) -> TaskDied {
        loop {
            let notified = self.notify.notified();
            if let Some(died) = self.first.lock().unwrap_or_else(PoisonError::into_inner).clone() {
                return died;
            }
            notified.await;
        }
    }

    /// Spawns `task` on tokio; a panic in it is reported here.
    pub(crate) fn spawn(
        &'static self,
        name: &'static str,
        task: impl Future<Output = ()> + Send + 'static,
    ) -> JoinHandle<()> {
        let task = CatchUnwind(Box::pin(task));
        tokio::spawn(async move {
            if let Err(payload) = task.await {
                self.report(TaskDied::panicked(name, &*payload));
            }
        })
    }
}

static DEATHS: Deaths = Deaths::new();

/// Spawns a background task that must not die quietly (see the module documentation).
pub(crate) fn spawn(name: &'static str, task: impl Future<Output = ()> + Send + 'static) -> JoinHandle<()> {
    DEATHS.spawn(name, task)
}

/// The first background task of this process that died.
pub(crate) async fn death() -> TaskDied {
    DEATHS.first().await
}

/// Polls the inner future, turning a panic into `Err(payload)`.
struct CatchUnwind(Pin<Box<dyn Future<Output = ()> + Send>>);

impl Future for CatchUnwind {
    type Output = Result<(), Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(())) => Poll::Ready(Ok(())),
            Err(payload) => Poll::Ready(Err(payload)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_panic_is_reported_once_and_a_normal_end_not_at_all() {
        let deaths: &'static Deaths = Box::leak(Box::new(Deaths::new()));
        deaths.spawn("consul_watch", async {}).await.unwrap();
        let quiet = tokio::time::timeout(Duration::from_millis(50), deaths.first()).await;
        assert!(quiet.is_err(), "a task that ends normally is no death");
        let before = telemetry::metrics().render(Default::default(), std::time::SystemTime::now());
        let handle = deaths.spawn("consul_watch", async {
            tokio::task::yield_now().await;
            panic!("watch state broken");
        });
        handle.await.expect("the panic is caught inside the task");
        let died = tokio::time::timeout(Duration::from_secs(5), deaths.first()).await.unwrap();
        assert_eq!(died, TaskDied { task: "consul_watch", how: "panicked: watch state broken".into() });
        assert!(died.to_string().starts_with("the consul_watch task panicked: watch state broken;"), "{died}");
        let after = telemetry::metrics().render(Default::default(), std::time::SystemTime::now());
        let count = |text: &str| {
            let line = text.lines().find(|l| l.starts_with("consul_dns_task_failures_total{task=\"consul_watch\"}"));
            line.and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok()).unwrap()
        };
        assert_eq!(count(&after), count(&before) + 1);
        assert_eq!(deaths.first().await, died, "the first death stays");
    }
}
