//! One traffic governor per endpoint and model, shared by every session that calls it.
//!
//! With many sessions in flight the endpoint is the bottleneck, and a client that retries on its own
//! turns one 429 into a storm. The [`Governor`] owns all waiting and retrying instead:
//!
//! - **Concurrency** is capped by an adaptive limit (AIMD): halved on a 429 (or Anthropic's 529
//!   "overloaded"), grown back by one after a run of successes as long as the limit, up to the
//!   configured maximum. A request is only admitted while fewer than the current limit are in
//!   flight; requests already in flight when the limit drops finish normally.
//! - **Rates**: optional request and token budgets per minute, as token buckets. Token usage is only
//!   known after a call, so the token bucket is debited afterwards and may go into debt; new calls
//!   wait until it is positive again.
//! - **Retries**: 429, 5xx, timeouts and connection failures are waited out and retried, with
//!   exponential backoff and jitter. A server-requested wait (`Retry-After`, rate-limit reset headers)
//!   pauses the *whole* governor: no request is admitted before it has elapsed, whoever asked.
//!   Unreadable replies (which is how a stream that ended early looks) are retried a few times;
//!   auth and bad-request errors are returned at once.
//! - **Bounded**: once a call has been failing for [`GovernorConfig::max_total_wait`], it stops with
//!   [`ModelError::GaveUp`], naming what went wrong and for how long, so the unit fails with a clear
//!   reason and the mission can be resumed later. Calls that have not failed wait for capacity as
//!   long as it takes: a slow but healthy endpoint is not an error.
//! - **Cancellation** interrupts every wait at once.
//!
//! The wrapped client must not retry on its own: build it with [`ClientConfig::without_retries`]
//! (`max_retries = 0`), or every governor retry multiplies into several requests and the client's
//! own waits ignore the shared pause.
//!
//! [`ClientConfig::without_retries`]: crate::ClientConfig::without_retries

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::backoff::backoff_from;
use crate::{human_duration, ChatRequest, ChatResponse, ModelClient, ModelError, TokenUsage};

/// How a governor behaves. [`GovernorConfig::default`] suits a hosted API.
#[derive(Debug, Clone)]
pub struct GovernorConfig {
    /// Most requests in flight at once; the adaptive limit starts here and never exceeds it.
    pub max_concurrency: usize,
    /// Request budget per minute, if the endpoint has one worth respecting up front.
    pub requests_per_minute: Option<u32>,
    /// Token budget (input + output) per minute.
    pub tokens_per_minute: Option<u64>,
    /// How long one call may go on failing (waits and attempts) before it gives up.
    pub max_total_wait: Duration,
    /// The first backoff; each further failure of the same call doubles it, with jitter.
    pub base_backoff: Duration,
    /// The longest single backoff.
    pub max_backoff: Duration,
    /// Retries for unreadable replies, which are sometimes a stream cut short and sometimes a server
    /// that always answers junk: a few retries cover the first without looping on the second.
    pub max_protocol_retries: u32,
}

impl Default for GovernorConfig {
    fn default() -> Self {
        GovernorConfig {
            max_concurrency: 8,
            requests_per_minute: None,
            tokens_per_minute: None,
            max_total_wait: Duration::from_secs(15 * 60),
            base_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
            max_protocol_retries: 2,
        }
    }
}

/// A snapshot of a governor, for status lines and events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GovernorStats {
    /// The current adaptive concurrency limit.
    pub limit: usize,
    /// The configured maximum the limit grows back to.
    pub max_limit: usize,
    pub in_flight: usize,
    /// The most requests ever in flight at once (never above `max_limit`).
    pub peak_in_flight: usize,
    /// Calls waiting right now (for a slot, a pause, a rate budget or a backoff).
    pub waiting: usize,
    /// How many times a call had to wait, in total.
    pub waits: u64,
    /// 429 answers seen.
    pub rate_limited: u64,
    /// Failed attempts that were retried.
    pub retries: u64,
    /// Calls that gave up after the bounded wait.
    pub gave_up: u64,
    /// What is left of a server-requested pause, if one is running.
    pub paused_for: Option<Duration>,
}

/// The throttles of governors on other hosts, and the way to tell them of this one's: a store the
/// hosts share (issue #20). A 429 seen on one host then slows every host calling the same endpoint.
/// Both calls return at once (they sit on an admission path under no lock of the store's): `publish`
/// hands the write off, `latest` reads what was last fetched.
pub trait SharedThrottle: Send + Sync {
    /// This host cut its concurrency (`cut`), or the endpoint asked for a pause, or both.
    fn publish(&self, key: &str, cut: bool, pause: Option<Duration>);
    /// What every host has published for `key`, as last fetched.
    fn latest(&self, key: &str) -> Option<SharedView>;
}

/// An endpoint's throttle across hosts, as fetched at `read_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedView {
    /// Cuts published by every host (this one's included), ever.
    pub cuts: u64,
    /// What was left of a pause when read.
    pub paused_for: Option<Duration>,
    pub read_at: Instant,
}

/// A governor's link to the other hosts: the shared throttle and its key (endpoint and model).
struct Shared {
    throttle: Arc<dyn SharedThrottle>,
    key: String,
}

/// Shares traffic to one endpoint and model between every session. See the module docs.
pub struct Governor {
    config: GovernorConfig,
    state: Mutex<State>,
    /// Other hosts calling the same endpoint, when the mission spans several.
    shared: Option<Shared>,
    /// Woken whenever a slot frees up or the limit grows.
    changed: Notify,
}

impl Governor {
    pub fn new(config: GovernorConfig) -> Self {
        let now = Instant::now();
        let max = config.max_concurrency.max(1);
        let state = State {
            limit: max,
            max_limit: max,
            in_flight: 0,
            successes: 0,
            epoch: 0,
            paused_until: None,
            requests: config
                .requests_per_minute
                .map(|rpm| Bucket::new(f64::from(rpm), (f64::from(rpm) / 6.0).max(1.0), now)),
            tokens: config
                .tokens_per_minute
                .map(|tpm| Bucket::new(tpm as f64, tpm as f64, now)),
            stats: GovernorStats::default(),
            shared_cuts: None,
            published_cuts: 0,
        };
        Governor {
            config,
            state: Mutex::new(state),
            shared: None,
            changed: Notify::new(),
        }
    }

    /// The same governor, telling other hosts of its throttles under `key` and following theirs.
    pub fn shared(mut self, throttle: Arc<dyn SharedThrottle>, key: impl Into<String>) -> Self {
        self.shared = Some(Shared {
            throttle,
            key: key.into(),
        });
        self
    }

    /// Takes in what other hosts published since the last look: a cut of theirs halves this
    /// governor's limit too (once per look, however many hosts cut), and their pause is honoured.
    fn follow_shared(&self) {
        let Some(shared) = &self.shared else { return };
        let Some(view) = shared.throttle.latest(&shared.key) else {
            return;
        };
        let mut state = self.state();
        // The first look only sets where counting starts: cuts from before this governor existed
        // are history, not a present overload.
        let seen = *state.shared_cuts.get_or_insert(view.cuts);
        let foreign = view
            .cuts
            .saturating_sub(seen)
            .saturating_sub(state.published_cuts);
        if foreign > 0 {
            state.cut();
        }
        if view.cuts > seen {
            state.shared_cuts = Some(view.cuts);
            state.published_cuts = state.published_cuts.saturating_sub(view.cuts - seen);
        }
        if let Some(left) = view.paused_for.filter(|p| !p.is_zero()) {
            let until = view.read_at + left;
            state.paused_until = Some(state.paused_until.map_or(until, |current| current.max(until)));
        }
    }

    /// Tells the other hosts what this governor just did (see [`State::failed`]).
    fn publish(&self, told: Told) {
        let (Some(shared), true) = (&self.shared, told.cut || told.pause.is_some()) else {
            return;
        };
        if told.cut {
            self.state().published_cuts += 1;
        }
        shared.throttle.publish(&shared.key, told.cut, told.pause);
    }

    pub fn config(&self) -> &GovernorConfig {
        &self.config
    }

    pub fn stats(&self) -> GovernorStats {
        let state = self.state();
        GovernorStats {
            limit: state.limit,
            max_limit: state.max_limit,
            in_flight: state.in_flight,
            paused_for: state
                .paused_until
                .map(|until| until.saturating_duration_since(Instant::now()))
                .filter(|left| !left.is_zero()),
            ..state.stats.clone()
        }
    }

    /// One model turn through the governor: waits for capacity, calls `inner` and retries transient
    /// failures until it succeeds, fails for good, gives up after the bounded wait or is cancelled.
    pub async fn chat(
        &self,
        inner: &dyn ModelClient,
        request: &ChatRequest,
        cancel: &CancellationToken,
    ) -> Result<ChatResponse, ModelError> {
        let mut call = CallState::default();
        loop {
            let permit = self.admit(&mut call, cancel).await?;
            call.attempts += 1;
            let error = match inner.chat(request, cancel).await {
                Ok(reply) => {
                    permit.succeeded(reply.usage);
                    return Ok(reply);
                }
                Err(error) => error,
            };
            permit.failed(&error);
            let retry = self.may_retry(&error, &mut call);
            if retry {
                tracing::warn!(model = %request.model, attempt = call.attempts, %error, "model call failed; retrying");
            }
            call.fail(error);
            if !retry {
                return Err(call.into_last_error());
            }
            self.back_off(&mut call, cancel).await?;
            self.state().stats.retries += 1;
        }
    }

    /// Whether a failed attempt is worth another, given what this call has been through.
    fn may_retry(&self, error: &ModelError, call: &mut CallState) -> bool {
        match error {
            ModelError::Protocol(_) => {
                call.protocol_failures += 1;
                call.protocol_failures <= self.config.max_protocol_retries
            }
            error => error.is_transient(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state stays consistent between statements, so a panic elsewhere cannot corrupt it.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits until a request may be sent: no pause running, a slot under the limit, rate budget left.
    async fn admit(
        &self,
        call: &mut CallState,
        cancel: &CancellationToken,
    ) -> Result<Permit<'_>, ModelError> {
        let mut waiting: Option<WaitingGuard<'_>> = None;
        loop {
            // Created before looking at the state, so a release between the look and the wait still
            // wakes this call.
            let notified = self.changed.notified();
            self.follow_shared();
            let blocked = match self.state().try_admit(Instant::now()) {
                Ok(epoch) => return Ok(Permit::new(self, epoch)),
                Err(blocked) => blocked,
            };
            let deadline = call.deadline(self.config.max_total_wait);
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(self.give_up(call, None));
            }
            if waiting.is_none() {
                waiting = Some(WaitingGuard::enter(self));
            }
            if let (Blocked::Until(until), Some(deadline)) = (blocked, deadline) {
                if until > deadline {
                    return Err(self.give_up(call, Some(until)));
                }
            }
            let woke_by = match blocked {
                Blocked::Until(until) => Some(until),
                Blocked::Slot => None,
            };
            let end = earliest(woke_by, deadline);
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(ModelError::Cancelled),
                _ = notified => {}
                _ = sleep_until(end) => {}
            }
        }
    }

    /// The wait before a retry: jittered exponential backoff, unless the server named a wait, which
    /// [`Permit::failed`] has already turned into a pause that [`Governor::admit`] honours.
    async fn back_off(&self, call: &mut CallState, cancel: &CancellationToken) -> Result<(), ModelError> {
        let asked = call.last.as_ref().and_then(ModelError::retry_after);
        if asked.is_some_and(|wait| !wait.is_zero()) {
            return Ok(());
        }
        let wait = backoff_from(
            self.config.base_backoff,
            call.failures.saturating_sub(1),
            self.config.max_backoff,
        );
        let until = Instant::now() + wait;
        if call
            .deadline(self.config.max_total_wait)
            .is_some_and(|d| until > d)
        {
            return Err(self.give_up(call, None));
        }
        let _waiting = WaitingGuard::enter(self);
        tokio::select! {
            biased;
            _ = cancel.cancelled() => Err(ModelError::Cancelled),
            _ = tokio::time::sleep_until(until.into()) => Ok(()),
        }
    }

    /// The error for a call that has failed for too long. `asked_until` is a pause that would have
    /// outlasted the call's allowance.
    fn give_up(&self, call: &mut CallState, asked_until: Option<Instant>) -> ModelError {
        self.state().stats.gave_up += 1;
        let waited = call.failing_since.map(|t| t.elapsed()).unwrap_or_default();
        let last = call.last.take().unwrap_or_else(|| {
            ModelError::Timeout("no capacity became free in the rate governor".to_string())
        });
        let trouble = trouble(&last);
        let reason = match asked_until {
            Some(until) => format!(
                "{trouble} for {}, and the endpoint asks to wait another {}, past the {} one call may wait",
                human_duration(waited),
                human_duration(until.saturating_duration_since(Instant::now())),
                human_duration(self.config.max_total_wait)
            ),
            None => format!("{trouble} for {}", human_duration(waited)),
        };
        tracing::warn!(attempts = call.attempts, %reason, "model call gave up");
        ModelError::GaveUp {
            reason,
            waited,
            attempts: call.attempts,
            last: Box::new(last),
        }
    }
}

/// What keeps going wrong, in the words of a give-up message.
fn trouble(error: &ModelError) -> &'static str {
    match error {
        ModelError::RateLimited { .. } => "rate limited",
        ModelError::Server { .. } => "the endpoint kept failing",
        ModelError::Timeout(_) => "the endpoint kept timing out",
        ModelError::Unreachable { .. } => "the endpoint was unreachable",
        ModelError::Protocol(_) => "the endpoint kept sending unreadable replies",
        _ => "the call kept failing",
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

async fn sleep_until(until: Option<Instant>) {
    match until {
        Some(until) => tokio::time::sleep_until(until.into()).await,
        None => std::future::pending().await,
    }
}

/// One call's history across its attempts.
#[derive(Default)]
struct CallState {
    attempts: u32,
    failures: u32,
    protocol_failures: u32,
    /// When the first attempt failed: the bounded wait runs from here.
    failing_since: Option<Instant>,
    last: Option<ModelError>,
}

impl CallState {
    fn fail(&mut self, error: ModelError) {
        self.failures += 1;
        self.failing_since.get_or_insert_with(Instant::now);
        self.last = Some(error);
    }

    /// When this call must give up; none until it has failed once.
    fn deadline(&self, allowance: Duration) -> Option<Instant> {
        self.failing_since.map(|since| since + allowance)
    }

    fn into_last_error(self) -> ModelError {
        self.last
            .unwrap_or_else(|| ModelError::Protocol("the call failed without an error".into()))
    }
}

/// Why a request cannot be sent yet.
#[derive(Debug, Clone, Copy)]
enum Blocked {
    /// Nothing can go before this moment (a pause, or a rate budget refilling).
    Until(Instant),
    /// Every slot under the limit is taken: wait for a release.
    Slot,
}

struct State {
    limit: usize,
    max_limit: usize,
    in_flight: usize,
    /// Successes since the limit last changed.
    successes: usize,
    /// Bumped whenever the limit is cut: a 429 for a request admitted before the cut is part of the
    /// same overload and does not cut again.
    epoch: u64,
    paused_until: Option<Instant>,
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
    stats: GovernorStats,
    /// The shared cuts counted so far (`None` before the first look at the other hosts).
    shared_cuts: Option<u64>,
    /// This governor's own cuts published and not yet seen back in the shared count.
    published_cuts: u64,
}

impl State {
    /// Takes a slot (and a request from the rate budget) if every check passes; the admitted
    /// request's epoch on success.
    fn try_admit(&mut self, now: Instant) -> Result<u64, Blocked> {
        if let Some(until) = self.paused_until.filter(|until| *until > now) {
            return Err(Blocked::Until(until));
        }
        if self.in_flight >= self.limit {
            return Err(Blocked::Slot);
        }
        if let Some(bucket) = &mut self.requests {
            bucket.refill(now);
            if bucket.level < 1.0 {
                return Err(Blocked::Until(now + bucket.time_to(1.0)));
            }
        }
        if let Some(bucket) = &mut self.tokens {
            bucket.refill(now);
            if bucket.level <= 0.0 {
                // The smallest positive amount: any refill at all lets a call through.
                return Err(Blocked::Until(now + bucket.time_to(1.0)));
            }
        }
        if let Some(bucket) = &mut self.requests {
            bucket.level -= 1.0;
        }
        self.in_flight += 1;
        self.stats.peak_in_flight = self.stats.peak_in_flight.max(self.in_flight);
        Ok(self.epoch)
    }

    fn succeeded(&mut self, usage: TokenUsage) {
        if let Some(bucket) = &mut self.tokens {
            bucket.refill(Instant::now());
            bucket.level -= usage.total() as f64;
        }
        self.successes += 1;
        if self.successes >= self.limit && self.limit < self.max_limit {
            self.limit += 1;
            self.successes = 0;
        }
    }

    /// Records a failed attempt: an overload cuts the limit (once per epoch), a server-named wait
    /// pauses everything. Returns what other hosts should hear of it.
    fn failed(&mut self, error: &ModelError, epoch: u64) -> Told {
        let overloaded = matches!(error, ModelError::RateLimited { .. })
            || matches!(error, ModelError::Server { status: 529, .. });
        if matches!(error, ModelError::RateLimited { .. }) {
            self.stats.rate_limited += 1;
        }
        let cut = overloaded && epoch == self.epoch;
        if cut {
            self.cut();
        }
        let pause = error.retry_after().filter(|w| !w.is_zero());
        if let Some(wait) = pause {
            let until = Instant::now() + wait;
            self.paused_until = Some(self.paused_until.map_or(until, |current| current.max(until)));
        }
        Told { cut, pause }
    }

    /// Halves the limit; requests admitted before this cut are of the same overload (see `epoch`).
    fn cut(&mut self) {
        self.limit = (self.limit / 2).max(1);
        self.successes = 0;
        self.epoch += 1;
    }
}

/// What a failed attempt changed that other hosts should hear.
#[derive(Debug, Clone, Copy, Default)]
struct Told {
    cut: bool,
    pause: Option<Duration>,
}

/// A refilling budget: `level` units, refilled at `per_second` up to `capacity`.
struct Bucket {
    capacity: f64,
    level: f64,
    per_second: f64,
    updated: Instant,
}

impl Bucket {
    /// A budget of `per_minute`, starting full at `capacity` (the burst allowed at once).
    fn new(per_minute: f64, capacity: f64, now: Instant) -> Self {
        Bucket {
            capacity,
            level: capacity,
            per_second: per_minute / 60.0,
            updated: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.level = (self.level + elapsed * self.per_second).min(self.capacity);
        self.updated = now;
    }

    /// How long until the level reaches `level`.
    fn time_to(&self, level: f64) -> Duration {
        if self.per_second <= 0.0 {
            return Duration::from_secs(60);
        }
        let missing = (level - self.level).max(0.0);
        Duration::try_from_secs_f64(missing / self.per_second).unwrap_or(Duration::from_secs(60))
    }
}

/// A request's slot. Released on drop, so a call abandoned mid-attempt (its future dropped) cannot
/// leak it.
struct Permit<'a> {
    governor: &'a Governor,
    epoch: u64,
    released: bool,
}

impl<'a> Permit<'a> {
    fn new(governor: &'a Governor, epoch: u64) -> Self {
        Permit {
            governor,
            epoch,
            released: false,
        }
    }

    fn succeeded(mut self, usage: TokenUsage) {
        let mut state = self.governor.state();
        state.succeeded(usage);
        self.release(state);
    }

    /// Records the failure (pause, limit cut) before the slot is freed, so no request can slip in
    /// between the slot opening and the pause starting.
    fn failed(mut self, error: &ModelError) {
        let mut state = self.governor.state();
        let told = state.failed(error, self.epoch);
        self.release(state);
        self.governor.publish(told);
    }

    fn release(&mut self, mut state: MutexGuard<'_, State>) {
        if !self.released {
            state.in_flight = state.in_flight.saturating_sub(1);
            self.released = true;
        }
        drop(state);
        self.governor.changed.notify_waiters();
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.released {
            let state = self.governor.state();
            self.release(state);
        }
    }
}

/// Counts a call as waiting while it lives.
struct WaitingGuard<'a>(&'a Governor);

impl<'a> WaitingGuard<'a> {
    fn enter(governor: &'a Governor) -> Self {
        let mut state = governor.state();
        state.stats.waiting += 1;
        state.stats.waits += 1;
        WaitingGuard(governor)
    }
}

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        let mut state = self.0.state();
        state.stats.waiting = state.stats.waiting.saturating_sub(1);
    }
}

/// A [`ModelClient`] whose calls go through one [`Governor`] per model, created on first use, so
/// every session sharing this client shares its governors.
pub struct GovernedClient {
    inner: Arc<dyn ModelClient>,
    defaults: GovernorConfig,
    per_model: BTreeMap<String, GovernorConfig>,
    governors: Mutex<BTreeMap<String, Arc<Governor>>>,
    /// The endpoint's name among hosts (see [`GovernedClient::endpoint`]).
    endpoint: String,
    /// Other hosts' throttles (see [`GovernedClient::share_throttle`]).
    shared: std::sync::OnceLock<Arc<dyn SharedThrottle>>,
}

impl GovernedClient {
    /// `inner` must be built without retries ([`crate::ClientConfig::without_retries`]): the
    /// governors do all retrying. `defaults` configures the governor of every model.
    pub fn new(inner: Arc<dyn ModelClient>, defaults: GovernorConfig) -> Self {
        GovernedClient {
            inner,
            defaults,
            per_model: BTreeMap::new(),
            governors: Mutex::new(BTreeMap::new()),
            endpoint: String::new(),
            shared: std::sync::OnceLock::new(),
        }
    }

    /// The endpoint's name as hosts share it (its address without secrets: hosts must agree on it).
    pub fn endpoint(mut self, name: impl Into<String>) -> Self {
        self.endpoint = name.into();
        self
    }

    /// From now on, every governor this client creates shares its throttles with other hosts'
    /// through `throttle`, keyed by the endpoint's name and the model. Call it before the first
    /// call: a governor already created stays on its own. False if one was shared already.
    pub fn share_throttle(&self, throttle: Arc<dyn SharedThrottle>) -> bool {
        self.shared.set(throttle).is_ok()
    }

    /// Another configuration for one model's governor (e.g. a cheaper model with higher limits).
    /// Takes effect for a model whose governor does not exist yet.
    pub fn with_model_config(mut self, model: impl Into<String>, config: GovernorConfig) -> Self {
        self.per_model.insert(model.into(), config);
        self
    }

    /// The governor of `model`, created if needed.
    pub fn governor(&self, model: &str) -> Arc<Governor> {
        let mut governors = self
            .governors
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        governors
            .entry(model.to_string())
            .or_insert_with(|| {
                let config = self.per_model.get(model).unwrap_or(&self.defaults).clone();
                let governor = Governor::new(config);
                Arc::new(match self.shared.get() {
                    Some(throttle) => governor.shared(throttle.clone(), format!("{} {model}", self.endpoint)),
                    None => governor,
                })
            })
            .clone()
    }

    /// Every governor's stats, by model.
    pub fn stats(&self) -> Vec<(String, GovernorStats)> {
        let governors = self
            .governors
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        governors
            .iter()
            .map(|(model, governor)| (model.clone(), governor.stats()))
            .collect()
    }
}

#[async_trait]
impl ModelClient for GovernedClient {
    fn provider(&self) -> &'static str {
        self.inner.provider()
    }

    async fn chat(
        &self,
        request: &ChatRequest,
        cancel: &CancellationToken,
    ) -> Result<ChatResponse, ModelError> {
        let governor = self.governor(&request.model);
        governor.chat(self.inner.as_ref(), request, cancel).await
    }

    /// Not governed: the preflight is one cheap request made before anything else runs.
    async fn preflight(&self, model: &str) -> Result<(), ModelError> {
        self.inner.preflight(model).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate_limited(retry_after: Option<Duration>) -> ModelError {
        ModelError::RateLimited {
            body: "slow down".into(),
            retry_after,
        }
    }

    fn state(max: usize) -> State {
        Governor::new(GovernorConfig {
            max_concurrency: max,
            ..GovernorConfig::default()
        })
        .state
        .into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    #[test]
    fn limit_halves_once_per_overload_and_grows_back() {
        let mut state = state(8);
        let epochs: Vec<u64> = (0..4)
            .map(|_| state.try_admit(Instant::now()).unwrap_or(99))
            .collect();
        // Four requests of the same window all get 429: one cut, not four.
        for epoch in epochs {
            state.failed(&rate_limited(None), epoch);
            state.in_flight -= 1;
        }
        assert_eq!(state.limit, 4);
        let epoch = state.epoch;
        state.failed(&rate_limited(None), epoch);
        assert_eq!(state.limit, 2, "a 429 after the cut cuts again");
        for _ in 0..2 {
            state.succeeded(TokenUsage::default());
        }
        assert_eq!(state.limit, 3, "a run of `limit` successes adds one");
        for _ in 0..100 {
            state.succeeded(TokenUsage::default());
        }
        assert_eq!(state.limit, 8, "never past the maximum");
        for _ in 0..10 {
            let epoch = state.epoch;
            state.failed(&rate_limited(None), epoch);
        }
        assert_eq!(state.limit, 1, "never below one");
    }

    #[test]
    fn admission_respects_limit_and_pause() {
        let mut state = state(2);
        let now = Instant::now();
        assert!(state.try_admit(now).is_ok());
        assert!(state.try_admit(now).is_ok());
        assert!(matches!(state.try_admit(now), Err(Blocked::Slot)));
        state.in_flight = 0;
        state.failed(&rate_limited(Some(Duration::from_secs(5))), 0);
        match state.try_admit(Instant::now()) {
            Err(Blocked::Until(until)) => assert!(until >= now + Duration::from_secs(5)),
            other => panic!("expected a pause, got {other:?}"),
        }
        // A shorter pause asked later does not shorten the running one.
        state.failed(&rate_limited(Some(Duration::from_secs(1))), 0);
        assert!(state
            .paused_until
            .is_some_and(|u| u >= now + Duration::from_secs(5)));
        assert!(state.try_admit(now + Duration::from_secs(6)).is_ok());
    }

    #[test]
    fn request_budget_refills_over_time() {
        let now = Instant::now();
        let mut state = state(100);
        state.requests = Some(Bucket::new(60.0, 2.0, now));
        assert!(state.try_admit(now).is_ok());
        assert!(state.try_admit(now).is_ok());
        match state.try_admit(now) {
            Err(Blocked::Until(until)) => assert!(until > now),
            other => panic!("expected to wait for the budget, got {other:?}"),
        }
        assert!(state.try_admit(now + Duration::from_millis(1100)).is_ok());
    }

    #[test]
    fn token_budget_goes_into_debt_and_blocks_until_repaid() {
        let now = Instant::now();
        let mut state = state(100);
        state.tokens = Some(Bucket::new(600.0, 600.0, now));
        assert!(state.try_admit(now).is_ok());
        state.succeeded(TokenUsage {
            input_tokens: 700,
            output_tokens: 100,
            ..Default::default()
        });
        let later = Instant::now();
        match state.try_admit(later) {
            // 200 tokens of debt at 10 tokens a second: about 20 s.
            Err(Blocked::Until(until)) => assert!(until >= later + Duration::from_secs(19)),
            other => panic!("expected to wait for the budget, got {other:?}"),
        }
    }

    #[test]
    fn give_up_messages_name_the_trouble() {
        let governor = Governor::new(GovernorConfig::default());
        let mut call = CallState {
            attempts: 3,
            ..CallState::default()
        };
        call.fail(rate_limited(None));
        let error = governor.give_up(&mut call, None);
        let text = error.to_string();
        assert!(text.starts_with("rate limited for "), "{text}");
        assert!(
            text.contains("giving up on this call after 3 attempt(s)"),
            "{text}"
        );
        assert_eq!(governor.stats().gave_up, 1);
    }

    /// The store hosts share, in memory: what `publish` writes is what `latest` reads next.
    #[derive(Default)]
    struct Board(Mutex<BTreeMap<String, (u64, Option<Instant>)>>);

    impl SharedThrottle for Board {
        fn publish(&self, key: &str, cut: bool, pause: Option<Duration>) {
            let mut board = self.0.lock().unwrap();
            let entry = board.entry(key.to_string()).or_default();
            entry.0 += u64::from(cut);
            if let Some(pause) = pause {
                let until = Instant::now() + pause;
                entry.1 = Some(entry.1.map_or(until, |u| u.max(until)));
            }
        }
        fn latest(&self, key: &str) -> Option<SharedView> {
            let now = Instant::now();
            self.0.lock().unwrap().get(key).map(|(cuts, until)| SharedView {
                cuts: *cuts,
                paused_for: until.map(|u| u.saturating_duration_since(now)),
                read_at: now,
            })
        }
    }

    fn host(board: &Arc<Board>, max: usize) -> Governor {
        Governor::new(GovernorConfig {
            max_concurrency: max,
            ..GovernorConfig::default()
        })
        .shared(board.clone(), "http://e/v1 m")
    }

    /// What a failed attempt does to a governor: as `Permit::failed`, without a call.
    fn fail(governor: &Governor, error: &ModelError) {
        let epoch = governor.state().epoch;
        let told = governor.state().failed(error, epoch);
        governor.publish(told);
    }

    #[test]
    fn a_429_on_one_host_cuts_every_hosts_limit_once() {
        let board = Arc::new(Board::default());
        let (a, b) = (host(&board, 8), host(&board, 8));
        // Cuts from before a governor existed are history: its first look only counts from there.
        board.publish("http://e/v1 m", true, None);
        a.follow_shared();
        b.follow_shared();
        assert_eq!((a.stats().limit, b.stats().limit), (8, 8));

        fail(&a, &rate_limited(None));
        assert_eq!(a.stats().limit, 4);
        b.follow_shared();
        assert_eq!(b.stats().limit, 4, "b slows down for a's 429");
        a.follow_shared();
        assert_eq!(
            a.stats().limit,
            4,
            "a does not cut again for its own 429 read back"
        );
        b.follow_shared();
        assert_eq!(b.stats().limit, 4, "one cut is taken once");

        // Many hosts cutting at once halve a governor once per look, not once per host.
        for _ in 0..40 {
            board.publish("http://e/v1 m", true, None);
        }
        b.follow_shared();
        assert_eq!(b.stats().limit, 2);
        // Another endpoint's trouble is not this one's.
        board.publish("http://other/v1 m", true, None);
        b.follow_shared();
        assert_eq!(b.stats().limit, 2);
    }

    #[test]
    fn a_pause_one_host_was_asked_for_holds_every_host() {
        let board = Arc::new(Board::default());
        let (a, b) = (host(&board, 4), host(&board, 4));
        b.follow_shared();
        fail(&a, &rate_limited(Some(Duration::from_secs(30))));
        b.follow_shared();
        let now = Instant::now();
        match b.state().try_admit(now) {
            Err(Blocked::Until(until)) => assert!(until >= now + Duration::from_secs(25), "{until:?}"),
            other => panic!("b should wait for a's pause, got {other:?}"),
        }
        assert!(b.state().try_admit(now + Duration::from_secs(31)).is_ok());
        // Without a shared throttle nothing is published or followed.
        let alone = Governor::new(GovernorConfig::default());
        fail(&alone, &rate_limited(Some(Duration::from_secs(30))));
        alone.follow_shared();
        assert_eq!(board.0.lock().unwrap().len(), 1, "nothing more published");
    }
}
