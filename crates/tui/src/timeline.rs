//! The timeline column: each unit's life as one row of cells over the mission's elapsed time, drawn
//! from the same stretches (`UnitView::spans`) as the report's and the dashboard's timeline.

use chrono::{DateTime, Utc};
use orchestrator_protocol::UnitState;
use orchestrator_view::{clock, UnitSpan, UnitView};
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::{Line, Span};

/// The stretch of time the column covers: the mission's start to its end, or to now while it runs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Window {
    /// `None` before the mission has started or when no time has passed (nothing to scale).
    pub fn new(start: Option<DateTime<Utc>>, end: DateTime<Utc>) -> Option<Self> {
        let start = start?;
        (end > start).then_some(Window { start, end })
    }

    fn millis(&self) -> i64 {
        (self.end - self.start).num_milliseconds().max(1)
    }

    /// The instant at a fraction `numerator / width` of the window.
    fn at(&self, numerator: i64, width: i64) -> DateTime<Utc> {
        self.start + chrono::Duration::milliseconds(self.millis() * numerator / width.max(1))
    }
}

/// The column's header: the clock at its left and right edges, where they fit.
pub(crate) fn scale(window: Option<Window>, width: u16) -> String {
    let Some(window) = window else {
        return "timeline".into();
    };
    let (left, right) = ("00:00".to_string(), clock(window.end - window.start));
    let room = usize::from(width);
    if room < left.len() + right.len() + 2 {
        return "timeline".into();
    }
    format!("{left}{}{right}", " ".repeat(room - left.len() - right.len()))
}

/// One unit's row: each cell shows the state it spent most of that cell's time in.
pub(crate) fn bar(unit: &UnitView, window: Option<Window>, width: u16) -> Line<'static> {
    let Some(window) = window else {
        return Line::default();
    };
    let width = i64::from(width);
    let cells: Vec<Span<'static>> = (0..width)
        .map(|cell| {
            let (from, to) = (window.at(cell, width), window.at(cell + 1, width));
            match dominant(&unit.spans, from, to, window.end) {
                Some(span) => glyph(span.state, unit.span_failed(span)),
                None => Span::raw(" "),
            }
        })
        .collect();
    Line::from(merge_runs(cells))
}

/// The stretch that overlaps `[from, to)` the longest; the later one on a tie.
fn dominant(
    spans: &[UnitSpan],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Option<&UnitSpan> {
    spans
        .iter()
        .filter_map(|span| {
            let span_end = span.to.unwrap_or(end);
            let overlap = span_end.min(to) - span.from.max(from);
            (overlap > chrono::Duration::zero()).then_some((overlap, span))
        })
        .fold(
            None,
            |best: Option<(chrono::Duration, &UnitSpan)>, (overlap, span)| match best {
                Some((longest, _)) if longest > overlap => best,
                _ => Some((overlap, span)),
            },
        )
        .map(|(_, span)| span)
}

/// A state's cell: a shape per kind of work (readable without colour) and its colour; work of a
/// failed attempt in red.
fn glyph(state: UnitState, failed: bool) -> Span<'static> {
    let (symbol, color) = match state {
        UnitState::Queued => ("·", Color::DarkGray),
        UnitState::Running => ("█", Color::Yellow),
        UnitState::WaitingOnChildren => ("░", Color::Cyan),
        UnitState::Verifying => ("▓", Color::Blue),
        UnitState::Reviewing => ("▓", Color::Magenta),
        UnitState::Merging => ("▒", Color::Blue),
        UnitState::Passed | UnitState::Failed | UnitState::Skipped => (" ", Color::Reset),
    };
    let color = if failed { Color::Red } else { color };
    Span::styled(symbol, Style::new().fg(color))
}

/// Neighbouring cells of one style as one span, so a row is a handful of spans, not one per cell.
fn merge_runs(cells: Vec<Span<'static>>) -> Vec<Span<'static>> {
    let mut runs: Vec<Span<'static>> = Vec::new();
    for cell in cells {
        match runs.last_mut() {
            Some(last) if last.style == cell.style => last.content.to_mut().push_str(&cell.content),
            _ => runs.push(cell),
        }
    }
    runs
}

/// The legend under the tree while the timeline shows.
pub(crate) fn legend() -> Line<'static> {
    let item = |state, words: &'static str| [glyph(state, false), Span::raw(format!(" {words}  ")).dim()];
    let mut spans = vec![Span::raw(" ")];
    for (state, words) in [
        (UnitState::Queued, "waiting"),
        (UnitState::Running, "worker"),
        (UnitState::WaitingOnChildren, "children"),
        (UnitState::Verifying, "verify"),
        (UnitState::Reviewing, "review"),
        (UnitState::Merging, "merge"),
    ] {
        spans.extend(item(state, words));
    }
    spans.push(Span::from("█").fg(Color::Red));
    spans.push(Span::raw(" failed attempt").dim());
    Line::from(spans)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use orchestrator_view::fixture::running_mission;
    use orchestrator_view::MissionView;

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + secs, 0)
            .single()
            .unwrap_or_default()
    }

    fn span(state: UnitState, attempt: u32, from: i64, to: Option<i64>) -> UnitSpan {
        UnitSpan {
            state,
            attempt,
            from: at(from),
            to: to.map(at),
            model_calls: 0,
            tokens: 0,
            conflicts: Vec::new(),
        }
    }

    fn text(line: &Line) -> String {
        line.spans.iter().map(|s| s.content.as_ref()).collect()
    }

    #[test]
    fn a_bar_shows_each_stretch_in_proportion_and_a_retry_in_red() {
        let view = MissionView::from_events(&running_mission());
        let mut unit = view.units[0].clone();
        unit.attempt = 2;
        unit.state = UnitState::Running;
        unit.spans = vec![
            span(UnitState::Queued, 0, 0, Some(10)),
            span(UnitState::Running, 1, 10, Some(20)),
            span(UnitState::Verifying, 1, 20, Some(30)),
            span(UnitState::Running, 2, 30, None),
        ];
        let bar = bar(&unit, Window::new(Some(at(0)), at(40)), 8);
        assert_eq!(text(&bar), "··██▓▓██");
        let reds: String = bar
            .spans
            .iter()
            .filter(|s| s.style.fg == Some(Color::Red))
            .map(|s| s.content.as_ref())
            .collect();
        assert_eq!(reds, "██▓▓", "attempt 1 was replaced by attempt 2");
    }

    #[test]
    fn no_window_no_bar_and_a_scale_that_does_not_fit_is_a_word() {
        assert_eq!(Window::new(None, at(5)).map(|w| w.start), None);
        assert!(Window::new(Some(at(5)), at(5)).is_none(), "no time has passed");
        let window = Window::new(Some(at(0)), at(192));
        assert_eq!(scale(window, 20), "00:00          03:12");
        assert_eq!(scale(window, 8), "timeline");
    }
}
