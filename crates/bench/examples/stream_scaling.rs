//! How the model clients' cost grows with the size of one streamed reply: a `write` tool call whose
//! arguments are N MiB, streamed by the fake model server in a few big deltas and delivered in
//! 16 KiB body chunks (what a real network does to a big event), timed through the real client.
//! Linear parsing shows as a steady MiB/s across sizes; a parser that re-reads what it buffered
//! shows as a rate that falls as the reply grows. First, an endless streamed reply under the default
//! limits: how long until the client gives up, and the process's peak memory by then (client and
//! fake server together). A program, not a test: nothing asserts a timing.
//!
//! ```sh
//! cargo run --release -p orchestrator-bench --example stream_scaling [-- --sizes 2,4,8,16 --repeat 3]
//! ```

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use orchestrator_bench::machine::Machine;
use orchestrator_fake_model::{Api, FakeOptions, FakeServer, Reply, SeenRequest};
use orchestrator_model::{AnthropicClient, ChatRequest, ClientConfig, Message, ModelClient, OpenAiClient};
use tokio_util::sync::CancellationToken;

/// The body chunk size the fake server writes: a TLS record is at most 16 KiB.
const CHUNK_BYTES: usize = 16 * 1024;

struct Args {
    sizes_mib: Vec<usize>,
    repeat: usize,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        sizes_mib: vec![2, 4, 8, 16],
        repeat: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--sizes" => {
                args.sizes_mib = value
                    .split(',')
                    .map(|s| s.trim().parse::<usize>())
                    .collect::<Result<_, _>>()
                    .context("--sizes")?
            }
            "--repeat" => args.repeat = value.parse::<usize>().context("--repeat")?.max(1),
            other => bail!("unknown argument `{other}` (use --sizes 2,4,8,16 and --repeat 3)"),
        }
    }
    Ok(args)
}

fn client(api: Api, base_url: String, max_reply_bytes: usize) -> Result<Box<dyn ModelClient>> {
    let mut config = ClientConfig::new(base_url, None);
    config.max_retries = 0;
    config.max_reply_bytes = max_reply_bytes;
    // The flood below repeats one piece: measured here is the size limit, not the loop watch.
    config.cut_loops = false;
    Ok(match api {
        Api::OpenAi => Box::new(OpenAiClient::new(config)?),
        Api::Anthropic => Box::new(AnthropicClient::new(config)?),
    })
}

fn request() -> ChatRequest {
    ChatRequest {
        cache_key: None,
        shared_head: 0,
        model: "fake-model".into(),
        system: String::new(),
        messages: vec![Message::user("write the big file")],
        tools: Vec::new(),
        max_tokens: 1024,
        temperature: None,
        tool_choice: Default::default(),
    }
}

/// The fastest of `repeat` calls for a reply whose tool arguments are `size` bytes.
async fn best_time(api: Api, size: usize, repeat: usize) -> Result<Duration> {
    let arguments = format!("{{\"path\":\"big.txt\",\"content\":\"{}\"}}", "x".repeat(size));
    let expected = arguments.len();
    let server = FakeServer::start(
        move |_: &SeenRequest| Reply::Chunked {
            reply: Box::new(Reply::ToolCalls {
                text: String::new(),
                calls: vec![("write".into(), arguments.clone())],
            }),
            bytes: CHUNK_BYTES,
        },
        FakeOptions::default(),
    )
    .await?;
    let base_url = match api {
        Api::OpenAi => server.openai_base_url(),
        Api::Anthropic => server.anthropic_base_url(),
    };
    // Room for the largest size measured (the default limit is 8 MiB).
    let client = client(
        api,
        base_url,
        (size + 1024).max(ClientConfig::new("", None).max_reply_bytes),
    )?;
    let mut best = Duration::MAX;
    for _ in 0..repeat {
        let started = Instant::now();
        let reply = client.chat(&request(), &CancellationToken::new()).await?;
        best = best.min(started.elapsed());
        let got = reply.tool_calls.first().map_or(0, |c| c.arguments.len());
        if got != expected {
            bail!("{api:?}: {got} bytes of arguments came back, {expected} were sent");
        }
    }
    server.shutdown().await;
    Ok(best)
}

/// The process's peak resident memory so far (`VmHWM`), in MiB.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmHWM:"))?.to_string();
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// An endless streamed reply under the default limits: how long until the call fails, and how.
async fn flood(api: Api) -> Result<(Duration, String)> {
    let server = FakeServer::start(
        |_: &SeenRequest| Reply::Flood {
            piece: "all work and no play makes a model repeat itself; ".repeat(20),
        },
        FakeOptions::default(),
    )
    .await?;
    let base_url = match api {
        Api::OpenAi => server.openai_base_url(),
        Api::Anthropic => server.anthropic_base_url(),
    };
    let client = client(api, base_url, ClientConfig::new("", None).max_reply_bytes)?;
    let started = Instant::now();
    let outcome = client.chat(&request(), &CancellationToken::new()).await;
    let elapsed = started.elapsed();
    server.shutdown().await;
    match outcome {
        Ok(_) => bail!("{api:?}: an endless reply came back as a reply"),
        Err(error) => Ok((elapsed, error.to_string())),
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let machine = Machine::detect(&std::env::current_exe()?);
    println!(
        "Measured {} on {} ({} CPUs, {:.1} GiB RAM, Linux {}), commit {}; best of {}.\n",
        machine.date,
        machine.cpu,
        machine.nproc,
        machine.ram_gib,
        machine.kernel,
        machine.commit,
        args.repeat
    );
    println!("| endless streamed text, default limits | time to fail | peak RSS of the process | error |");
    println!("|---|---:|---:|---|");
    for api in [Api::OpenAi, Api::Anthropic] {
        eprintln!("[stream-scaling] {api:?} flood");
        let (elapsed, error) = flood(api).await?;
        let error: String = error.chars().take(60).collect();
        println!(
            "| {api:?} | {:.2} s | {:.0} MiB | {error}… |",
            elapsed.as_secs_f64(),
            peak_rss_mib()
        );
    }
    println!();
    let sizes: Vec<String> = args.sizes_mib.iter().map(|s| format!("{s} MiB")).collect();
    println!("| streamed tool arguments | {} |", sizes.join(" | "));
    println!("|---|{}", "---:|".repeat(sizes.len()));
    for api in [Api::OpenAi, Api::Anthropic] {
        let mut cells = Vec::new();
        for &mib in &args.sizes_mib {
            eprintln!("[stream-scaling] {api:?} {mib} MiB");
            let time = best_time(api, mib << 20, args.repeat).await?;
            let rate = mib as f64 / time.as_secs_f64();
            cells.push(format!("{:.3} s ({rate:.0} MiB/s)", time.as_secs_f64()));
        }
        println!("| {api:?} | {} |", cells.join(" | "));
    }
    Ok(())
}
