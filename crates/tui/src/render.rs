//! Draws an [`App`] into a frame. Pure: the same app and size always give the same screen.

use chrono::{DateTime, Utc};
use orchestrator_protocol::{Evidence, Outcome, UnitState, Verdict};
use orchestrator_view::{
    clock, first_line, human_tokens, plan_outline, MissionView, SessionView, Totals, UnitView,
    WaitingPlanView,
};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{Block, Cell, Padding, Paragraph, Row, Table, TableState, Wrap};
use ratatui::Frame;

use crate::app::{App, InputKind};
use crate::timeline;

/// Below this height the sessions panel goes and the totals take one line.
const COMPACT_HEIGHT: u16 = 18;
/// Below this width the cost and time columns go; below the next, tokens and attempt too.
const NARROW_WIDTH: u16 = 90;
const TINY_WIDTH: u16 = 60;
/// How much of a command's output the log panel shows.
const EVIDENCE_TAIL_LINES: usize = 12;
const MAX_SESSION_ROWS: u16 = 4;
/// The unit column grows with the longest id and title up to this; the rest goes to the activity.
const MAX_LABEL_WIDTH: usize = 32;

pub fn render(frame: &mut Frame, app: &App) {
    let area = frame.area();
    let compact = area.height < COMPACT_HEIGHT;
    let orphans = orphan_sessions(&app.view);
    // Before the plan, the scouts and the planner are all there is to watch.
    let max_rows = if app.view.units.is_empty() {
        2 * MAX_SESSION_ROWS
    } else {
        MAX_SESSION_ROWS
    };
    let sessions_height = if compact {
        0
    } else {
        (orphans.len() as u16).clamp(1, max_rows) + 2
    };
    let [header, body, sessions, totals, footer] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Min(3),
        Constraint::Length(sessions_height),
        Constraint::Length(if compact { 1 } else { 3 }),
        Constraint::Length(1),
    ])
    .areas(area);
    render_header(frame, header, app);
    match (app.log(), &app.view.waiting_plan) {
        (Some(log), _) => render_log(frame, body, app, &log.unit, log.scroll),
        (None, Some(plan)) => render_plan(frame, body, plan),
        (None, None) => render_units(frame, body, app),
    }
    if !compact {
        render_sessions(frame, sessions, app, &orphans);
    }
    render_totals(frame, totals, &app.view, compact);
    render_footer(frame, footer, app);
}

fn render_header(frame: &mut Frame, area: Rect, app: &App) {
    let view = &app.view;
    let phase = view.phase.map(|p| p.as_str()).unwrap_or("starting");
    let mut first = vec![
        Span::from(" orchestrator ").bold().reversed(),
        Span::raw(" "),
        Span::from(phase).bold(),
    ];
    if view.round > 0 {
        first.push(Span::raw(format!(" · round {}", view.round)));
    }
    first.push(Span::raw(format!(" · {}", clock(view.elapsed(app.now)))));
    if let Some(badge) = status_badge(app) {
        first.extend([Span::raw("  "), badge]);
    }
    // Last, so a narrow terminal cuts the id rather than the state.
    first.push(Span::from(format!("  {}", view.mission)).dim());
    let second = match (&view.outcome, &view.summary) {
        (Some(_), Some(summary)) => Line::from(format!(" {}", first_line(summary))),
        _ => Line::from(format!(" {}", first_line(&view.objective))).italic(),
    };
    frame.render_widget(Paragraph::new(vec![Line::from(first), second]), area);
}

/// The one thing about the mission's state that matters most right now, if anything does.
fn status_badge(app: &App) -> Option<Span<'static>> {
    let badge = |text: &'static str, color: Color| Some(Span::from(text).bold().fg(color));
    match app.view.outcome {
        Some(Outcome::Sealed) => return badge("SEALED", Color::Green),
        Some(Outcome::Unsealed) => return badge("NOT SEALED", Color::Red),
        Some(Outcome::Interrupted) => return badge("INTERRUPTED — resumable", Color::Yellow),
        None => {}
    }
    if app.cancelled() {
        return badge("STOPPING — sessions end, work is kept", Color::Yellow);
    }
    if app.view.waiting_plan.is_some() {
        return badge("PLAN WAITS FOR YOUR APPROVAL", Color::Yellow);
    }
    match (app.pending_pause(), app.view.paused) {
        (Some(true), _) => badge("pausing…", Color::Yellow),
        (Some(false), _) => badge("resuming…", Color::Yellow),
        (None, true) => badge("PAUSED — running sessions go on", Color::Yellow),
        (None, false) => None,
    }
}

/// The plan waiting for approval: each unit with what it waits for and the start of its description.
fn render_plan(frame: &mut Frame, area: Rect, plan: &WaitingPlanView) {
    let mut lines = vec![Line::from(" nothing runs until you approve it").dim()];
    for (unit, outline) in plan.units.iter().zip(plan_outline(&plan.units)) {
        lines.push(Line::from(format!(" {outline}")).bold());
        lines.push(Line::from(format!("     {}", first_line(&unit.description))).dim());
    }
    let title = format!(" plan {} · {} unit(s) ", plan.attempt, plan.units.len());
    let text = Paragraph::new(Text::from(lines))
        .wrap(Wrap { trim: false })
        .block(Block::bordered().title(title));
    frame.render_widget(text, area);
}

fn render_units(frame: &mut Frame, area: Rect, app: &App) {
    let view = &app.view;
    let tree = view.tree();
    let block = Block::bordered().title(" units ");
    if tree.is_empty() {
        let waiting = Paragraph::new(" no units yet — scouts and the planner are at work").dim();
        frame.render_widget(waiting.block(block), area);
        return;
    }
    let label_width = tree
        .iter()
        .map(|row| unit_label(row.unit, row.depth).width())
        .max()
        .unwrap_or(0);
    let mut columns = Columns {
        label_width: label_width.clamp(12, MAX_LABEL_WIDTH) as u16,
        ..Columns::for_width(area.width)
    };
    let area = if app.timeline() {
        let [table, legend] = Layout::vertical([Constraint::Min(3), Constraint::Length(1)]).areas(area);
        frame.render_widget(Paragraph::new(timeline::legend()), legend);
        columns.timeline = Some(Timeline {
            window: timeline::Window::new(view.started_at, view.finished_at.unwrap_or(app.now)),
            width: last_column_width(table, &columns.widths()),
        });
        table
    } else {
        area
    };
    let rows = tree
        .iter()
        .map(|row| unit_row(view, row.unit, row.depth, app.now, columns));
    let table = Table::new(rows, columns.widths())
        .header(columns.header().style(Style::new().bold().underlined()))
        .block(block)
        .column_spacing(1)
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .highlight_symbol("›");
    let mut state = TableState::new().with_selected(Some(app.selected_row()));
    frame.render_stateful_widget(table, area, &mut state);
}

/// How wide the tree's last column is once the table lays out in `area`: its border, the selection
/// symbol and the spacing between columns come off first, as the table takes them.
fn last_column_width(area: Rect, widths: &[Constraint]) -> u16 {
    let inner = Rect::new(0, 0, area.width.saturating_sub(3), 1);
    Layout::horizontal(widths.iter().copied())
        .spacing(1)
        .split(inner)
        .last()
        .map_or(0, |column| column.width)
}

/// The timeline in the tree's last column: the time it covers and its width in cells.
#[derive(Debug, Clone, Copy)]
struct Timeline {
    window: Option<timeline::Window>,
    width: u16,
}

/// Which columns fit, and whether the last one is the timeline.
#[derive(Debug, Clone, Copy)]
struct Columns {
    label_width: u16,
    attempt_and_tokens: bool,
    cost_and_time: bool,
    timeline: Option<Timeline>,
}

impl Columns {
    fn for_width(width: u16) -> Self {
        Columns {
            label_width: MAX_LABEL_WIDTH as u16,
            attempt_and_tokens: width >= TINY_WIDTH,
            cost_and_time: width >= NARROW_WIDTH,
            timeline: None,
        }
    }

    fn widths(self) -> Vec<Constraint> {
        let mut widths = vec![Constraint::Max(self.label_width), Constraint::Length(21)];
        if self.attempt_and_tokens {
            widths.extend([Constraint::Length(3), Constraint::Length(6)]);
        }
        if self.cost_and_time {
            widths.extend([Constraint::Length(7), Constraint::Length(5)]);
        }
        widths.push(Constraint::Fill(1));
        widths
    }

    fn header(self) -> Row<'static> {
        let mut cells = vec!["unit".to_string(), "state".to_string()];
        if self.attempt_and_tokens {
            cells.extend(["try".to_string(), "tokens".to_string()]);
        }
        if self.cost_and_time {
            cells.extend(["cost".to_string(), "time".to_string()]);
        }
        cells.push(match self.timeline {
            Some(t) => timeline::scale(t.window, t.width),
            None => "live session · last action".to_string(),
        });
        Row::new(cells)
    }
}

fn unit_row(
    view: &MissionView,
    unit: &UnitView,
    depth: usize,
    now: DateTime<Utc>,
    columns: Columns,
) -> Row<'static> {
    let mut cells = vec![
        Cell::from(unit_label(unit, depth)),
        Cell::from(state_span(unit.state)),
    ];
    if columns.attempt_and_tokens {
        let attempt = if unit.attempt > 0 {
            unit.attempt.to_string()
        } else {
            String::new()
        };
        cells.extend([Cell::from(attempt), Cell::from(tokens_of(&unit.totals))]);
    }
    if columns.cost_and_time {
        let time = unit
            .started_at
            .map(|start| clock(unit.finished_at.unwrap_or(now) - start))
            .unwrap_or_default();
        cells.extend([Cell::from(cost(&unit.totals)), Cell::from(time)]);
    }
    if let Some(t) = columns.timeline {
        cells.push(Cell::from(timeline::bar(unit, t.window, t.width)));
        return Row::new(cells);
    }
    let activity = unit_activity(view, unit, now);
    let height = activity.height().max(1) as u16;
    cells.push(Cell::from(activity));
    Row::new(cells).height(height)
}

/// The unit's id and title, indented under the unit that spawned it.
fn unit_label(unit: &UnitView, depth: usize) -> Line<'static> {
    let branch = if depth > 0 { "└ " } else { "" };
    Line::from(vec![
        Span::raw(format!("{}{branch}", "  ".repeat(depth.saturating_sub(1)))),
        Span::from(unit.id.clone()).bold(),
        Span::raw(format!(" {}", unit.title)),
    ])
}

/// The unit's live session (role and model, then what it did last); else why the unit is where it is.
fn unit_activity(view: &MissionView, unit: &UnitView, now: DateTime<Utc>) -> Text<'static> {
    let live = view.unit_sessions(&unit.id).filter(|s| s.is_live()).last();
    if let Some(session) = live {
        let mut first = vec![
            Span::from(session.role.as_str()).fg(Color::Cyan),
            Span::raw(format!(" {}", session.model)),
        ];
        if let Some(holder) = &unit.holder {
            first.push(Span::from(format!(" on {}", holder.host)).dim());
        }
        return Text::from(vec![Line::from(first), Line::from(last_action(session, now))]);
    }
    if let Some(detail) = &unit.detail {
        return Text::from(first_line(detail).to_string()).dim();
    }
    match &unit.merged_commit {
        Some(commit) => Text::from(format!("merged {}", short(commit))).dim(),
        None => Text::default(),
    }
}

fn last_action(session: &SessionView, now: DateTime<Utc>) -> String {
    match (&session.last_action, session.last_action_at) {
        (Some(action), Some(at)) => format!("{action} · {} ago", ago(now - at)),
        (Some(action), None) => action.clone(),
        (None, _) => format!("starting · {} ago", ago(now - session.started_at)),
    }
}

/// `4s`, `3m`, `2h`: short enough for a busy row.
fn ago(duration: chrono::Duration) -> String {
    let secs = duration.num_seconds().max(0);
    match secs {
        0..=119 => format!("{secs}s"),
        120..=7199 => format!("{}m", secs / 60),
        _ => format!("{}h", secs / 3600),
    }
}

fn state_span(state: UnitState) -> Span<'static> {
    let (symbol, words, color) = match state {
        UnitState::Queued => ("○", "queued", Color::Gray),
        UnitState::Running => ("▶", "running", Color::Yellow),
        UnitState::WaitingOnChildren => ("◇", "waiting on children", Color::Cyan),
        UnitState::Verifying => ("◎", "verifying", Color::Blue),
        UnitState::Reviewing => ("◎", "reviewing", Color::Magenta),
        UnitState::Merging => ("⇢", "merging", Color::Blue),
        UnitState::Passed => ("✓", "passed", Color::Green),
        UnitState::Failed => ("✗", "failed", Color::Red),
        UnitState::Skipped => ("–", "skipped", Color::DarkGray),
    };
    Span::from(format!("{symbol} {words}")).fg(color)
}

/// Live sessions that belong to no unit: scouts, the planner, the master reviewer.
fn orphan_sessions(view: &MissionView) -> Vec<&SessionView> {
    view.live_sessions().filter(|s| s.unit.is_none()).collect()
}

fn render_sessions(frame: &mut Frame, area: Rect, app: &App, sessions: &[&SessionView]) {
    let block = Block::bordered().title(" live sessions without a unit ");
    if sessions.is_empty() {
        frame.render_widget(Paragraph::new(" none").dim().block(block), area);
        return;
    }
    let rows = sessions.iter().map(|s| {
        Row::new([
            Cell::from(s.id.clone()).bold(),
            Cell::from(s.role.as_str()).fg(Color::Cyan),
            Cell::from(s.model.clone()),
            Cell::from(tokens_of(&s.totals)),
            Cell::from(cost(&s.totals)),
            Cell::from(clock(app.now - s.started_at)),
            Cell::from(last_action(s, app.now)),
        ])
    });
    let widest = |f: fn(&SessionView) -> usize| sessions.iter().map(|s| f(s)).max().unwrap_or(0) as u16;
    let widths = [
        Constraint::Max(widest(|s| s.id.chars().count()).min(24)),
        Constraint::Length(widest(|s| s.role.as_str().len())),
        Constraint::Max(widest(|s| s.model.chars().count()).min(24)),
        Constraint::Length(6),
        Constraint::Length(7),
        Constraint::Length(5),
        Constraint::Fill(1),
    ];
    frame.render_widget(Table::new(rows, widths).column_spacing(1).block(block), area);
}

fn render_totals(frame: &mut Frame, area: Rect, view: &MissionView, compact: bool) {
    let counts = view.counts();
    let failed = counts.failed + counts.skipped;
    let failed = if failed > 0 {
        Span::from(format!("{failed} failed")).red().bold()
    } else {
        Span::raw("0 failed")
    };
    // The prompt cache's share, where there was one (not in the compact layout: little room).
    let cached = match view.usage.cache_read_tokens {
        0 => String::new(),
        _ if compact => String::new(),
        read => format!(" ({} cached)", human_tokens(read)),
    };
    let tokens = format!(
        "{} tokens{cached}{}",
        human_tokens(view.usage.total()),
        money(view.cost_usd).map(|c| format!(" ~{c}")).unwrap_or_default()
    );
    let mut units = vec![
        Span::raw(if compact { " units " } else { "units " }),
        Span::from(format!("{}/{} passed", counts.passed, counts.total)).green(),
        Span::raw(format!(
            " · {} running · {} queued · ",
            counts.active, counts.queued
        )),
        failed,
    ];
    if compact {
        units.push(Span::raw(format!(" · {tokens}")));
        frame.render_widget(Paragraph::new(Line::from(units)), area);
        return;
    }
    units.push(Span::raw(format!(
        " · {} session(s) live",
        view.live_sessions().count()
    )));
    let roles: Vec<String> = view
        .roles
        .iter()
        .map(|(role, totals)| format!("{role} {}{}", tokens_of(totals), prefixed_cost(totals)))
        .collect();
    let spend = Line::from(vec![
        Span::from(tokens).bold(),
        Span::from(format!(" — {}", roles.join(" · "))).dim(),
    ]);
    // Wrapped role totals line up under the first column rather than at the screen's edge.
    let text = Paragraph::new(vec![Line::from(units), spend])
        .wrap(Wrap { trim: true })
        .block(Block::new().padding(Padding::left(1)));
    frame.render_widget(text, area);
}

fn render_footer(frame: &mut Frame, area: Rect, app: &App) {
    let line = if let Some(input) = app.input() {
        let prompt = match input.kind {
            InputKind::Feedback => " feedback for the planner: ".to_string(),
            InputKind::PlanFile => " edited plan file (JSON): ".to_string(),
            InputKind::Message => format!(
                " message to {}'s worker: ",
                input.unit.as_deref().unwrap_or("every")
            ),
        };
        Line::from(vec![
            Span::from(prompt).bold().black().on_yellow(),
            Span::raw(format!(" {}█  ", input.text)),
            Span::from("⏎").bold().reversed(),
            Span::raw(" send  "),
            Span::from("Esc").bold().reversed(),
            Span::raw(" drop"),
        ])
    } else if let Some(error) = app.plan_error() {
        Line::from(Span::from(format!(" {error}")).bold().red())
    } else if app.confirming_cancel() {
        Line::from(vec![
            Span::from(" cancel the mission? y/n ").bold().black().on_yellow(),
            Span::raw(" running sessions stop, the work so far is kept; `orchestrator resume` continues"),
        ])
    } else {
        keys_line(app)
    };
    frame.render_widget(Paragraph::new(line), area);
}

fn keys_line(app: &App) -> Line<'static> {
    // Short words: the header's badge says that running sessions go on while paused.
    let pause = if app.view.paused || app.pending_pause() == Some(true) {
        "resume"
    } else {
        "pause"
    };
    let mut keys: Vec<(&str, &str)> = if app.view.waiting_plan.is_some() && app.log().is_none() {
        vec![
            ("a", "approve plan"),
            ("r", "reject with feedback"),
            (
                "e",
                if app.has_editor() {
                    "edit in $EDITOR"
                } else {
                    "edit from file"
                },
            ),
        ]
    } else if app.log().is_some() {
        vec![("↑↓", "scroll"), ("Esc", "close log")]
    } else {
        let view = if app.timeline() { "sessions" } else { "timeline" };
        vec![("↑↓", "select"), ("⏎", "log"), ("t", view)]
    };
    // Shown where there is room (the tree's line is full at 80 columns); `m` works in the tree too.
    if app.log().is_some() && app.view.outcome.is_none() {
        keys.push(("m", "message its worker"));
    }
    keys.extend([("p", pause), ("c", "cancel")]);
    if app.log().is_none() {
        keys.push(("q", "leave view, mission goes on"));
    }
    let mut spans = vec![Span::raw(" ")];
    for (key, what) in keys {
        spans.push(Span::from(key).bold().reversed());
        spans.push(Span::raw(format!(" {what}  ")));
    }
    Line::from(spans)
}

fn render_log(frame: &mut Frame, area: Rect, app: &App, unit: &str, scroll: u16) {
    let title = match app.view.unit(unit) {
        Some(u) => format!(" log · {} {} ", u.id, u.title),
        None => format!(" log · {unit} "),
    };
    let text = Paragraph::new(Text::from(log_lines(app, unit))).wrap(Wrap { trim: false });
    let rows = text.line_count(area.width.saturating_sub(2));
    let last_page = u16::try_from(rows)
        .unwrap_or(u16::MAX)
        .saturating_sub(area.height.saturating_sub(2));
    app.remember_log_last_page(last_page);
    let text = text
        .block(Block::bordered().title(title))
        .scroll((scroll.min(last_page), 0));
    frame.render_widget(text, area);
}

/// Everything the log panel shows for a unit: what it is, its evidence and reviews (what a person
/// debugging it wants first), then its story.
fn log_lines(app: &App, unit: &str) -> Vec<Line<'static>> {
    let view = &app.view;
    let Some(u) = view.unit(unit) else {
        return vec![Line::from(format!("{unit} is no longer in the mission")).dim()];
    };
    let mut lines = unit_summary(u);
    if !u.evidence.is_empty() {
        lines.push(section("evidence"));
        u.evidence.iter().for_each(|e| lines.extend(evidence_lines(e)));
    }
    if !u.reviews.is_empty() {
        lines.push(section("reviews"));
        for (attempt, review) in &u.reviews {
            let (verdict, color) = match review.verdict {
                Verdict::Pass => ("pass", Color::Green),
                Verdict::Fail => ("fail", Color::Red),
            };
            lines.push(Line::from(vec![
                Span::raw(format!("attempt {attempt}: ")),
                Span::from(verdict).fg(color).bold(),
                Span::raw(format!(" — {}", first_line(&review.summary))),
            ]));
            for issue in &review.issues {
                let file = issue
                    .file
                    .as_deref()
                    .map(|f| format!(" ({f})"))
                    .unwrap_or_default();
                lines.push(Line::from(format!(
                    "  - {}{file}: {}",
                    issue.title,
                    first_line(&issue.description)
                )));
            }
        }
    }
    lines.push(section("story"));
    let start = view.started_at.unwrap_or(app.now);
    lines.extend(u.log.iter().map(|line| {
        Line::from(vec![
            Span::from(format!("{} ", clock(line.at - start))).dim(),
            Span::raw(line.text.clone()),
        ])
    }));
    lines
}

fn unit_summary(u: &UnitView) -> Vec<Line<'static>> {
    let mut facts = vec![u.state.to_string()];
    if u.attempt > 0 {
        facts.push(format!("attempt {}", u.attempt));
    }
    if let Some(branch) = &u.branch {
        facts.push(format!("branch {branch}"));
    }
    if let Some(holder) = &u.holder {
        facts.push(format!(
            "held by {} on {} (token {})",
            holder.worker, holder.host, holder.token
        ));
    }
    let depends = if u.depends_on.is_empty() {
        "—".to_string()
    } else {
        u.depends_on.join(", ")
    };
    vec![
        Line::from(vec![
            Span::from(format!("{} {}", u.id, u.title)).bold(),
            Span::raw(format!(" — {}", facts.join(", "))),
        ]),
        Line::from(first_line(&u.description).to_string()),
        Line::from(format!(
            "files: {} · depends on: {depends} · {} tokens{} in {} model call(s)",
            if u.files.is_empty() {
                "—".to_string()
            } else {
                u.files.join(", ")
            },
            human_tokens(u.totals.usage.total()),
            prefixed_cost(&u.totals),
            u.totals.calls
        ))
        .dim(),
    ]
}

fn evidence_lines(evidence: &Evidence) -> Vec<Line<'static>> {
    let verdict = match (evidence.passed(), evidence.exit_code) {
        (true, _) => Span::from("passed").green(),
        (false, Some(code)) => Span::from(format!("failed (exit {code})")).red(),
        (false, None) if evidence.timed_out => Span::from("timed out").red(),
        (false, None) => Span::from("was killed").red(),
    };
    let mut lines = vec![Line::from(vec![
        Span::raw(format!("{} `{}` ", evidence.kind, evidence.command)),
        verdict,
        Span::raw(format!(" in {:.1}s", evidence.duration_ms as f64 / 1000.0)),
    ])];
    let tail: Vec<&str> = evidence.output_tail.lines().collect();
    let shown = &tail[tail.len().saturating_sub(EVIDENCE_TAIL_LINES)..];
    lines.extend(shown.iter().map(|l| Line::from(format!("  │ {l}")).dim()));
    lines
}

fn section(name: &str) -> Line<'static> {
    Line::from(format!("── {name}")).bold().fg(Color::Cyan)
}

fn tokens_of(totals: &Totals) -> String {
    if totals.calls == 0 {
        String::new()
    } else {
        human_tokens(totals.usage.total())
    }
}

fn cost(totals: &Totals) -> String {
    money(totals.cost_usd).unwrap_or_default()
}

fn prefixed_cost(totals: &Totals) -> String {
    money(totals.cost_usd)
        .map(|c| format!(" {c}"))
        .unwrap_or_default()
}

/// `$0.0123`; `None` when nothing was priced.
fn money(usd: f64) -> Option<String> {
    (usd > 0.0).then(|| {
        if usd >= 100.0 {
            format!("${usd:.0}")
        } else if usd >= 1.0 {
            format!("${usd:.2}")
        } else {
            format!("${usd:.4}")
        }
    })
}

fn short(commit: &str) -> &str {
    commit.get(..10).unwrap_or(commit)
}
