//! Missions as MCP resources: `orchestrator://missions/{id}` and `orchestrator://missions/latest`
//! hold the compact status JSON of the server's repository's missions. A client may subscribe to
//! them; while this server runs, a watcher follows the subscribed missions and sends
//! `notifications/resources/updated` when one's phase, units, plan or outcome change.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rmcp::model::{Resource, ResourceTemplate, ResourceUpdatedNotificationParam};
use rmcp::{Peer, RoleServer};

use crate::error::ToolError;
use crate::follow::Follower;
use crate::report;

const SCHEME: &str = "orchestrator://missions/";
pub const LATEST_URI: &str = "orchestrator://missions/latest";
pub const TEMPLATE: &str = "orchestrator://missions/{mission}";
pub const MIME: &str = "application/json";
/// Missions listed by `resources/list`, newest first; older ones are read through the template.
const LISTED: usize = 50;
/// Subscriptions one connection may hold; each costs a probe of the store per tick.
pub const MAX_SUBSCRIPTIONS: usize = 64;
/// How often subscribed missions are probed.
const WATCH_TICK: Duration = Duration::from_secs(1);
/// Mission ids are short; anything longer is not one.
const MAX_ID: usize = 128;

/// What a resource URI names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Latest,
    Mission(String),
}

impl Target {
    pub fn parse(uri: &str) -> Result<Target, String> {
        let Some(rest) = uri.strip_prefix(SCHEME) else {
            return Err(format!(
                "unknown resource `{}`: this server has {LATEST_URI} and {TEMPLATE}",
                shown(uri)
            ));
        };
        if rest == "latest" {
            return Ok(Target::Latest);
        }
        let valid = !rest.is_empty()
            && rest.len() <= MAX_ID
            && rest
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !valid {
            return Err(format!("`{}` does not name a mission", shown(uri)));
        }
        Ok(Target::Mission(rest.to_string()))
    }

    fn mission(&self) -> Option<&str> {
        match self {
            Target::Latest => None,
            Target::Mission(id) => Some(id),
        }
    }
}

/// A URI as an error message may quote it: bounded, whatever the client sent.
fn shown(uri: &str) -> String {
    orchestrator_core::shorten(uri, 160)
}

pub fn uri_of(mission: &str) -> String {
    format!("{SCHEME}{mission}")
}

/// The resource's text: the mission's compact status as JSON, as `mission_status` returns it.
pub fn read(root: &Path, target: &Target) -> Result<String, ToolError> {
    let status = orchestrator_core::status_of(root, target.mission())?;
    serde_json::to_string(&report::compact(&status))
        .map_err(|e| ToolError::Other(format!("cannot write the status as JSON: {e}")))
}

/// The latest mission and the newest others; none when the folder has no missions (or no store).
pub fn list(root: &Path) -> Vec<Resource> {
    let Ok(missions) = orchestrator_core::missions(root) else {
        return Vec::new();
    };
    if missions.is_empty() {
        return Vec::new();
    }
    let latest = Resource::new(LATEST_URI, "latest mission")
        .with_description("The repository's latest mission: state, phase, units, outcome (JSON)")
        .with_mime_type(MIME);
    let each = missions.iter().take(LISTED).map(|m| {
        Resource::new(uri_of(&m.id), format!("mission {}", m.id))
            .with_description(orchestrator_core::shorten(&m.objective, 120))
            .with_mime_type(MIME)
    });
    std::iter::once(latest).chain(each).collect()
}

pub fn template() -> ResourceTemplate {
    ResourceTemplate::new(TEMPLATE, "mission")
        .with_description("A mission of the repository by id: state, phase, units, outcome (JSON)")
        .with_mime_type(MIME)
}

/// The subscriptions of one connection, and whether a watcher runs for them.
#[derive(Default)]
pub struct Subscriptions {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// By the URI the client subscribed to (notifications must carry that URI).
    followers: HashMap<String, Follower>,
    watching: bool,
}

impl Subscriptions {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding it leaves plain data, still consistent enough to go on with.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Subscribes to `uri` of the repository at `root`, starting from its state now so that only
    /// later changes are told; starts the watcher when none runs.
    pub fn subscribe(self: &Arc<Self>, root: &Path, uri: &str, peer: Peer<RoleServer>) -> Result<(), String> {
        let target = Target::parse(uri)?;
        let mut follower = match &target {
            Target::Latest => Follower::new(root, None),
            Target::Mission(id) => {
                let store = orchestrator_core::open_store_in(root).map_err(|e| e.to_string())?;
                let record = orchestrator_core::find_mission(&store, Some(id)).map_err(|e| e.to_string())?;
                Follower::new(root, Some(record.id))
            }
        };
        follower.poll().map_err(|e| e.to_string())?;
        let mut inner = self.lock();
        if !inner.followers.contains_key(uri) && inner.followers.len() >= MAX_SUBSCRIPTIONS {
            return Err(format!(
                "already {MAX_SUBSCRIPTIONS} subscriptions; unsubscribe from one first"
            ));
        }
        inner.followers.insert(uri.to_string(), follower);
        if !inner.watching {
            inner.watching = true;
            tokio::spawn(Arc::clone(self).watch(peer));
        }
        Ok(())
    }

    /// Whether `uri` was subscribed.
    pub fn unsubscribe(&self, uri: &str) -> bool {
        self.lock().followers.remove(uri).is_some()
    }

    /// Probes every subscribed mission once a tick and tells the client which changed; ends when
    /// no subscription is left or the client has gone.
    async fn watch(self: Arc<Self>, peer: Peer<RoleServer>) {
        loop {
            tokio::time::sleep(WATCH_TICK).await;
            let changed = {
                let mut inner = self.lock();
                if inner.followers.is_empty() || peer.is_transport_closed() {
                    inner.watching = false;
                    return;
                }
                changed_uris(&mut inner.followers)
            };
            for uri in changed {
                let param = ResourceUpdatedNotificationParam::new(uri);
                if peer.notify_resource_updated(param).await.is_err() {
                    self.lock().watching = false;
                    return;
                }
            }
        }
    }
}

fn changed_uris(followers: &mut HashMap<String, Follower>) -> Vec<String> {
    let mut changed = Vec::new();
    for (uri, follower) in followers.iter_mut() {
        match follower.poll() {
            Ok(Some(_)) => changed.push(uri.clone()),
            Ok(None) => {}
            // Read again next tick; a mission removed from the store stays quiet.
            Err(e) => tracing::debug!("watching {uri}: {e}"),
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_name_the_latest_or_one_mission() {
        assert_eq!(Target::parse(LATEST_URI), Ok(Target::Latest));
        assert_eq!(
            Target::parse("orchestrator://missions/m-20260101-ab12"),
            Ok(Target::Mission("m-20260101-ab12".into()))
        );
        assert_eq!(uri_of("m-1"), "orchestrator://missions/m-1");
        for bad in [
            "orchestrator://missions/",
            "orchestrator://missions/../../etc",
            "orchestrator://missions/a b",
            "file:///etc/passwd",
            "",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
        let long = format!("{SCHEME}{}", "a".repeat(10_000));
        let error = Target::parse(&long).expect_err("too long");
        assert!(error.len() < 400, "{error}");
    }
}
