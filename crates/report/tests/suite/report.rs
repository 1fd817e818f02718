//! Snapshots of whole reports, from the fixed fixture missions, so any change to the document shows up
//! as a reviewable diff.

use orchestrator_report::{render, Changes, Diff, FileChange};
use orchestrator_view::fixture::{running_mission, sealed_mission};
use orchestrator_view::MissionView;

fn file(path: &str, added: u64, removed: u64) -> FileChange {
    FileChange {
        path: path.into(),
        added: Some(added),
        removed: Some(removed),
    }
}

fn diff(commit: &str, files: Vec<FileChange>) -> Diff {
    Diff {
        commit: commit.into(),
        files: Ok(files),
    }
}

/// What git would say about the fixture's merge commits.
fn fixture_changes(finished: bool) -> Changes {
    let mut changes = Changes::default();
    changes.units.insert(
        "t1".into(),
        diff(
            "1111111111222222222233333333334444444444",
            vec![file("src/t1.rs", 120, 0), file("src/lib.rs", 1, 0)],
        ),
    );
    changes.units.insert(
        "t2.1".into(),
        diff(
            "aaaaaaaaaabbbbbbbbbbccccccccccdddddddddd",
            vec![file("src/t2_1.rs", 80, 0)],
        ),
    );
    if finished {
        for unit in ["t2.2", "t2", "t3"] {
            let path = format!("src/{}.rs", unit.replace('.', "_"));
            changes.units.insert(
                unit.into(),
                diff(
                    "5555555555666666666677777777778888888888",
                    vec![file(&path, 60, 4)],
                ),
            );
        }
        changes.units.insert(
            "t2".into(),
            diff(
                "5555555555666666666677777777778888888888",
                vec![
                    file("src/t2.rs", 30, 2),
                    file("src/t2_1.rs", 80, 0),
                    file("src/t2_2.rs", 60, 4),
                    FileChange {
                        path: "assets/grammar.bin".into(),
                        added: None,
                        removed: None,
                    },
                ],
            ),
        );
    }
    changes.mission = Some(diff(
        if finished {
            "9999999999aaaaaaaaaabbbbbbbbbbcccccccccc"
        } else {
            "1111111111222222222233333333334444444444"
        },
        vec![file("src/t1.rs", 120, 0), file("src/lib.rs", 1, 0)],
    ));
    changes
}

#[test]
fn a_sealed_mission() {
    let events = sealed_mission();
    let view = MissionView::from_events(&events);
    insta::assert_snapshot!(render(&view, &events, &fixture_changes(true)));
}

#[test]
fn an_unfinished_mission() {
    let events = running_mission();
    let view = MissionView::from_events(&events);
    insta::assert_snapshot!(render(&view, &events, &fixture_changes(false)));
}

/// The sealed fixture with model-written text that would break a naive document.
fn hostile_mission() -> Vec<orchestrator_protocol::EventEnvelope> {
    use orchestrator_protocol::Event;
    let mut events = sealed_mission();
    for envelope in &mut events {
        match &mut envelope.event {
            Event::PlanAccepted { units, .. } => {
                units[0].title =
                    "# Tokens | pipes `and` ticks\"] --> x\n```\nsection evil : crit, 0, 9".into();
                units[0].description = "- step one\n```\n| a | b |".into();
            }
            Event::EvidenceRecorded {
                unit: Some(_),
                evidence,
            } if !evidence.passed() => {
                evidence.output_tail = "before\n```\nafter\n````".into();
            }
            _ => {}
        }
    }
    events
}

#[test]
fn model_written_text_cannot_break_the_document() {
    let events = hostile_mission();
    let view = MissionView::from_events(&events);
    let report = render(&view, &events, &fixture_changes(true));
    // The title stays inside its table row: eight cells, so nine unescaped `|`.
    let row = report
        .lines()
        .find(|l| l.starts_with("| `t1` "))
        .expect("t1's row in the per-unit table");
    let unescaped = row.match_indices('|').filter(|(i, _)| !row[..*i].ends_with('\\'));
    assert_eq!(unescaped.count(), 9, "{row}");
    // No line the model wrote opens a heading, list or code block.
    assert!(
        report.contains(
            "**\\# Tokens \\| pipes \\`and\\` ticks\"\\] --\\> x \\`\\`\\` section evil : crit, 0, 9**"
        ),
        "{report}"
    );
    assert!(
        report.contains("  \\- step one\n  \\`\\`\\`\n  \\| a \\| b \\|\n"),
        "{report}"
    );
    // Inside the diagrams the title is plain words: no quote, bracket, colon, fence or line break.
    assert!(
        report.contains("u0[\"t1 · Tokens pipes and ticks -- x section evil…\"]:::passed"),
        "{report}"
    );
    assert!(
        report.contains("  section t1 Tokens pipes and ticks -- x section evil…\n"),
        "{report}"
    );
    assert_eq!(report.matches("```mermaid").count(), 2);
    // Output with fences inside gets a longer fence.
    assert!(
        report.contains("`````text\nbefore\n```\nafter\n````\n`````\n"),
        "{report}"
    );
}

#[test]
fn the_pictures_as_svg_have_every_unit_and_match_its_state() {
    let view = MissionView::from_events(&running_mission());
    let pictures = orchestrator_report::pictures_svg(&view);
    let (graph, timeline) = (&pictures.graph, &pictures.timeline);
    insta::assert_snapshot!("graph_svg", graph);
    insta::assert_snapshot!("timeline_svg", timeline);
    insta::assert_snapshot!("usage_svg", pictures.usage);
    for role in view.roles.keys() {
        assert!(
            pictures.usage.contains(&format!("data-role=\"{role}\"")),
            "{role} in the usage chart"
        );
    }
    for unit in &view.units {
        let node = format!(
            "<g data-unit=\"{}\" data-state=\"{}\"><title>{} ",
            unit.id,
            unit.state.as_str(),
            unit.id
        );
        assert!(graph.contains(&node), "{} in the graph", unit.id);
        assert!(
            graph.contains(&format!(
                "{} · {}",
                unit.id,
                unit.state.as_str().replace('_', " ")
            )),
            "{}'s state in the graph",
            unit.id
        );
        let lane = format!(
            "<g data-unit=\"{}\" data-state=\"{}\">",
            unit.id,
            unit.state.as_str()
        );
        assert!(timeline.contains(&lane), "{} has a lane", unit.id);
    }
}

#[test]
fn the_html_report_is_self_contained_and_shows_no_markup_a_model_wrote() {
    use orchestrator_protocol::Event;
    let mut events = sealed_mission();
    for envelope in &mut events {
        if let Event::PlanAccepted { units, .. } = &mut envelope.event {
            units[0].title = "<img src=x onerror=alert(1)> <script>alert(2)</script>".into();
            units[0].description = "<iframe src=\"https://example.com\"></iframe>".into();
        }
    }
    let view = MissionView::from_events(&events);
    let html = orchestrator_report::render_html(&view, &events, &fixture_changes(true));
    assert!(html.starts_with("<!doctype html>"), "{html}");
    // Nothing to run and nothing to fetch: no element that runs, frames, loads or links.
    for markup in [
        "<img",
        "<script",
        "<iframe",
        "<link",
        "<a ",
        "<object",
        "<embed",
        "```mermaid",
    ] {
        let at = html
            .find(markup)
            .map(|i| &html[i.saturating_sub(200)..(i + 100).min(html.len())]);
        assert!(at.is_none(), "{markup} in the HTML: {at:?}");
    }
    assert!(
        html.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "shown as text"
    );
    assert_eq!(
        html.matches("<svg ").count(),
        2,
        "the graph and the timeline, inline"
    );
    assert!(html.contains("<table>"), "tables are tables");
}
