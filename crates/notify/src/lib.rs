//! Telling people that a mission needs them or has ended, wherever they are: a desktop notice
//! (`notify-send`) and a webhook (a JSON POST to a URL the user configured, e.g. a chat channel).
//!
//! A [`Notifier`] reads the mission's event stream, picks the few events a person should hear of
//! ([`notice_for`]), and delivers each on its own task: a slow or dead webhook never holds the
//! mission up, and every delivery has a bounded number of attempts and a timeout. When the mission
//! ends, [`Notifier::finish`] gives the last notices a bounded time to go out before the process
//! exits.

mod desktop;
mod notice;
mod webhook;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use orchestrator_protocol::EventEnvelope;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub use desktop::DesktopMode;
pub use notice::{notice_for, Notice, NoticeKind};
pub use webhook::{check as check_webhook, Webhook, WebhookError};

/// What the user configured (`[notify]` in the config files).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NotifySettings {
    pub desktop: DesktopMode,
    /// The program that shows a desktop notice, given `notify-send`'s arguments; `None`:
    /// `notify-send` from PATH.
    pub desktop_command: Option<PathBuf>,
    /// Where to POST each notice as JSON; `None`: no webhook.
    pub webhook: Option<String>,
}

/// What every notice of one mission says besides the event: which mission, where, what for.
#[derive(Debug, Clone, Default)]
pub struct MissionContext {
    pub repo: PathBuf,
    pub objective: String,
}

/// Delivers a mission's notices until the mission ends.
pub struct Notifier {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Notifier {
    /// Starts reading `events`. With nothing configured (no desktop notices possible, no webhook),
    /// the task only drains the stream.
    pub fn start(
        settings: &NotifySettings,
        context: MissionContext,
        events: mpsc::UnboundedReceiver<Arc<EventEnvelope>>,
    ) -> Notifier {
        let sinks = Sinks {
            desktop: desktop::Desktop::new(settings.desktop, settings.desktop_command.as_deref()),
            webhook: settings
                .webhook
                .as_deref()
                .and_then(|url| match Webhook::new(url) {
                    Ok(hook) => Some(hook),
                    Err(e) => {
                        // The config check refuses a bad URL before a mission starts; this is a backstop.
                        tracing::warn!("notify: the webhook is off: {e}");
                        None
                    }
                }),
        };
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(run(sinks, context, events, stopped));
        Notifier {
            stop: Some(stop),
            task,
        }
    }

    /// Delivers what the stream already holds (the mission's last events), waiting at most `limit`;
    /// what is still undelivered then is given up, with a warning in the log.
    pub async fn finish(mut self, limit: Duration) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if tokio::time::timeout(limit, &mut self.task).await.is_err() {
            tracing::warn!(
                "notify: notices still undelivered after {} s were given up",
                limit.as_secs()
            );
            self.task.abort();
        }
    }
}

struct Sinks {
    desktop: desktop::Desktop,
    webhook: Option<Webhook>,
}

impl Sinks {
    async fn deliver(&self, notice: &Notice) {
        // Both at once: a webhook's retries must not delay the desktop notice.
        let desktop = self.desktop.show(notice);
        let webhook = async {
            if let Some(hook) = &self.webhook {
                if let Err(e) = hook.post(notice).await {
                    tracing::warn!("notify: {e}");
                }
            }
        };
        tokio::join!(desktop, webhook);
    }
}

async fn run(
    sinks: Sinks,
    context: MissionContext,
    mut events: mpsc::UnboundedReceiver<Arc<EventEnvelope>>,
    mut stopped: oneshot::Receiver<()>,
) {
    loop {
        tokio::select! {
            // Events first: when the stop comes, what was emitted before it still goes out.
            biased;
            event = events.recv() => match event {
                Some(event) => deliver(&sinks, &context, &event).await,
                None => return,
            },
            _ = &mut stopped => break,
        }
    }
    while let Ok(event) = events.try_recv() {
        deliver(&sinks, &context, &event).await;
    }
}

async fn deliver(sinks: &Sinks, context: &MissionContext, event: &EventEnvelope) {
    if let Some(notice) = notice_for(event, context) {
        sinks.deliver(&notice).await;
    }
}
