//! The mission's two pictures as SVG, drawn here rather than by a script: `report --html` inlines
//! them in one self-contained file, and the dashboard can show the same drawing. The plan is a
//! layered graph (a unit one layer below everything it waits for and the unit that spawned it);
//! the timeline has one lane per unit and one bar per stretch of its life, scaled to the mission's
//! time. Every node and bar has a `<title>` (the tooltip on hover) and a `data-unit` attribute.
//! Text from models is XML-escaped; nothing it holds becomes markup.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use orchestrator_protocol::UnitState;
use orchestrator_view::{clock, human_tokens, MissionView, UnitSpan, UnitView};

use crate::pictures::{drawn, stretch_name, STYLES};

const NODE_W: i64 = 190;
const NODE_H: i64 = 46;
const GAP_X: i64 = 24;
const GAP_Y: i64 = 56;
/// Nodes side by side in a layer at most; a wider layer wraps.
const PER_ROW: usize = 6;

const LABEL_W: i64 = 220;
const LANE_W: i64 = 760;
const LANE_H: i64 = 22;
const AXIS_H: i64 = 24;

/// The plan as a layered graph.
pub fn graph(view: &MissionView) -> String {
    let units = drawn(view);
    if units.is_empty() {
        return String::new();
    }
    let layers = layers(units);
    let mut rows: Vec<Vec<usize>> = Vec::new();
    for layer in 0..=layers.iter().copied().max().unwrap_or(0) {
        let members: Vec<usize> = (0..units.len()).filter(|i| layers[*i] == layer).collect();
        rows.extend(members.chunks(PER_ROW).map(<[usize]>::to_vec));
    }
    let mut place = vec![(0, 0); units.len()];
    for (row, members) in rows.iter().enumerate() {
        for (column, index) in members.iter().enumerate() {
            place[*index] = (
                GAP_X + column as i64 * (NODE_W + GAP_X),
                GAP_Y / 2 + row as i64 * (NODE_H + GAP_Y),
            );
        }
    }
    let columns = rows.iter().map(Vec::len).max().unwrap_or(1) as i64;
    let width = GAP_X + columns * (NODE_W + GAP_X);
    let height = GAP_Y / 2 + rows.len() as i64 * (NODE_H + GAP_Y);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"plan-graph\" viewBox=\"0 0 {width} {height}\" \
         width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"7\" \
         markerHeight=\"7\" orient=\"auto-start-reverse\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"#71717a\"/>\
         </marker></defs>\n"
    );
    let index = |id: &str| units.iter().position(|u| u.id == id);
    for (to, unit) in units.iter().enumerate() {
        let spawned = unit.parent.as_deref().and_then(index).map(|p| (p, true));
        let deps = unit
            .depends_on
            .iter()
            .filter_map(|d| index(d))
            .map(|d| (d, false));
        for (from, dashed) in deps.chain(spawned) {
            let (x1, y1) = (place[from].0 + NODE_W / 2, place[from].1 + NODE_H);
            let (x2, y2) = (place[to].0 + NODE_W / 2, place[to].1);
            let dash = if dashed { " stroke-dasharray=\"4 3\"" } else { "" };
            let _ = writeln!(
                out,
                "<path d=\"M{x1},{y1} C{x1},{} {x2},{} {x2},{y2}\" fill=\"none\" stroke=\"#71717a\"{dash} \
                 marker-end=\"url(#arrow)\"/>",
                y1 + GAP_Y / 2,
                y2 - GAP_Y / 2
            );
        }
    }
    for (i, unit) in units.iter().enumerate() {
        let (x, y) = place[i];
        let (fill, stroke) = colours(unit.state);
        let _ = writeln!(
            out,
            "<g data-unit=\"{id}\" data-state=\"{state}\"><title>{tip}</title><rect x=\"{x}\" y=\"{y}\" width=\"{NODE_W}\" \
             height=\"{NODE_H}\" rx=\"6\" fill=\"{fill}\" stroke=\"{stroke}\"/>\
             <text x=\"{tx}\" y=\"{ty1}\" font-weight=\"bold\">{label}</text>\
             <text x=\"{tx}\" y=\"{ty2}\">{title}</text></g>",
            id = escape(&unit.id),
            state = unit.state.as_str(),
            tip = escape(&node_tip(unit)),
            tx = x + 8,
            ty1 = y + 18,
            ty2 = y + 36,
            label = escape(&cut(&format!("{} · {}", unit.id, state_words(unit.state)), 28)),
            title = escape(&cut(&unit.title, 28)),
        );
    }
    out.push_str("</svg>\n");
    out
}

/// Each unit's layer: below everything it waits for and the unit that spawned it. Bounded passes,
/// so a log with a cycle (which the engine never accepts) still ends.
fn layers(units: &[UnitView]) -> Vec<usize> {
    let index = |id: &str| units.iter().position(|u| u.id == id);
    let mut layers = vec![0usize; units.len()];
    for _ in 0..units.len() {
        let mut changed = false;
        for (i, unit) in units.iter().enumerate() {
            let above = unit
                .depends_on
                .iter()
                .map(String::as_str)
                .chain(unit.parent.as_deref())
                .filter_map(index)
                .map(|j| layers[j] + 1)
                .max()
                .unwrap_or(0)
                .min(units.len());
            if above > layers[i] {
                layers[i] = above;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    layers
}

fn node_tip(unit: &UnitView) -> String {
    let mut tip = format!("{} {} — {}", unit.id, unit.title, state_words(unit.state));
    if unit.attempt > 1 {
        let _ = write!(tip, ", attempt {}", unit.attempt);
    }
    if unit.totals.calls > 0 {
        let _ = write!(
            tip,
            ", {} model call{}, {} tokens",
            unit.totals.calls,
            plural(unit.totals.calls),
            human_tokens(unit.totals.usage.total())
        );
    }
    if unit.totals.cost_usd > 0.0 {
        let _ = write!(tip, ", ${:.4}", unit.totals.cost_usd);
    }
    if let Some(files) = unit.conflicts.last() {
        let _ = write!(tip, ", merge conflict in {}", files.join(", "));
    }
    if let Some(detail) = &unit.detail {
        let _ = write!(tip, "\n{detail}");
    }
    tip
}

/// One lane per unit, one bar per stretch, over the mission's time.
pub fn timeline(view: &MissionView) -> String {
    let units = drawn(view);
    let (Some(start), Some(end)) = (view.started_at, view.finished_at.or(view.last_event_at)) else {
        return String::new();
    };
    let total = (end - start).num_milliseconds().max(1) as f64;
    let x = |t: DateTime<Utc>| {
        LABEL_W + ((t - start).num_milliseconds().max(0) as f64 / total * LANE_W as f64) as i64
    };
    let width = LABEL_W + LANE_W + 20;
    let lanes_end = AXIS_H + units.len() as i64 * LANE_H;
    let height = lanes_end + 8 + LEGEND_H;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"timeline\" viewBox=\"0 0 {width} {height}\" \
         width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"11\">\n"
    );
    let step = tick_step((end - start).num_seconds());
    let mut tick = 0;
    while tick <= (end - start).num_seconds() {
        let tx = x(start + chrono::Duration::seconds(tick));
        let _ = writeln!(
            out,
            "<line x1=\"{tx}\" y1=\"{AXIS_H}\" x2=\"{tx}\" y2=\"{lanes_end}\" stroke=\"#e4e4e7\"/>\
             <text x=\"{tx}\" y=\"14\" text-anchor=\"middle\" fill=\"#52525b\">{}</text>",
            clock(chrono::Duration::seconds(tick))
        );
        tick += step;
    }
    for (row, unit) in units.iter().enumerate() {
        let y = AXIS_H + row as i64 * LANE_H;
        let _ = writeln!(
            out,
            "<g data-unit=\"{}\" data-state=\"{}\"><text x=\"4\" y=\"{}\">{}</text>",
            escape(&unit.id),
            unit.state.as_str(),
            y + 15,
            escape(&cut(&format!("{} {}", unit.id, unit.title), 34))
        );
        for span in &unit.spans {
            let to = span.to.unwrap_or(end).max(span.from);
            let (x1, x2) = (x(span.from), x(to));
            let (fill, stroke) = colours(span.state);
            let stroke = if unit.span_failed(span) { "#dc2626" } else { stroke };
            let _ = writeln!(
                out,
                "<rect x=\"{x1}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{fill}\" stroke=\"{stroke}\">\
                 <title>{}</title></rect>",
                y + 3,
                (x2 - x1).max(2),
                LANE_H - 6,
                escape(&bar_tip(unit, span, start, to))
            );
        }
        out.push_str("</g>\n");
    }
    legend(&mut out, lanes_end + 8);
    out.push_str("</svg>\n");
    out
}

const LEGEND_H: i64 = 20;

const CHART_W: i64 = 760;
const CHART_H: i64 = 120;
/// Bars in the usage chart at most: a long mission's minutes are grouped.
const CHART_BARS: u32 = 60;
/// A colour per role, in the order roles are listed.
const ROLE_COLOURS: [&str; 8] = [
    "#60a5fa", "#f59e0b", "#34d399", "#a78bfa", "#f472b6", "#94a3b8", "#fb7185", "#22d3ee",
];

/// Tokens per role over the mission's time: one stacked bar per period of minutes.
pub fn usage(view: &MissionView) -> String {
    let buckets = &view.usage_by_minute;
    let Some(last) = buckets.iter().map(|b| b.minute).max() else {
        return String::new();
    };
    let width = (last + 1).div_ceil(CHART_BARS).max(1);
    let periods = last / width + 1;
    let roles: Vec<_> = view.roles.keys().copied().collect();
    let per_period: Vec<Vec<u64>> = (0..periods)
        .map(|p| {
            roles
                .iter()
                .map(|role| {
                    buckets
                        .iter()
                        .filter(|b| b.role == *role && b.minute / width == p)
                        .map(|b| b.usage.total())
                        .sum()
                })
                .collect()
        })
        .collect();
    let tallest = per_period
        .iter()
        .map(|v| v.iter().sum::<u64>())
        .max()
        .unwrap_or(1)
        .max(1);
    let bar_w = (CHART_W / i64::from(periods)).clamp(4, 60);
    let legend_w: i64 = roles.iter().map(|r| 30 + 7 * r.to_string().len() as i64).sum();
    let total_w = (60 + i64::from(periods) * bar_w + 10).max(60 + legend_w);
    let height = CHART_H + 40;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"usage-chart\" viewBox=\"0 0 {total_w} {height}\" \
         width=\"{total_w}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"11\">\n\
         <text x=\"0\" y=\"12\" fill=\"#52525b\">{}</text>\n",
        human_tokens(tallest)
    );
    for (p, values) in per_period.iter().enumerate() {
        let x = 60 + p as i64 * bar_w;
        let mut y = CHART_H + 10;
        let minutes = (p as u32 * width, p as u32 * width + width);
        for (r, value) in values.iter().enumerate().filter(|(_, v)| **v > 0) {
            let h = ((*value as f64 / tallest as f64) * CHART_H as f64)
                .round()
                .max(1.0) as i64;
            y -= h;
            let _ = writeln!(
                out,
                "<rect data-role=\"{role}\" x=\"{x}\" y=\"{y}\" width=\"{}\" height=\"{h}\" fill=\"{}\">\
                 <title>{role}: {} tokens in minutes {}–{}</title></rect>",
                (bar_w - 2).max(2),
                ROLE_COLOURS[r % ROLE_COLOURS.len()],
                human_tokens(*value),
                minutes.0,
                minutes.1,
                role = roles[r],
            );
        }
    }
    let mut x = 60;
    for (r, role) in roles.iter().enumerate() {
        let name = role.to_string();
        let _ = write!(
            out,
            "<rect x=\"{x}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{}\" y=\"{}\">{}</text>",
            CHART_H + 20,
            ROLE_COLOURS[r % ROLE_COLOURS.len()],
            x + 16,
            CHART_H + 30,
            escape(&name.replace('_', " "))
        );
        x += 30 + 7 * name.len() as i64;
    }
    out.push_str("\n</svg>\n");
    out
}

/// What the colours say, under the lanes.
fn legend(out: &mut String, y: i64) {
    let states = [
        UnitState::Queued,
        UnitState::Running,
        UnitState::WaitingOnChildren,
        UnitState::Verifying,
        UnitState::Reviewing,
        UnitState::Merging,
    ];
    let mut x = LABEL_W;
    out.push_str("<g class=\"legend\">");
    for state in states {
        let (fill, stroke) = colours(state);
        let name = stretch_name(state);
        let _ = write!(
            out,
            "<rect x=\"{x}\" y=\"{y}\" width=\"12\" height=\"12\" fill=\"{fill}\" stroke=\"{stroke}\"/>\
             <text x=\"{}\" y=\"{}\">{name}</text>",
            x + 16,
            y + 10
        );
        x += 24 + 7 * name.len() as i64 + 14;
    }
    let _ = writeln!(
        out,
        "<rect x=\"{x}\" y=\"{y}\" width=\"12\" height=\"12\" fill=\"#ffffff\" stroke=\"#dc2626\"/>\
         <text x=\"{}\" y=\"{}\">a failed attempt</text></g>",
        x + 16,
        y + 10
    );
}

fn bar_tip(unit: &UnitView, span: &UnitSpan, start: DateTime<Utc>, to: DateTime<Utc>) -> String {
    let mut tip = format!(
        "{}: {} {}–{} ({})",
        unit.id,
        stretch_name(span.state),
        clock(span.from - start),
        clock(to - start),
        clock(to - span.from)
    );
    if span.attempt > 0 {
        let _ = write!(tip, ", attempt {}", span.attempt);
    }
    if span.model_calls > 0 {
        let _ = write!(
            tip,
            ", {} model call{} ({} tokens)",
            span.model_calls,
            plural(u64::from(span.model_calls)),
            human_tokens(span.tokens)
        );
    }
    if !span.conflicts.is_empty() {
        let _ = write!(
            tip,
            ", conflict in {} (resolved by a conflict resolver)",
            span.conflicts.join(", ")
        );
    }
    if span.to.is_none() {
        tip.push_str(", still going");
    }
    tip
}

fn state_words(state: UnitState) -> String {
    state.as_str().replace('_', " ")
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// Seconds between axis ticks: a round step that gives at most ten.
fn tick_step(seconds: i64) -> i64 {
    const STEPS: [i64; 14] = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200];
    STEPS
        .iter()
        .copied()
        .find(|s| seconds / s <= 10)
        .unwrap_or_else(|| (seconds / 10).max(1))
}

/// Fill and stroke of a state, as in the Mermaid diagrams.
fn colours(state: UnitState) -> (&'static str, &'static str) {
    let style = STYLES
        .iter()
        .find(|(s, _)| *s == state)
        .map_or("", |(_, style)| *style);
    let part = |key: &str| {
        style
            .split(',')
            .find_map(|p| p.strip_prefix(key))
            .unwrap_or("#ffffff")
    };
    (part("fill:"), part("stroke:"))
}

fn cut(text: &str, max_chars: usize) -> String {
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match text.char_indices().nth(max_chars) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text,
    }
}

/// Text as XML character data or an attribute value.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_few() {
        assert_eq!(tick_step(8), 1);
        assert_eq!(tick_step(60), 10);
        assert_eq!(tick_step(3600), 600);
        assert!(86_400 / tick_step(86_400) <= 12);
    }

    #[test]
    fn text_never_becomes_markup() {
        assert_eq!(
            escape("<script>\"a\" & 'b'</script>\u{1b}"),
            "&lt;script&gt;&quot;a&quot; &amp; &#39;b&#39;&lt;/script&gt; "
        );
    }
}
