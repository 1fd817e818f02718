//! Which events a person should hear of, and in what words.

use orchestrator_protocol::{Event, EventEnvelope, Outcome, UnitState};
use serde::Serialize;

use crate::MissionContext;

/// What happened, for a webhook receiver to route on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    /// Sealed, not sealed (round limit, failed units, spent budget) or interrupted.
    MissionFinished,
    /// A unit failed for good: its attempts are spent.
    UnitFailed,
    /// `--approve-plan`: the plan waits for a person's answer; nothing runs until then.
    PlanAwaitingApproval,
}

/// One notice, as a webhook receives it (JSON) and a desktop shows it (title and message).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notice {
    pub kind: NoticeKind,
    pub mission: String,
    /// The repository's top folder.
    pub repo: String,
    pub objective: String,
    pub title: String,
    pub message: String,
    /// When the event happened (RFC 3339).
    pub at: String,
    /// `sealed`, `unsealed` or `interrupted` (the protocol's names), for a finished mission.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Whether the person should act: the mission did not seal, or a unit failed.
    pub needs_attention: bool,
}

/// The most characters of an objective a title holds; the message has it whole.
const TITLE_OBJECTIVE_CHARS: usize = 60;

/// The notice an event stands for, if a person should hear of it. Most events (model calls, tool
/// calls, unit progress) are for the views, not for interrupting someone.
pub fn notice_for(envelope: &EventEnvelope, context: &MissionContext) -> Option<Notice> {
    let (kind, title, message, outcome, unit, needs_attention) = match &envelope.event {
        Event::MissionFinished { outcome, summary, .. } => (
            NoticeKind::MissionFinished,
            format!("Mission {}: {}", outcome.as_str(), short(&context.objective)),
            summary.clone(),
            Some(*outcome),
            None,
            *outcome != Outcome::Sealed,
        ),
        Event::UnitState {
            unit,
            state: UnitState::Failed,
            detail,
            ..
        } => (
            NoticeKind::UnitFailed,
            format!("Unit {unit} failed: {}", short(&context.objective)),
            detail
                .clone()
                .unwrap_or_else(|| format!("unit {unit} failed; its attempts are spent")),
            None,
            Some(unit.clone()),
            true,
        ),
        Event::PlanAwaitingApproval { attempt, units } => (
            NoticeKind::PlanAwaitingApproval,
            format!("Plan waits for approval: {}", short(&context.objective)),
            format!(
                "Plan {attempt} has {} unit(s) and waits for your answer: `orchestrator approve` (or \
                 `--reject --feedback \"…\"`, or `--plan-file FILE`) in {}",
                units.len(),
                context.repo.display()
            ),
            None,
            None,
            true,
        ),
        _ => return None,
    };
    Some(Notice {
        kind,
        mission: envelope.mission.clone(),
        repo: context.repo.display().to_string(),
        objective: context.objective.clone(),
        title,
        message,
        at: envelope.at.to_rfc3339(),
        outcome,
        unit,
        needs_attention,
    })
}

fn short(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default().trim();
    if line.chars().count() <= TITLE_OBJECTIVE_CHARS {
        return line.to_string();
    }
    let cut: String = line.chars().take(TITLE_OBJECTIVE_CHARS - 1).collect();
    format!("{}…", cut.trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;
    use orchestrator_protocol::TokenUsage;

    fn envelope(event: Event) -> EventEnvelope {
        EventEnvelope {
            seq: 7,
            at: chrono::DateTime::parse_from_rfc3339("2026-12-03T14:00:00Z")
                .map(|t| t.with_timezone(&chrono::Utc))
                .unwrap_or_default(),
            mission: "m1".into(),
            event,
        }
    }

    fn context() -> MissionContext {
        MissionContext {
            repo: "/work/app".into(),
            objective: "Add a --verbose flag to the CLI and test it thoroughly, with docs for every option"
                .into(),
        }
    }

    #[test]
    fn a_finished_mission_is_a_notice_with_its_summary() {
        let event = envelope(Event::MissionFinished {
            outcome: Outcome::Unsealed,
            summary: "the token budget is spent: 1000/1000 tokens used".into(),
            usage: TokenUsage::default(),
            result_commit: None,
            unverified: false,
        });
        let notice = notice_for(&event, &context()).expect("a notice");
        assert_eq!(notice.kind, NoticeKind::MissionFinished);
        assert_eq!(
            notice.title,
            "Mission not sealed: Add a --verbose flag to the CLI and test it thoroughly, wit…"
        );
        assert_eq!(notice.message, "the token budget is spent: 1000/1000 tokens used");
        assert_eq!(notice.outcome, Some(Outcome::Unsealed));
        assert!(notice.needs_attention);
        assert_eq!(notice.at, "2026-12-03T14:00:00+00:00");
        let json = serde_json::to_value(&notice).unwrap_or_default();
        assert_eq!(json["kind"], "mission_finished");
        assert_eq!(json["outcome"], "unsealed", "the protocol's name on the wire");
        assert_eq!(json["repo"], "/work/app");
        assert!(json.get("unit").is_none());
    }

    #[test]
    fn a_failed_unit_is_a_notice_and_progress_is_not() {
        let failed = envelope(Event::UnitState {
            unit: "t3".into(),
            state: UnitState::Failed,
            attempt: 3,
            detail: Some("did not pass after 3 attempts".into()),
        });
        let notice = notice_for(&failed, &context()).expect("a notice");
        assert_eq!(notice.kind, NoticeKind::UnitFailed);
        assert_eq!(notice.unit.as_deref(), Some("t3"));
        assert_eq!(notice.message, "did not pass after 3 attempts");
        let running = envelope(Event::UnitState {
            unit: "t3".into(),
            state: UnitState::Running,
            attempt: 1,
            detail: None,
        });
        assert_eq!(notice_for(&running, &context()), None);
        let note = envelope(Event::Notice { message: "x".into() });
        assert_eq!(notice_for(&note, &context()), None);
    }

    #[test]
    fn a_plan_waiting_for_approval_asks_for_an_answer() {
        let waiting = envelope(Event::PlanAwaitingApproval {
            attempt: 2,
            units: Vec::new(),
        });
        let notice = notice_for(&waiting, &context()).expect("a notice");
        assert_eq!(notice.kind, NoticeKind::PlanAwaitingApproval);
        assert!(notice.needs_attention);
        assert!(
            notice
                .message
                .starts_with("Plan 2 has 0 unit(s) and waits for your answer: `orchestrator approve`"),
            "{}",
            notice.message
        );
        let json = serde_json::to_value(&notice).unwrap_or_default();
        assert_eq!(json["kind"], "plan_awaiting_approval");
    }
}
