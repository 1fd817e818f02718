//! One human line per event, shared by every view's log.

use orchestrator_protocol::{Event, HookKind, HookRun, PlanAnswer, Verdict};

/// A line a person would want to read for this event, or `None` for bookkeeping events.
pub fn describe(event: &Event) -> Option<String> {
    let line = match event {
        Event::MissionStarted {
            objective,
            base_commit,
            user_branch,
            ..
        } => format!(
            "mission started on {} at {}: {}",
            user_branch.as_deref().unwrap_or("detached HEAD"),
            base_commit.get(..10).unwrap_or(base_commit),
            first_line(objective)
        ),
        Event::PhaseChanged { phase, round } if *round > 0 => {
            format!("phase: {} (round {round})", phase.as_str())
        }
        Event::PhaseChanged { phase, .. } => format!("phase: {}", phase.as_str()),
        Event::SessionStarted {
            session, role, model, ..
        } => {
            format!("{session} started ({role}, {model})")
        }
        Event::SessionFinished {
            session, ok, turns, ..
        } => format!(
            "{session} {} after {turns} turn(s)",
            if *ok { "finished" } else { "stopped" }
        ),
        Event::ToolCalled {
            session,
            tool,
            summary,
            ok,
            ..
        } => format!(
            "{session}: {tool} {summary}{}",
            if *ok { "" } else { " (failed)" }
        ),
        Event::Compacted {
            session,
            before_tokens,
            after_tokens,
        } => format!("{session} compacted its context: ~{before_tokens} → ~{after_tokens} tokens"),
        Event::PlanAccepted { round, units } => format!("plan for round {round}: {} unit(s)", units.len()),
        Event::PlanRejected { attempt, problems } => {
            format!("plan rejected (attempt {attempt}): {}", problems.join("; "))
        }
        Event::PlanAwaitingApproval { attempt, units } => format!(
            "plan {attempt} waits for approval: {} unit(s); nothing runs until it is approved",
            units.len()
        ),
        Event::PlanAnswered { attempt, answer } => match answer {
            PlanAnswer::Reject { feedback } => {
                format!("plan {attempt} rejected: {}", first_line(feedback))
            }
            PlanAnswer::Edit { units } => {
                format!("plan {attempt} replaced by an edit: {} unit(s)", units.len())
            }
            PlanAnswer::Approve => format!("plan {attempt} approved"),
        },
        Event::UnitsSpawned { parent, units } => {
            let ids: Vec<&str> = units.iter().map(|u| u.id.as_str()).collect();
            format!("{parent} spawned {}", ids.join(", "))
        }
        Event::UnitState {
            unit,
            state,
            attempt,
            detail,
        } => {
            let detail = detail
                .as_deref()
                .map(|d| format!(": {}", first_line(d)))
                .unwrap_or_default();
            format!("{unit} {state} (attempt {attempt}){detail}")
        }
        Event::UnitPrepared { unit, branch, .. } => format!("{unit} works on branch {branch}"),
        Event::UnitTaken {
            unit,
            worker,
            host,
            token,
            taken_over_from: None,
        } => format!("{unit}: taken by {worker} on {host} (token {token})"),
        Event::UnitTaken {
            unit,
            worker,
            host,
            token,
            taken_over_from: Some(before),
        } => format!(
            "{unit}: taken over by {worker} on {host} (token {token}) after the lease of token {before} expired; \
             its work starts again"
        ),
        Event::EvidenceRecorded { unit, evidence } => format!(
            "{}: {} `{}` {} in {:.1}s",
            unit.as_deref().unwrap_or("integration"),
            evidence.kind,
            evidence.command,
            match (evidence.passed(), evidence.exit_code) {
                (true, Some(code)) if code != 0 => format!(
                    "passed but for pre-existing failures (exit {code}: {})",
                    evidence.baseline_failures.join(", ")
                ),
                (true, _) => "passed".to_string(),
                (false, Some(code)) => format!("failed (exit {code})"),
                (false, None) if evidence.timed_out => "timed out".to_string(),
                (false, None) => "was killed".to_string(),
            },
            evidence.duration_ms as f64 / 1000.0
        ),
        Event::ReviewFinished {
            unit,
            review,
            reviewer,
            ..
        } => format!(
            "{}: {}review {} — {}",
            unit.as_deref().unwrap_or("master"),
            reviewer.as_deref().map(|r| format!("{r} ")).unwrap_or_default(),
            match review.verdict {
                Verdict::Pass => "passed",
                Verdict::Fail => "failed",
            },
            first_line(&review.summary)
        ),
        Event::CandidateFinished {
            unit,
            candidate,
            of,
            passed,
            detail,
            ..
        } => format!(
            "{unit}: candidate {candidate} of {of} {}{}",
            if *passed { "passed verification" } else { "is out" },
            match (passed, detail) {
                (false, Some(detail)) => format!(": {}", first_line(detail)),
                _ => String::new(),
            }
        ),
        Event::CandidatePicked {
            unit,
            candidate,
            reasons,
            by_runtime,
            ..
        } => format!(
            "{unit}: candidate {candidate} kept{} — {}",
            if *by_runtime {
                " by the runtime's rule"
            } else {
                " by the reviewer"
            },
            first_line(reasons)
        ),
        Event::MergeConflict { unit, files, attempt } => format!(
            "{unit}: merge conflict in {} (resolver attempt {attempt})",
            files.join(", ")
        ),
        Event::Merged { unit, into, commit } => {
            format!(
                "{unit} merged into {into} at {}",
                commit.get(..10).unwrap_or(commit)
            )
        }
        Event::RoundFinished {
            round, passed: true, ..
        } => format!("round {round} passed"),
        Event::RoundFinished { round, follow_up, .. } => format!(
            "round {round} not passed; {} unit(s) for the next round",
            follow_up.len()
        ),
        Event::MissionResumed { phase, round } => {
            format!("mission resumed in {} (round {round})", phase.as_str())
        }
        Event::DispatchChanged { paused: true } => "dispatch paused: no new unit starts".into(),
        Event::DispatchChanged { paused: false } => "dispatch resumed".into(),
        Event::Notice { message } => message.clone(),
        Event::ProjectFiles {
            instructions,
            roles,
            notes,
        } => project_files(instructions, roles, notes),
        Event::HookRan { run } => hook_line(run),
        Event::BaselineStarted { commit } => {
            format!(
                "baseline: the project's commands run once on the base commit {}",
                commit.get(..12).unwrap_or(commit)
            )
        }
        Event::BaselineVerified { baseline } => baseline_line(baseline),
        Event::UserMessage { unit, message } => {
            format!("{unit}: your message reached its worker: {}", first_line(message))
        }
        Event::MissionFinished { outcome, summary, .. } => {
            format!("mission {}: {}", outcome.as_str(), first_line(summary))
        }
        _ => return None,
    };
    Some(line)
}

/// `project instructions: AGENTS.md, crates/x/AGENTS.md (cut); role files: …; passed over: …`.
fn project_files(
    instructions: &[orchestrator_protocol::ProjectFile],
    roles: &[orchestrator_protocol::ProjectFile],
    notes: &[String],
) -> String {
    let list = |files: &[orchestrator_protocol::ProjectFile]| {
        files
            .iter()
            .map(|f| format!("{}{}", f.path, if f.cut { " (cut)" } else { "" }))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut parts = Vec::new();
    if !instructions.is_empty() {
        parts.push(format!("project instructions: {}", list(instructions)));
    }
    if !roles.is_empty() {
        parts.push(format!("role files: {}", list(roles)));
    }
    if !notes.is_empty() {
        parts.push(format!("passed over: {}", notes.join("; ")));
    }
    parts.join("; ")
}

/// `baseline passed in 41.2s; units start from its target` or what failed before any unit.
fn baseline_line(baseline: &orchestrator_protocol::Baseline) -> String {
    let seconds = baseline.duration_ms as f64 / 1000.0;
    let verdict = if baseline.passed {
        format!("baseline passed in {seconds:.1}s")
    } else if baseline.timed_out {
        format!("baseline timed out after {seconds:.1}s")
    } else if baseline.failed_tests.is_empty() {
        format!("baseline failed in {seconds:.1}s")
    } else {
        format!(
            "baseline failed in {seconds:.1}s; pre-existing test failures, not blamed on any unit: {}",
            baseline.failed_tests.join(", ")
        )
    };
    let warm = match (&baseline.cold_reason, baseline.warm.is_empty()) {
        (Some(why), _) => format!("units build cold: {why}"),
        (None, true) => "units build cold".to_string(),
        (None, false) => format!("units start from a copy of its {}", baseline.warm.join(", ")),
    };
    format!("{verdict}; {warm}")
}

/// `a: before_merge hook `make check` vetoed the merge (exit 1) in 0.4s: <its last line>`.
fn hook_line(run: &HookRun) -> String {
    let whose = run.unit.as_deref().unwrap_or("mission");
    let verdict = match (run.passed(), run.hook) {
        (true, _) => "passed",
        (false, HookKind::BeforeMerge) => "vetoed the merge",
        (false, HookKind::MissionStart) => "refused the mission",
        (false, HookKind::AfterPlan) => "refused the plan",
        (false, HookKind::AfterSeal) => "failed",
    };
    let said = match run.output_tail.lines().rev().find(|l| !l.trim().is_empty()) {
        Some(last) if !run.passed() => format!(": {}", last.trim()),
        _ => String::new(),
    };
    format!(
        "{whose}: {} hook `{}` {verdict} ({}) in {:.1}s{said}",
        run.hook,
        short_command(&run.command),
        run.status(),
        run.duration_ms as f64 / 1000.0
    )
}

/// A hook's command as a log line shows it: its first line, at most [`COMMAND_CHARS`] characters
/// (the event has all of it).
fn short_command(command: &str) -> String {
    let line = first_line(command);
    if line.chars().count() <= COMMAND_CHARS && line.len() == command.len() {
        return line.to_string();
    }
    let cut: String = line.chars().take(COMMAND_CHARS).collect();
    format!("{cut}…")
}

const COMMAND_CHARS: usize = 60;

pub fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

/// `text` safe to write to a terminal: control characters other than newlines and tabs (a
/// terminal's escape sequences, a carriage return that hides what came before) shown escaped
/// (`\u{1b}`). What a person reads of an event carries a model's words, and through a relay another
/// host's: neither may move the cursor, retitle the window or rewrite what was printed.
pub fn terminal_safe(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() && c != '\n' && c != '\t';
    if !text.contains(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// 950, 12.3k, 4.5M.
pub fn human_tokens(n: u64) -> String {
    if n >= 1_000_000 {
        format!("{:.1}M", n as f64 / 1e6)
    } else if n >= 1_000 {
        format!("{:.1}k", n as f64 / 1e3)
    } else {
        n.to_string()
    }
}
