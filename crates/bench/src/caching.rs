//! `--caching-units N`: what prompt caching saves on a mission of N independent units. The mission
//! runs against the fake model server, whose prompt cache reports cached tokens the way each API
//! does (see `orchestrator_fake_model::cache`), once per API with the cache hints on and once with
//! `[endpoint] prompt_cache = false`. Each run's tokens, summed from its `model_call` events, are
//! priced with public list-price ratios into input-token equivalents: what the provider bills,
//! per sealed unit, with the cache and as if nothing had been cached.

use std::fmt::Write as _;

use anyhow::{bail, Context, Result};
use orchestrator_fake_model::script::ScriptedMission;
use orchestrator_fake_model::{FakeOptions, FakeServer};
use orchestrator_protocol::{Event, TokenUsage};
use orchestrator_store::Store;
use serde::Serialize;

use crate::child::Watched;
use crate::mission::{independent_units, orchestrator_command, wait_with_timeout, OBJECTIVE};
use crate::repo::BenchRepo;

/// Public price ratios to the input price (USD per million tokens at the time of writing).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Ratios {
    /// The model whose list prices these are.
    pub model: &'static str,
    pub cache_read: f64,
    pub cache_write: f64,
    pub output: f64,
}

/// Claude Sonnet 4: $3 input, $0.30 cache reads, $3.75 cache writes (5 min), $15 output.
pub const ANTHROPIC: Ratios = Ratios {
    model: "claude-sonnet-4",
    cache_read: 0.1,
    cache_write: 1.25,
    output: 5.0,
};
/// GPT-4.1: $2 input, $0.50 cached input, $8 output; no charge for writing the cache.
pub const OPENAI: Ratios = Ratios {
    model: "gpt-4.1",
    cache_read: 0.25,
    cache_write: 1.0,
    output: 4.0,
};

impl Ratios {
    /// Input-token equivalents billed for `usage`.
    pub fn billed(&self, usage: &TokenUsage) -> f64 {
        usage.input_tokens as f64
            + usage.cache_read_tokens as f64 * self.cache_read
            + usage.cache_write_tokens as f64 * self.cache_write
            + usage.output_tokens as f64 * self.output
    }

    /// The same tokens with nothing cached: every input token at the input price.
    pub fn uncached(&self, usage: &TokenUsage) -> f64 {
        usage.prompt_tokens() as f64 + usage.output_tokens as f64 * self.output
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CachingRun {
    pub api: &'static str,
    /// Whether the requests carried the cache hints (`prompt_cache`).
    pub hints: bool,
    pub units: usize,
    pub calls: usize,
    pub usage: TokenUsage,
    pub ratios: Ratios,
}

impl CachingRun {
    pub fn billed_per_unit(&self) -> f64 {
        self.ratios.billed(&self.usage) / self.units.max(1) as f64
    }

    pub fn uncached_per_unit(&self) -> f64 {
        self.ratios.uncached(&self.usage) / self.units.max(1) as f64
    }
}

/// Runs the four missions (two APIs, hints on and off) of `units` units each.
pub async fn run_all(
    orchestrator: &std::path::Path,
    units: usize,
    progress: &dyn Fn(&str),
) -> Result<Vec<CachingRun>> {
    let mut runs = Vec::new();
    for api in ["openai", "anthropic"] {
        for hints in [true, false] {
            progress(&format!(
                "caching: {units} units on {api}, hints {}",
                on_off(hints)
            ));
            runs.push(run_one(orchestrator, api, hints, units).await?);
        }
    }
    Ok(runs)
}

fn on_off(hints: bool) -> &'static str {
    if hints {
        "on"
    } else {
        "off"
    }
}

async fn run_one(
    orchestrator: &std::path::Path,
    api: &'static str,
    hints: bool,
    units: usize,
) -> Result<CachingRun> {
    let repo = BenchRepo::new()?;
    let config_dir = repo.home().join(".config/orchestrator");
    std::fs::create_dir_all(&config_dir).context("cannot create the config folder")?;
    let config = format!("[endpoint]\nprompt_cache = {hints}\n");
    std::fs::write(config_dir.join("config.toml"), config).context("cannot write the config")?;
    let server = FakeServer::start(
        ScriptedMission::new(independent_units(units)),
        FakeOptions::default(),
    )
    .await
    .context("cannot start the fake model server")?;
    let mut command = orchestrator_command(orchestrator, &repo, &server)?;
    command.args(["task", OBJECTIVE, "--max-parallel", &units.to_string()]);
    if api == "anthropic" {
        command
            .args(["--provider", "anthropic"])
            .env("ANTHROPIC_BASE_URL", server.anthropic_base_url())
            .env("ANTHROPIC_API_KEY", "bench-key");
    }
    let usage = wait_with_timeout(Watched::spawn(command)?, std::time::Duration::from_secs(600)).await?;
    server.shutdown().await;
    if usage.exit_code != Some(0) {
        bail!("the {api} mission did not seal (exit {:?})", usage.exit_code);
    }
    let (calls, usage) = model_usage(&repo.store_path())?;
    Ok(CachingRun {
        api,
        hints,
        units,
        calls,
        usage,
        ratios: if api == "anthropic" { ANTHROPIC } else { OPENAI },
    })
}

/// Model calls and their summed usage in the latest mission of `store`.
fn model_usage(store: &std::path::Path) -> Result<(usize, TokenUsage)> {
    let store = Store::open_existing(store).context("cannot open the mission store")?;
    let Some(mission) = store.latest_mission()? else {
        bail!("the store holds no mission");
    };
    let mut total = TokenUsage::default();
    let mut calls = 0;
    for envelope in store.events_after(&mission.id, None)? {
        if let Event::ModelCall { usage, .. } = envelope.event {
            total.add(usage);
            calls += 1;
        }
    }
    Ok((calls, total))
}

/// The Markdown table of the runs.
pub fn markdown(runs: &[CachingRun]) -> String {
    let mut out = String::from(
        "| API (prices of) | cache hints | calls | plain input | cache read | cache write | output | \
         billed per unit, cached | billed per unit, uncached | saved |\n\
         |---|---|--:|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    for run in runs {
        let (billed, uncached) = (run.billed_per_unit(), run.uncached_per_unit());
        let saved = if uncached > 0.0 {
            1.0 - billed / uncached
        } else {
            0.0
        };
        let _ = writeln!(
            out,
            "| {} ({}) | {} | {} | {} | {} | {} | {} | {:.0} | {:.0} | {:.0}% |",
            run.api,
            run.ratios.model,
            on_off(run.hints),
            run.calls,
            run.usage.input_tokens,
            run.usage.cache_read_tokens,
            run.usage.cache_write_tokens,
            run.usage.output_tokens,
            billed,
            uncached,
            saved * 100.0
        );
    }
    out.push_str(
        "\nBilled tokens are input-token equivalents: plain input ×1, cache reads and writes and output \
         at their list price over the input price (Anthropic 0.1 / 1.25 / 5, OpenAI 0.25 / — / 4), over \
         all the mission's calls (scouts, planner, workers, reviewers), divided by the units sealed.\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn billing_weighs_each_kind() {
        let usage = TokenUsage {
            input_tokens: 100,
            output_tokens: 10,
            cache_read_tokens: 1000,
            cache_write_tokens: 200,
        };
        assert!((ANTHROPIC.billed(&usage) - (100.0 + 100.0 + 250.0 + 50.0)).abs() < 1e-9);
        assert!((ANTHROPIC.uncached(&usage) - (1300.0 + 50.0)).abs() < 1e-9);
        let table = markdown(&[CachingRun {
            api: "anthropic",
            hints: true,
            units: 2,
            calls: 3,
            usage,
            ratios: ANTHROPIC,
        }]);
        assert!(table.contains("| 250 | 675 | 63% |"), "{table}");
    }
}
