//! `orchestrator report` on a real mission: the binary runs a scripted mission, then reports on it.

use super::support::*;
use orchestrator_fake_model::script::{PlanUnit, Script};

/// A repository whose tests fail until calc.txt says "good".
fn repo_with_a_check() -> TestRepo {
    TestRepo::new(&[
        ("orchestrator.toml", "[verify]\ntest = \"sh check.sh\"\n"),
        ("check.sh", "if [ -f calc.txt ]; then grep -q good calc.txt; fi\n"),
    ])
}

/// Three units: one fails its tests once, one splits off a child, one writes two lines.
fn script() -> Script {
    Script {
        plan: vec![
            PlanUnit::new("calc", "Calc", "FILE calc.txt := bad\nFIX calc.txt := good", &[]),
            PlanUnit::new("docs", "Docs | notes", "FILE docs/notes.md := one\\ntwo\\n", &[]),
            PlanUnit::new(
                "top",
                "Top",
                "SPAWN child :: FILE child.txt := c\nFILE top.txt := t",
                &[],
            ),
        ],
        ..Script::default()
    }
}

/// The section of `report` under `## heading`, up to the next `## `.
fn section<'a>(report: &'a str, heading: &str) -> &'a str {
    let start = report
        .find(&format!("\n## {heading}\n"))
        .unwrap_or_else(|| panic!("no section {heading}:\n{report}"));
    let rest = &report[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 3);
    &rest[..end]
}

/// The part of a section about one unit (its `### `id`` subsection).
fn unit_part<'a>(section: &'a str, unit: &str) -> &'a str {
    section
        .split("\n### ")
        .find(|part| part.starts_with(&format!("`{unit}` ")))
        .unwrap_or_else(|| panic!("no part for {unit}:\n{section}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_names_every_unit_its_files_evidence_and_tokens() {
    let repo = repo_with_a_check();
    let server = fake(script()).await;
    Run::task("Calc, docs and a split unit")
        .openai(&server)
        .run(&repo)
        .await
        .assert_code(0);

    let done = Run::cmd(&["report"]).run(&repo).await;
    done.assert_code(0);
    let report = &done.stdout;
    assert!(
        report.starts_with("# Mission report: Calc, docs and a split unit\n"),
        "{report}"
    );
    assert!(report.contains("**Sealed.**"), "{report}");

    let plan = section(report, "Plan");
    for unit in ["calc", "docs", "top", "top.1"] {
        assert!(
            plan.contains(&format!("- `{unit}` ")),
            "{unit} in the plan:\n{plan}"
        );
    }
    assert!(
        plan.contains("**Docs \\| notes**"),
        "the title is escaped:\n{plan}"
    );
    assert!(
        plan.contains("  - `top.1` "),
        "the child is under its parent:\n{plan}"
    );

    let changed = section(report, "What changed");
    assert!(
        unit_part(changed, "calc").contains("| `calc.txt` | 1 | 0 |"),
        "{changed}"
    );
    assert!(
        unit_part(changed, "docs").contains("| `docs/notes.md` | 2 | 0 |"),
        "{changed}"
    );
    let top = unit_part(changed, "top");
    assert!(
        top.contains("| `top.txt` |") && top.contains("| `child.txt` |"),
        "{top}"
    );
    assert!(
        unit_part(changed, "top.1").contains("Merged into `top`'s branch"),
        "{changed}"
    );
    let whole = changed
        .lines()
        .find(|l| l.starts_with("The whole mission"))
        .unwrap_or_default();
    assert!(whole.contains("(the result): 4 file(s)"), "{changed}");

    let evidence = section(report, "Evidence");
    let calc = unit_part(evidence, "calc");
    assert!(
        calc.contains("| 1 | test | `sh check.sh` | **failed** (exit 1) |"),
        "{calc}"
    );
    assert!(calc.contains("| 2 | test | `sh check.sh` | passed |"), "{calc}");
    assert!(
        evidence.contains("### Stage 2: the integrated branch"),
        "{evidence}"
    );

    let reviews = section(report, "Reviews");
    assert!(reviews.contains("### Master review"), "{reviews}");

    let tokens = section(report, "Tokens and cost");
    for role in ["scout", "planner", "worker", "reviewer", "master_reviewer"] {
        let row = tokens.lines().find(|l| l.starts_with(&format!("| {role} |")));
        let row = row.unwrap_or_else(|| panic!("no row for {role}:\n{tokens}"));
        assert!(!row.contains("| 0 | 0 | 0 |"), "{role} used tokens: {row}");
    }

    let timeline = section(report, "Timeline");
    assert!(timeline.contains("calc attempt 2"), "{timeline}");
    assert!(timeline.contains("mission sealed"), "{timeline}");

    // The pictures: every unit a passed node of the graph and a section of the Gantt chart, the
    // retried unit's first attempt marked.
    let pictures = section(report, "Pictures");
    assert_eq!(pictures.matches("```mermaid").count(), 2, "{pictures}");
    let units = plan.lines().filter(|l| l.trim_start().starts_with("- `")).count();
    assert_eq!(pictures.matches(":::passed").count(), units, "{pictures}");
    assert_eq!(pictures.matches("  section ").count(), units, "{pictures}");
    assert!(pictures.contains("work (attempt 2"), "{pictures}");
    assert!(pictures.contains(":crit, "), "{pictures}");

    let file = repo.home().join("report.html");
    let path = file.to_string_lossy().to_string();
    Run::cmd(&["report", "--html", "--output", &path])
        .run(&repo)
        .await
        .assert_code(0);
    let html = std::fs::read_to_string(&file).expect("the HTML report");
    assert!(html.starts_with("<!doctype html>"), "{html}");
    assert_eq!(
        html.matches("<svg ").count(),
        2,
        "the graph and the timeline inline"
    );
    assert_eq!(
        html.matches("<g data-unit=").count(),
        2 * units,
        "every unit in both"
    );
    assert!(
        !html.contains("<script") && !html.contains("```"),
        "nothing runs, no Mermaid left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_writes_a_file_and_never_overwrites_without_force() {
    let repo = TestRepo::new(&[]);
    let server = fake(Script {
        plan: vec![PlanUnit::file("a", "a.txt", "alpha")],
        ..Script::default()
    })
    .await;
    Run::task("One file")
        .openai(&server)
        .run(&repo)
        .await
        .assert_code(0);
    let stdout = Run::cmd(&["report"]).run(&repo).await;
    stdout.assert_code(0);

    let file = repo.home().join("report.md");
    let path = file.to_string_lossy().to_string();
    let written = Run::cmd(&["report", "--output", &path]).run(&repo).await;
    written.assert_code(0);
    assert!(
        written.stdout.contains("wrote the report of mission"),
        "{}",
        written.stdout
    );
    let content = std::fs::read_to_string(&file).expect("the report file");
    assert_eq!(content, stdout.stdout, "the file holds what stdout shows");

    std::fs::write(&file, "mine").expect("write");
    let refused = Run::cmd(&["report", "--output", &path]).run(&repo).await;
    refused.assert_code(2);
    assert!(refused.stderr.contains("--force"), "{}", refused.stderr);
    assert_eq!(std::fs::read_to_string(&file).ok().as_deref(), Some("mine"));

    Run::cmd(&["report", "--output", &path, "--force"])
        .run(&repo)
        .await
        .assert_code(0);
    assert_eq!(std::fs::read_to_string(&file).ok(), Some(stdout.stdout.clone()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_mission_id_lists_the_known_ones() {
    let repo = TestRepo::new(&[]);
    let server = fake(Script {
        plan: vec![PlanUnit::file("a", "a.txt", "alpha")],
        ..Script::default()
    })
    .await;
    Run::task("One file")
        .openai(&server)
        .run(&repo)
        .await
        .assert_code(0);
    let report = Run::cmd(&["report"]).run(&repo).await;
    let mission = report
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("| Mission | `"))
        .and_then(|rest| rest.split('`').next())
        .expect("the mission id in the facts table")
        .to_string();

    let named = Run::cmd(&["report", "--mission", &mission]).run(&repo).await;
    named.assert_code(0);
    assert_eq!(named.stdout, report.stdout);

    let unknown = Run::cmd(&["report", "--mission", "m-nope"]).run(&repo).await;
    unknown.assert_code(2);
    assert!(unknown.stderr.contains("no mission m-nope"), "{}", unknown.stderr);
    assert!(unknown.stderr.contains(&mission), "{}", unknown.stderr);
    assert!(unknown.stdout.is_empty());
}

#[tokio::test]
async fn a_repository_without_missions_is_a_usage_error() {
    let repo = TestRepo::new(&[]);
    let done = Run::cmd(&["report"]).run(&repo).await;
    done.assert_code(2);
    assert!(done.stderr.contains("no mission has run"), "{}", done.stderr);
    assert!(done.stdout.is_empty());

    let outside = tempfile::tempdir().expect("tempdir");
    let path = outside.path().to_string_lossy().to_string();
    let not_a_repo = Run::cmd(&["report", "--repo", &path]).run(&repo).await;
    not_a_repo.assert_code(2);
    assert!(
        not_a_repo.stderr.contains("not inside a git repository"),
        "{}",
        not_a_repo.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mission_stopped_by_its_budget_says_how_to_go_on() {
    let repo = TestRepo::new(&[]);
    let server = fake(script()).await;
    // Enough for discovery and the plan, not for every unit.
    Run::task("Stopped early")
        .arg("--budget-tokens")
        .arg("3000")
        .openai(&server)
        .run(&repo)
        .await
        .assert_code(1);
    let done = Run::cmd(&["report"]).run(&repo).await;
    done.assert_code(0);
    let report = &done.stdout;
    // Exit 1: not sealed, and the summary says how to go on.
    let outcome = report.lines().nth(2).unwrap_or_default();
    assert!(outcome.starts_with("**Not sealed.**"), "{report}");
    assert!(report.contains("orchestrator resume --budget-tokens"), "{report}");
    assert!(section(report, "Plan").contains("- `calc` "), "{report}");
    assert!(section(report, "Timeline").contains("token budget"), "{report}");
}
