//! The Markdown report: the tables pasted into docs/benchmarks.md.

use std::fmt::Write as _;
use std::time::Duration;

use crate::mission::MissionRun;
use crate::Results;

/// The targets of issue 5.
pub const TARGET_RATIO: f64 = 1.10;
pub const TARGET_RSS_MB: f64 = 60.0;
pub const TARGET_STARTUP_MS: f64 = 100.0;

fn mb(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn secs(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64())
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**missed**"
    }
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    Some(values[values.len() / 2])
}

pub fn markdown(results: &Results) -> String {
    let mut out = String::new();
    let m = &results.machine;
    let _ = writeln!(out, "### Machine\n");
    let _ = writeln!(
        out,
        "- {}; {} × {} ({} logical CPUs), {:.1} GiB RAM, Linux {}",
        m.date, m.nproc, m.cpu, m.nproc, m.ram_gib, m.kernel
    );
    let _ = writeln!(
        out,
        "- load average before: {}; after: {}",
        m.load_before, results.load_after
    );
    let _ = writeln!(out, "- orchestrator built from commit {}", m.commit);
    let _ = writeln!(out, "- repositories in {} on {}", m.tmp_dir, m.tmp_fs);
    let _ = writeln!(out, "- command: `{}`", results.command);
    let _ = writeln!(
        out,
        "- each mission row is the median-wall run of {} (walls of every run in the raw JSON)\n",
        results.repeat
    );

    missions_table(&mut out, &results.missions);
    stages_table(&mut out, &results.missions);
    summary(&mut out, results);
    opencode_table(&mut out, results);
    out
}

fn missions_table(out: &mut String, runs: &[MissionRun]) {
    let _ = writeln!(out, "### Missions: N independent units, `--max-parallel N`\n");
    let _ = writeln!(
        out,
        "| N | latency | model calls | critical turns | ideal (s) | wall (s) | overhead (s) | ratio | start-up (ms) \
         | peak RSS (MB) | threads | CPU (s) | CPU/call (ms) | git+verify CPU (s) | events | events/s |"
    );
    let _ = writeln!(
        out,
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in runs {
        let ratio = r
            .overhead_ratio()
            .map(|x| format!("{x:.3}"))
            .unwrap_or_else(|| "–".into());
        let per_call = r
            .cpu_per_call()
            .map(|d| format!("{:.2}", ms(d)))
            .unwrap_or_else(|| "–".into());
        let _ = writeln!(
            out,
            "| {} | {} ms | {} | {} | {} | {} | {} | {} | {:.0} | {:.1} | {} | {} | {} | {} | {} | {:.0} |",
            r.scenario.units,
            r.scenario.latency.as_millis(),
            r.model_calls,
            r.critical_turns,
            secs(r.ideal),
            secs(r.usage.wall),
            secs(r.overhead()),
            ratio,
            ms(r.startup),
            mb(r.usage.peak_rss_kib),
            r.usage.peak_threads,
            secs(r.usage.own_cpu),
            per_call,
            secs(r.usage.children_cpu),
            r.events,
            r.events_per_sec(),
        );
    }
    let _ = writeln!(out);
}

fn stages_table(out: &mut String, runs: &[MissionRun]) {
    let _ = writeln!(
        out,
        "### Where the overhead goes (ms beyond the model latency each stage contains)\n"
    );
    let _ = writeln!(
        out,
        "| N | latency | start-up | discovery | planning | units | integration | finish | total |"
    );
    let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in runs {
        let s = &r.stages;
        let total =
            s.startup_ms + s.discovery_ms + s.planning_ms + s.units_ms + s.integration_ms + s.finish_ms;
        let _ = writeln!(
            out,
            "| {} | {} ms | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
            r.scenario.units,
            r.scenario.latency.as_millis(),
            s.startup_ms,
            s.discovery_ms,
            s.planning_ms,
            s.units_ms,
            s.integration_ms,
            s.finish_ms,
            total
        );
    }
    let _ = writeln!(out);
}

fn find(runs: &[MissionRun], units: usize, latency_ms: u128) -> Option<&MissionRun> {
    runs.iter()
        .find(|r| r.scenario.units == units && r.scenario.latency.as_millis() == latency_ms)
}

fn summary(out: &mut String, results: &Results) {
    let runs = &results.missions;
    let _ = writeln!(out, "### Against the targets\n");
    let _ = writeln!(out, "| measure | value | target | |");
    let _ = writeln!(out, "|---|---:|---:|---|");
    let largest = runs.iter().map(|r| r.scenario.units).max().unwrap_or(0);
    let slowest = runs
        .iter()
        .map(|r| r.scenario.latency.as_millis())
        .max()
        .unwrap_or(0);
    if let Some(r) = find(runs, largest, slowest) {
        if let Some(ratio) = r.overhead_ratio() {
            let _ = writeln!(
                out,
                "| overhead ratio, N = {largest}, {slowest} ms | {ratio:.3} | ≤ {TARGET_RATIO:.2} | {} |",
                met(ratio <= TARGET_RATIO)
            );
        }
    }
    let peak = runs
        .iter()
        .filter(|r| r.scenario.units == largest)
        .map(|r| mb(r.usage.peak_rss_kib))
        .fold(0.0, f64::max);
    if largest > 0 {
        let _ = writeln!(
            out,
            "| peak RSS at {largest} sessions (worst latency) | {peak:.1} MB | < {TARGET_RSS_MB:.0} MB | {} |",
            met(peak < TARGET_RSS_MB)
        );
    }
    let smallest = runs.iter().map(|r| r.scenario.units).min().unwrap_or(0);
    if largest > smallest {
        for latency in runs
            .iter()
            .map(|r| r.scenario.latency.as_millis())
            .collect::<std::collections::BTreeSet<_>>()
        {
            if let (Some(big), Some(small)) = (find(runs, largest, latency), find(runs, smallest, latency)) {
                let per =
                    (mb(big.usage.peak_rss_kib) - mb(small.usage.peak_rss_kib)) / (largest - smallest) as f64;
                let _ = writeln!(
                    out,
                    "| RSS per additional session ({smallest} → {largest}, {latency} ms) | {:.2} MB | | |",
                    per
                );
            }
        }
    }
    let startups = &results.startups_ms;
    if let Some(startup) = median(startups.clone()) {
        let (low, high) = startups
            .iter()
            .fold((f64::MAX, 0.0_f64), |(l, h), s| (l.min(*s), h.max(*s)));
        let _ = writeln!(
            out,
            "| start-up: spawn → first model request (median of all {} runs; {low:.0}–{high:.0}) | {startup:.0} ms | < {TARGET_STARTUP_MS:.0} ms | {} |",
            startups.len(),
            met(startup < TARGET_STARTUP_MS)
        );
    }
    if let Some(per_call) = median(runs.iter().filter_map(|r| r.cpu_per_call()).map(ms).collect()) {
        let _ = writeln!(
            out,
            "| orchestrator CPU per model call (median of rows) | {per_call:.2} ms | | |"
        );
    }
    for r in runs.iter().filter(|r| r.scenario.units == largest) {
        let _ = writeln!(
            out,
            "| store throughput under the {largest}-session load, {} ms (events written / wall) | {:.0} events/s | | |",
            r.scenario.latency.as_millis(),
            r.events_per_sec()
        );
    }
    for b in &results.store {
        let _ = writeln!(
            out,
            "| `Store::append_event` on {}, {} events from {} thread(s) | {:.0} events/s ({:.1} µs each) | | |",
            b.backend,
            b.events,
            b.threads,
            b.per_sec(),
            b.micros_per_event()
        );
    }
    if let Some(r) = &results.resume {
        let _ = writeln!(
            out,
            "| `resume` → first model request, {} stored tasks ({} events, {:.1} MB store) | {:.0} ms | | |",
            r.tasks,
            r.events,
            r.store_bytes as f64 / 1024.0 / 1024.0,
            ms(r.resume_to_first_request)
        );
        let _ = writeln!(
            out,
            "| peak RSS of the resumed mission ({} tasks, {} slots, killed {} s after its first request) | {:.1} MB | | |",
            r.tasks,
            crate::resume::FILL_PARALLEL,
            crate::resume::RESUMED_RUN.as_secs(),
            mb(r.resumed.peak_rss_kib)
        );
        let _ = writeln!(
            out,
            "| `status --json` with {} stored tasks | {:.0} ms | | |",
            r.tasks,
            ms(r.status_wall)
        );
    }
    let _ = writeln!(out);
}

fn opencode_table(out: &mut String, results: &Results) {
    let _ = writeln!(out, "### Reference: OpenCode's server\n");
    if results.opencode.is_empty() {
        let note = results.opencode_note.as_deref().unwrap_or("not run");
        let _ = writeln!(out, "Not measured here: {note}.\n");
        return;
    }
    let _ = writeln!(
        out,
        "| system | workload | latency | start-up (ms) | idle RSS (MB) | wall (s) | peak RSS (MB) | CPU (s) | model calls |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in &results.opencode {
        let s = &r.scenario;
        let workload = format!(
            "{} concurrent {} sessions{}",
            s.sessions,
            if s.tool_call { "one-tool-call" } else { "one-turn" },
            if s.snapshots {
                ", snapshots on"
            } else {
                ", snapshots off"
            }
        );
        let _ = writeln!(
            out,
            "| OpenCode {} `serve` | {workload} | {} ms | {:.0} | {:.1} | {} | {:.1} | {} | {} |",
            r.version,
            s.latency.as_millis(),
            ms(r.startup),
            mb(r.idle_rss_kib),
            secs(r.wall),
            mb(r.server.peak_rss_kib),
            secs(r.server.own_cpu),
            r.model_calls
        );
    }
    // The orchestrator's own row for the same fan-out: its largest mission at the same latency.
    let largest = results
        .missions
        .iter()
        .map(|r| r.scenario.units)
        .max()
        .unwrap_or(0);
    for r in results
        .missions
        .iter()
        .filter(|r| r.scenario.latency.is_zero() && r.scenario.units == largest)
    {
        let _ = writeln!(
            out,
            "| orchestrator | mission of {} units: each a worker with one tool call, a reviewer, a worktree, verification and a merge | 0 ms | {:.0} | – | {} | {:.1} | {} | {} |",
            r.scenario.units,
            ms(r.startup),
            secs(r.usage.wall),
            mb(r.usage.peak_rss_kib),
            secs(r.usage.own_cpu),
            r.model_calls
        );
    }
    let _ = writeln!(out);
    if let Some(note) = &results.opencode_note {
        let _ = writeln!(out, "Note: {note}.\n");
    }
}

/// Checks that `markdown` is a set of well-formed tables: every row of a table has its header's
/// number of cells, and there is at least one mission row. Used by the smoke test.
pub fn check_tables(markdown: &str) -> Result<usize, String> {
    let mut rows = 0;
    let mut columns: Option<usize> = None;
    for (i, line) in markdown.lines().enumerate() {
        if !line.starts_with('|') {
            columns = None;
            continue;
        }
        if !line.ends_with('|') {
            return Err(format!("line {}: a table row must end with `|`: {line}", i + 1));
        }
        let cells = line.matches('|').count() - 1;
        match columns {
            None => columns = Some(cells),
            Some(n) if n != cells => {
                return Err(format!(
                    "line {}: {cells} cells where the header has {n}: {line}",
                    i + 1
                ))
            }
            Some(_) => rows += 1,
        }
    }
    Ok(rows)
}
