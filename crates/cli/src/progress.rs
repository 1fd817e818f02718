//! Human progress lines (stderr) or JSON lines (stdout), rendered from the engine's event stream.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use orchestrator_core::MissionReport;
use orchestrator_protocol::{Event, EventEnvelope, Outcome, UnitState};
use orchestrator_view::{first_line, human_tokens, terminal_safe};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::out::{self, errln};

pub async fn render(events: UnboundedReceiver<Arc<EventEnvelope>>, json: bool) {
    print(View::new(), events, json, None).await
}

/// Progress lines for a mission that may have run before (`resume`): what the store holds from
/// earlier runs is folded in silently first, so "units 3/5 done" counts the whole mission.
pub async fn render_plain(mut events: UnboundedReceiver<Arc<EventEnvelope>>, repo: &Path) {
    let Some(first) = events.recv().await else { return };
    let mut view = View::new();
    // A new mission has nothing stored before its first event.
    for earlier in stored_events(repo, &first.mission)
        .iter()
        .filter(|e| e.seq < first.seq)
    {
        view.apply(&earlier.event);
    }
    if let Some(line) = view.apply(&first.event) {
        errln!("[{}] {}", view.elapsed(), terminal_safe(&line));
    }
    print(view, events, false, None).await
}

/// The mission's events so far, for a view opened after its start (`resume`) or progress lines that take
/// over from the view. Without the store, the view starts from the live events alone.
pub fn stored_events(repo: &Path, mission: &str) -> Vec<EventEnvelope> {
    let store = match orchestrator_core::open_store_in(repo) {
        Ok(store) => store,
        Err(e) => {
            tracing::warn!("cannot open the mission store for earlier events: {e}");
            return Vec::new();
        }
    };
    store.events_after(mission, None).unwrap_or_else(|e| {
        tracing::warn!("cannot read the mission's earlier events: {e}");
        Vec::new()
    })
}

/// Progress lines that take over from the terminal view: `history` (the mission so far, from the store)
/// is folded in silently so the totals are right, then events after it print as usual.
pub async fn follow(
    history: &[EventEnvelope],
    events: UnboundedReceiver<Arc<EventEnvelope>>,
    started: Instant,
) {
    let mut view = View::new();
    view.started = started;
    for event in history {
        view.apply(&event.event);
    }
    let after = history.last().map(|event| event.seq);
    print(view, events, false, after).await
}

async fn print(
    mut view: View,
    mut events: UnboundedReceiver<Arc<EventEnvelope>>,
    json: bool,
    after: Option<u64>,
) {
    while let Some(event) = events.recv().await {
        if after.is_some_and(|seen| event.seq <= seen) {
            continue;
        }
        if json {
            if let Ok(line) = serde_json::to_string(&*event) {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
            }
        } else if let Event::PlanAwaitingApproval { attempt, units } = &event.event {
            errln!(
                "[{}] {}",
                view.elapsed(),
                terminal_safe(&waiting_plan(&event.mission, *attempt, units))
            );
        } else if let Some(line) = view.apply(&event.event) {
            errln!("[{}] {}", view.elapsed(), terminal_safe(&line));
        }
    }
}

/// What a person wants to see at a glance, folded from the events.
pub struct View {
    started: Instant,
    units: BTreeMap<String, UnitState>,
    sessions: HashSet<String>,
    tokens: u64,
    cost: f64,
}

impl View {
    pub fn new() -> Self {
        View {
            started: Instant::now(),
            units: BTreeMap::new(),
            sessions: HashSet::new(),
            tokens: 0,
            cost: 0.0,
        }
    }

    fn elapsed(&self) -> String {
        let secs = self.started.elapsed().as_secs();
        format!("{:02}:{:02}", secs / 60, secs % 60)
    }

    /// Folds one event in; returns the line to print, if the event deserves one.
    pub fn apply(&mut self, event: &Event) -> Option<String> {
        match event {
            Event::MissionStarted {
                objective,
                base_commit,
                user_branch,
                ..
            } => Some(format!(
                "mission started on {} at {}: {}",
                user_branch.as_deref().unwrap_or("detached HEAD"),
                short(base_commit),
                first_line(objective)
            )),
            Event::PhaseChanged { phase, round } => Some(if *round > 0 {
                format!("phase: {} (round {round})", phase.as_str())
            } else {
                format!("phase: {}", phase.as_str())
            }),
            Event::PreScanFinished { files, build, test } => Some(format!(
                "pre-scan: {files} files; build: {}; test: {}",
                build.as_deref().unwrap_or("none"),
                test.as_deref().unwrap_or("none")
            )),
            Event::SessionStarted { session, .. } => {
                self.sessions.insert(session.clone());
                None
            }
            Event::SessionFinished { session, .. } => {
                self.sessions.remove(session);
                None
            }
            Event::ModelCall { usage, cost_usd, .. } => {
                self.tokens += usage.total();
                self.cost += cost_usd.unwrap_or(0.0);
                None
            }
            Event::Compacted { session, before_tokens, after_tokens } => {
                Some(format!("{session} compacted its context: ~{before_tokens} → ~{after_tokens} tokens"))
            }
            Event::ModelTraffic { model, peak_in_flight, max_limit, rate_limited, retries, gave_up, .. }
                if *rate_limited + *retries + *gave_up > 0 =>
            {
                Some(format!(
                    "{model}: peak {peak_in_flight}/{max_limit} requests in flight, {rate_limited} rate-limited, \
                     {retries} retried, {gave_up} gave up"
                ))
            }
            Event::PlanRejected { attempt, problems } => Some(format!(
                "plan rejected (attempt {attempt}): {}",
                problems.join("; ")
            )),
            Event::PlanAccepted { round, units } => {
                Some(format!("plan for round {round}: {} unit(s)", units.len()))
            }
            Event::PlanAnswered { .. } => orchestrator_view::describe(event),
            Event::UnitsSpawned { parent, units } => {
                Some(format!("{parent} spawned {} sub-unit(s)", units.len()))
            }
            Event::UnitState {
                unit,
                state,
                attempt,
                detail,
            } => self.unit_state(unit, *state, *attempt, detail),
            Event::EvidenceRecorded { unit, evidence } if !evidence.passed() => Some(format!(
                "{}: `{}` failed ({})",
                unit.as_deref().unwrap_or("integration"),
                evidence.command,
                evidence
                    .exit_code
                    .map(|c| format!("exit {c}"))
                    .unwrap_or_else(|| "killed".into())
            )),
            Event::ReviewFinished {
                unit: None,
                review,
                reviewer,
                ..
            } => Some(format!(
                "{} review: {} — {}",
                reviewer.as_deref().unwrap_or("master"),
                review.verdict,
                first_line(&review.summary)
            )),
            Event::MergeConflict { unit, files, attempt } => Some(format!(
                "{unit}: merge conflict in {} (resolver attempt {attempt})",
                files.join(", ")
            )),
            Event::RoundFinished {
                round,
                passed: false,
                follow_up,
            } => Some(format!(
                "round {round} not passed; {} unit(s) for the next round",
                follow_up.len()
            )),
            Event::Notice { message } => Some(message.clone()),
            Event::HookRan { .. } => orchestrator_view::describe(event),
            Event::UserMessage { unit, message } => Some(format!(
                "{unit}: your message reached its worker: {}",
                first_line(message)
            )),
            _ => None,
        }
    }

    fn unit_state(
        &mut self,
        unit: &str,
        state: UnitState,
        attempt: u32,
        detail: &Option<String>,
    ) -> Option<String> {
        let previous = self.units.insert(unit.to_string(), state);
        let interesting = match state {
            UnitState::Running => previous != Some(UnitState::Running) && attempt > 0,
            UnitState::Queued | UnitState::Verifying | UnitState::Reviewing => false,
            _ => true,
        };
        if !interesting {
            return None;
        }
        let attempt = if attempt > 1 {
            format!(" (attempt {attempt})")
        } else {
            String::new()
        };
        let detail = detail
            .as_deref()
            .map(|d| format!(": {}", first_line(d)))
            .unwrap_or_default();
        Some(format!("{unit} {state}{attempt}{detail} · {}", self.totals()))
    }

    fn totals(&self) -> String {
        let count = |f: fn(&UnitState) -> bool| self.units.values().filter(|s| f(s)).count();
        format!(
            "units {}/{} done, {} running, {} failed · {} session(s) · {} tokens",
            count(|s| *s == UnitState::Passed),
            self.units.len(),
            count(|s| !s.is_terminal() && *s != UnitState::Queued),
            count(|s| matches!(s, UnitState::Failed | UnitState::Skipped)),
            self.sessions.len(),
            human_tokens(self.tokens)
        ) + &self.cost_note()
    }

    fn cost_note(&self) -> String {
        if self.cost > 0.0 {
            format!(" · ~${:.4}", self.cost)
        } else {
            String::new()
        }
    }
}

/// The plan waiting for approval and the ways to answer it, for a person without the terminal view.
fn waiting_plan(mission: &str, attempt: u32, units: &[orchestrator_protocol::UnitSpec]) -> String {
    let mut text = format!(
        "plan {attempt} waits for your approval ({} unit(s)); nothing runs until it is approved:",
        units.len()
    );
    for line in orchestrator_view::plan_outline(units) {
        text.push_str(&format!("\n    {line}"));
    }
    text.push_str(&format!(
        "\n  approve: orchestrator approve --mission {mission}\
         \n  reject:  orchestrator approve --mission {mission} --reject --feedback \"what to change\"\
         \n  edit:    orchestrator approve --mission {mission} --show > plan.json, edit it, then\
         \n           orchestrator approve --mission {mission} --plan-file plan.json"
    ));
    text
}

fn short(hash: &str) -> &str {
    hash.get(..10).unwrap_or(hash)
}

/// The closing words. With `--json` the `mission_finished` event already said it all.
pub fn print_report(report: &MissionReport, json: bool) {
    if json {
        return;
    }
    let verdict = match report.outcome {
        Outcome::Sealed if report.unverified => "SEALED WITHOUT VERIFICATION",
        Outcome::Sealed => "SEALED",
        Outcome::Unsealed => "NOT SEALED",
        Outcome::Interrupted => "INTERRUPTED",
    };
    // The mission is over and its exit status says how; a closed stdout only loses these words.
    let branch = (report.outcome != Outcome::Interrupted && report.branch_kept)
        .then(|| format!("result branch: {}", report.integration_branch));
    let _ = out::line(format_args!("{verdict} — mission {}", report.mission))
        .and_then(|()| out::line(format_args!("{}", report.summary)))
        .and_then(|()| branch.map_or(Ok(()), |line| out::line(format_args!("{line}"))));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiting_plan_is_shown_with_the_ways_to_answer_it() {
        let unit = |id: &str, deps: &[&str]| orchestrator_protocol::UnitSpec {
            id: id.into(),
            title: format!("Build {id}"),
            description: "d".into(),
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            files: vec![],
            attempts: None,
        };
        let text = waiting_plan("m1", 2, &[unit("a", &[]), unit("b", &["a"])]);
        for needed in [
            "plan 2 waits for your approval (2 unit(s))",
            "    a — Build a\n",
            "    b — Build b (after a)",
            "orchestrator approve --mission m1\n",
            "--reject --feedback",
            "--plan-file plan.json",
        ] {
            assert!(text.contains(needed), "{needed}: {text}");
        }
    }

    #[test]
    fn unit_lines_carry_running_totals() {
        let mut view = View::new();
        let state = |unit: &str, state| Event::UnitState {
            unit: unit.into(),
            state,
            attempt: 1,
            detail: None,
        };
        assert_eq!(view.apply(&state("a", UnitState::Queued)), None);
        view.apply(&state("b", UnitState::Queued));
        let line = view.apply(&state("a", UnitState::Running)).unwrap();
        assert_eq!(
            line,
            "a running · units 0/2 done, 1 running, 0 failed · 0 session(s) · 0 tokens"
        );
        let line = view.apply(&state("a", UnitState::Passed)).unwrap();
        assert!(line.starts_with("a passed · units 1/2 done, 0 running"), "{line}");
    }
}
