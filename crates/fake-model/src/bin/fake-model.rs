//! `fake-model`: the scripted fake model server as a program, for offline demos and benchmarks.
//!
//! Usage: `fake-model [--port N] [--latency-ms N] [--units N] [--models A,B]`. Prints its base URL, then
//! serves until killed. The scripted planner plans a small demo project of N units plus one that
//! depends on them. `--models` makes it serve only those models, as a strict server does.

use std::time::Duration;

use orchestrator_fake_model::script::{PlanUnit, Script, ScriptedMission};
use orchestrator_fake_model::{FakeOptions, FakeServer};

struct Args {
    port: u16,
    latency: Duration,
    units: usize,
    /// `--models a,b`: serve only these, as a strict server does (default: every name).
    models: Option<Vec<String>>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        port: 0,
        latency: Duration::ZERO,
        units: 3,
        models: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--port" => args.port = value()?.parse().map_err(|e| format!("--port: {e}"))?,
            "--latency-ms" => {
                args.latency =
                    Duration::from_millis(value()?.parse().map_err(|e| format!("--latency-ms: {e}"))?)
            }
            "--units" => args.units = value()?.parse().map_err(|e| format!("--units: {e}"))?,
            "--models" => args.models = Some(value()?.split(',').map(|m| m.trim().to_string()).collect()),
            "-h" | "--help" => {
                return Err("usage: fake-model [--port N] [--latency-ms N] [--units N] [--models A,B]".into())
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(args)
}

fn demo_script(units: usize) -> Script {
    let mut plan: Vec<PlanUnit> = (1..=units)
        .map(|i| {
            PlanUnit::new(
                &format!("part{i}"),
                &format!("Write part {i}"),
                &format!("FILE parts/part{i}.txt := part {i} of the demo\\n"),
                &[],
            )
        })
        .collect();
    let deps: Vec<String> = plan.iter().map(|u| u.id.clone()).collect();
    let deps: Vec<&str> = deps.iter().map(String::as_str).collect();
    plan.push(PlanUnit::new(
        "index",
        "Index the parts",
        "FILE parts/INDEX.md := # Parts\\nEvery part of the demo is in this folder.\\n",
        &deps,
    ));
    Script {
        plan,
        ..Script::default()
    }
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    let options = FakeOptions {
        latency: args.latency,
        models: args.models,
        ..FakeOptions::default()
    };
    let server =
        match FakeServer::start_on(ScriptedMission::new(demo_script(args.units)), options, args.port).await {
            Ok(server) => server,
            Err(e) => {
                eprintln!("cannot start the fake model server: {e}");
                std::process::exit(1);
            }
        };
    println!("{}", server.openai_base_url());
    let _ = tokio::signal::ctrl_c().await;
    server.shutdown().await;
}
