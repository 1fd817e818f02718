//! Lifecycle hooks (`[hooks]` in the config): commands run at mission start, after the plan, before a
//! unit merges and after the seal. Each runs with `bash -c`, confined like verification (it may write
//! only in the worktree of the role it stands for, if any, and its temp folder), with a timeout that
//! kills its whole process tree, its output kept as a bounded tail. It learns where it is from
//! `ORCHESTRATOR_*` variables and a JSON document on stdin.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use orchestrator_protocol::{HookKind, HookRun};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::config::{FileConfig, SandboxSettings};
use crate::error::{EngineError, Result};
use crate::verify::{run_confined, Confined, End};

/// A hook's time limit when the config gives none.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(120);
/// The longest time limit a hook may be given (a day): a bound, whatever the file says.
const MAX_HOOK_TIMEOUT_SECS: u64 = 86_400;
/// How much of a hook's output goes back to a worker or planner as the reason for a refusal.
const REASON_CHARS: usize = 3_000;

/// `[hooks]` as written in one config file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HooksFile {
    /// The time limit of every hook that sets none (default 120 s).
    pub timeout_secs: Option<u64>,
    pub mission_start: Option<HookFile>,
    pub after_plan: Option<HookFile>,
    pub before_merge: Option<HookFile>,
    pub after_seal: Option<HookFile>,
}

impl HooksFile {
    pub(crate) fn get(&self, kind: HookKind) -> Option<&HookFile> {
        match kind {
            HookKind::MissionStart => self.mission_start.as_ref(),
            HookKind::AfterPlan => self.after_plan.as_ref(),
            HookKind::BeforeMerge => self.before_merge.as_ref(),
            HookKind::AfterSeal => self.after_seal.as_ref(),
        }
    }
}

/// One hook as written: `before_merge = "make check"`, or
/// `before_merge = { command = "make check", timeout_secs = 600 }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookFile {
    pub command: String,
    pub timeout_secs: Option<u64>,
}

const HOOK_SHAPE: &str = "a hook is a command string, or a table { command = \"…\", timeout_secs = N }";

impl<'de> Deserialize<'de> for HookFile {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error;
        match toml::Value::deserialize(deserializer)? {
            toml::Value::String(command) => Ok(HookFile {
                command,
                timeout_secs: None,
            }),
            toml::Value::Table(mut table) => {
                let command = match table.remove("command") {
                    Some(toml::Value::String(command)) => command,
                    _ => {
                        return Err(D::Error::custom(format!(
                            "`command` is missing or not a string; {HOOK_SHAPE}"
                        )))
                    }
                };
                let timeout_secs = match table.remove("timeout_secs") {
                    None => None,
                    Some(toml::Value::Integer(secs)) => Some(u64::try_from(secs).map_err(|_| {
                        D::Error::custom(format!(
                            "`timeout_secs` is {secs}; it must be between 1 and {MAX_HOOK_TIMEOUT_SECS}"
                        ))
                    })?),
                    Some(_) => {
                        return Err(D::Error::custom(format!(
                            "`timeout_secs` is not a number; {HOOK_SHAPE}"
                        )))
                    }
                };
                if let Some(unknown) = table.keys().next() {
                    return Err(D::Error::custom(format!("unknown key `{unknown}`; {HOOK_SHAPE}")));
                }
                Ok(HookFile {
                    command,
                    timeout_secs,
                })
            }
            _ => Err(D::Error::custom(HOOK_SHAPE)),
        }
    }
}

/// One configured hook, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookCommand {
    pub command: String,
    pub timeout: Duration,
}

/// The configured hooks, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HookSettings {
    hooks: BTreeMap<HookKind, HookCommand>,
}

impl HookSettings {
    pub fn get(&self, kind: HookKind) -> Option<&HookCommand> {
        self.hooks.get(&kind)
    }
}

/// Merges `[hooks]` of `layer` over `into`: a hook a later file names replaces the earlier one whole.
pub(crate) fn merge_layer(into: &mut HooksFile, layer: HooksFile) {
    if layer.timeout_secs.is_some() {
        into.timeout_secs = layer.timeout_secs;
    }
    for (slot, given) in [
        (&mut into.mission_start, layer.mission_start),
        (&mut into.after_plan, layer.after_plan),
        (&mut into.before_merge, layer.before_merge),
        (&mut into.after_seal, layer.after_seal),
    ] {
        if given.is_some() {
            *slot = given;
        }
    }
}

/// The hooks the layers configure, each checked in the file that set it: a command that is empty or
/// a time limit out of range is refused, naming the key and the file.
pub(crate) fn resolve(layers: &[FileConfig], merged: &HooksFile) -> Result<HookSettings> {
    let place = |key: &str, found: &dyn Fn(&HooksFile) -> bool| {
        let layer = layers.iter().rev().find(|l| found(&l.hooks));
        match layer.and_then(|l| l.source.as_ref()) {
            Some(path) => format!("`{key}` in {}", path.display()),
            None => format!("`{key}` in the config"),
        }
    };
    let check_timeout = |secs: u64, key: &str, found: &dyn Fn(&HooksFile) -> bool| {
        if (1..=MAX_HOOK_TIMEOUT_SECS).contains(&secs) {
            return Ok(Duration::from_secs(secs));
        }
        Err(EngineError::Usage(format!(
            "{} is {secs}; a hook's time limit must be between 1 and {MAX_HOOK_TIMEOUT_SECS} seconds.",
            place(key, found)
        )))
    };
    let default = match merged.timeout_secs {
        Some(secs) => check_timeout(secs, "hooks.timeout_secs", &|h| h.timeout_secs.is_some())?,
        None => DEFAULT_HOOK_TIMEOUT,
    };
    let mut hooks = BTreeMap::new();
    for kind in HookKind::ALL {
        let Some(file) = merged.get(kind) else { continue };
        let key = format!("hooks.{kind}");
        let found = move |h: &HooksFile| h.get(kind).is_some();
        if file.command.trim().is_empty() {
            return Err(EngineError::Usage(format!(
                "{} is an empty command; give the command to run, or remove the key.",
                place(&key, &found)
            )));
        }
        let timeout = match file.timeout_secs {
            Some(secs) => check_timeout(secs, &format!("{key}.timeout_secs"), &found)?,
            None => default,
        };
        hooks.insert(
            kind,
            HookCommand {
                command: file.command.clone(),
                timeout,
            },
        );
    }
    Ok(HookSettings { hooks })
}

/// Where and on what one hook runs.
pub(crate) struct HookCall<'a> {
    pub kind: HookKind,
    /// Its working directory: a worktree of the mission, never the user's checkout.
    pub dir: &'a Path,
    /// Whether it may write in `dir` (the worktree of the role it stands for); else only its temp folder.
    pub writable: bool,
    pub mission: &'a str,
    pub unit: Option<&'a str>,
    pub attempt: Option<u32>,
    /// More `ORCHESTRATOR_*` variables (the base commit, the unit's branch, …).
    pub env: Vec<(&'static str, String)>,
    /// The JSON document on its stdin.
    pub input: serde_json::Value,
}

/// Runs one hook to its end, its time limit or a cancel. Never fails: a hook that cannot be
/// confined or started is a run that did not pass, saying why.
pub(crate) async fn run(
    hook: &HookCommand,
    call: HookCall<'_>,
    sandbox: &SandboxSettings,
    cancel: &CancellationToken,
) -> HookRun {
    let started = Instant::now();
    let mut record = HookRun {
        hook: call.kind,
        unit: call.unit.map(str::to_string),
        attempt: call.attempt,
        command: hook.command.clone(),
        exit_code: None,
        timed_out: false,
        duration_ms: 0,
        output_tail: String::new(),
    };
    let confined = match sandbox.sandbox(call.writable.then_some(call.dir)) {
        Ok(confined) => confined,
        Err(e) => {
            record.output_tail = format!("not run: the hook could not be confined ({e})");
            return record;
        }
    };
    let mut env = vec![
        ("ORCHESTRATOR_HOOK", call.kind.as_str().to_string()),
        ("ORCHESTRATOR_MISSION", call.mission.to_string()),
    ];
    if let Some(unit) = call.unit {
        env.push(("ORCHESTRATOR_UNIT", unit.to_string()));
    }
    if let Some(attempt) = call.attempt {
        env.push(("ORCHESTRATOR_ATTEMPT", attempt.to_string()));
    }
    env.extend(call.env);
    let ran = run_confined(Confined {
        command: &hook.command,
        dir: call.dir,
        timeout: hook.timeout,
        sandbox: &confined,
        cancel,
        env: &env,
        stdin: Some(call.input.to_string().into_bytes()),
    })
    .await;
    record.output_tail = ran.output_tail;
    match ran.end {
        End::Exited(code) => record.exit_code = code,
        End::TimedOut => {
            record.timed_out = true;
            record.output_tail = with_note(
                &record.output_tail,
                &format!("[killed after its {} s timeout]", hook.timeout.as_secs()),
            );
        }
        End::Cancelled => record.output_tail = with_note(&record.output_tail, "[cancelled]"),
        End::NotStarted(e) => record.output_tail = format!("could not start the hook: {e}"),
    }
    record.duration_ms = started.elapsed().as_millis() as u64;
    record
}

fn with_note(output: &str, note: &str) -> String {
    if output.trim().is_empty() {
        note.to_string()
    } else {
        format!("{}\n{note}", output.trim_end())
    }
}

/// What the hook said, bounded, for a worker or planner: the end of it, where the reason usually is.
fn reason(run: &HookRun) -> String {
    let text = run.output_tail.trim();
    if text.is_empty() {
        return "(it printed nothing)".into();
    }
    let count = text.chars().count();
    if count <= REASON_CHARS {
        return text.to_string();
    }
    let kept: String = text.chars().skip(count - REASON_CHARS).collect();
    format!("[… {} earlier characters cut]\n{kept}", count - REASON_CHARS)
}

/// The worker's feedback when `before_merge` vetoed its reviewed work. It starts like the other
/// stage 1 feedback, since the unit passed verification and review and is sent back all the same.
pub(crate) fn veto_feedback(run: &HookRun) -> String {
    format!(
        "Stage 1 passed, but the before_merge hook `{}` vetoed the merge ({}). What it said:\n{}\n\n\
         Address this in your worktree, then answer with a short summary.",
        run.command,
        run.status(),
        reason(run)
    )
}

/// The planner's feedback when `after_plan` refused its plan.
pub(crate) fn plan_feedback(run: &HookRun) -> String {
    format!(
        "The after_plan hook `{}` refused the plan ({}). What it said:\n{}",
        run.command,
        run.status(),
        reason(run)
    )
}

/// The refusal of a mission whose `mission_start` hook failed: nothing was started.
pub(crate) fn start_refused(run: &HookRun) -> EngineError {
    EngineError::Usage(format!(
        "the mission_start hook `{}` refused the mission ({}); nothing was started and no model was called.\n\
         What it said:\n{}\n\
         Fix what it reports, or change `[hooks] mission_start` in orchestrator.toml or your config.toml.",
        run.command,
        run.status(),
        reason(run)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(command: &str, secs: u64) -> HookCommand {
        HookCommand {
            command: command.into(),
            timeout: Duration::from_secs(secs),
        }
    }

    fn call(dir: &Path, writable: bool) -> HookCall<'_> {
        HookCall {
            kind: HookKind::BeforeMerge,
            dir,
            writable,
            mission: "m1",
            unit: Some("t1"),
            attempt: Some(2),
            env: vec![("ORCHESTRATOR_BRANCH", "orchestrator/m1/u/t1".into())],
            input: serde_json::json!({"unit": {"id": "t1", "description": "Add mul."}}),
        }
    }

    #[tokio::test]
    async fn a_hook_sees_its_context_and_writes_only_where_its_role_may() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let planted = outside.path().join("planted");
        let cancel = CancellationToken::new();
        let command = format!(
            "echo \"$ORCHESTRATOR_HOOK $ORCHESTRATOR_MISSION $ORCHESTRATOR_UNIT $ORCHESTRATOR_ATTEMPT $ORCHESTRATOR_BRANCH\"; \
             cat; echo; echo mine > mine.txt && echo x > {}",
            planted.display()
        );
        let run = run(
            &hook(&command, 30),
            call(dir.path(), true),
            &Default::default(),
            &cancel,
        )
        .await;
        assert!(!run.passed(), "the write outside fails: {run:?}");
        assert!(
            run.output_tail
                .contains("before_merge m1 t1 2 orchestrator/m1/u/t1"),
            "{}",
            run.output_tail
        );
        assert!(
            run.output_tail.contains(r#""description":"Add mul.""#),
            "{}",
            run.output_tail
        );
        assert!(
            dir.path().join("mine.txt").exists(),
            "its own worktree is writable"
        );
        assert!(!planted.exists());

        // A hook that stands for a role that only looks writes nowhere but its temp folder.
        let read_only = super::run(
            &hook("echo x > mine2.txt", 30),
            call(dir.path(), false),
            &Default::default(),
            &cancel,
        )
        .await;
        assert!(
            !read_only.passed() && read_only.exit_code == Some(1),
            "{read_only:?}"
        );
        assert!(!dir.path().join("mine2.txt").exists());
    }

    #[tokio::test]
    async fn a_hanging_hook_is_killed_with_everything_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let cancel = CancellationToken::new();
        let run = run(
            &hook(
                "echo waiting; setsid sleep 300 & echo $! > daemon.pid; sleep 300",
                1,
            ),
            call(dir.path(), true),
            &Default::default(),
            &cancel,
        )
        .await;
        assert!(run.timed_out && !run.passed(), "{run:?}");
        assert!(run.output_tail.starts_with("waiting"), "{}", run.output_tail);
        assert!(
            run.output_tail.ends_with("[killed after its 1 s timeout]"),
            "{}",
            run.output_tail
        );
        assert!(run.duration_ms < 60_000, "{}", run.duration_ms);
        let pid = std::fs::read_to_string(dir.path().join("daemon.pid")).unwrap();
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()));
        assert!(
            stat.is_err() || stat.is_ok_and(|s| s.contains(") Z")),
            "the daemon {pid} outlived its hook"
        );
        assert!(
            veto_feedback(&run).contains("(timed out after"),
            "{}",
            veto_feedback(&run)
        );
    }

    #[tokio::test]
    async fn a_flooding_hook_keeps_the_end_and_a_silent_one_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let cancel = CancellationToken::new();
        let run = run(
            &hook(
                "head -c 30000000 /dev/zero | tr '\\0' x; echo; echo THE END; exit 4",
                60,
            ),
            call(dir.path(), true),
            &Default::default(),
            &cancel,
        )
        .await;
        assert_eq!(run.exit_code, Some(4));
        assert!(run.output_tail.len() < 20_000, "{}", run.output_tail.len());
        assert!(run.output_tail.contains("earlier bytes"), "the cut is said");
        assert!(run.output_tail.ends_with("THE END\n"), "the end is kept");
        let feedback = veto_feedback(&run);
        assert!(
            feedback.starts_with("Stage 1 passed, but the before_merge hook"),
            "{feedback}"
        );
        assert!(
            feedback.contains("(exit 4)") && feedback.contains("THE END"),
            "{feedback}"
        );
        assert!(feedback.len() < REASON_CHARS + 1_000, "{}", feedback.len());

        // A hook that ignores its stdin (and a large one) is neither blocked nor failed by it.
        let mut quiet_call = call(dir.path(), true);
        quiet_call.input = serde_json::json!({"big": "y".repeat(1 << 20)});
        let quiet = super::run(&hook("exit 0", 30), quiet_call, &Default::default(), &cancel).await;
        assert!(quiet.passed(), "{quiet:?}");
        assert!(reason(&quiet).contains("printed nothing"));
    }

    fn layer(text: &str, source: &str) -> FileConfig {
        let mut layer: FileConfig = toml::from_str(text).unwrap();
        layer.source = Some(source.into());
        layer
    }

    fn resolved(layers: &[FileConfig]) -> Result<HookSettings> {
        let mut merged = HooksFile::default();
        for l in layers {
            merge_layer(&mut merged, l.hooks.clone());
        }
        resolve(layers, &merged)
    }

    #[test]
    fn hooks_are_strings_or_tables_and_bad_ones_name_their_file() {
        let user = layer(
            "[hooks]\ntimeout_secs = 30\nmission_start = \"true\"\nafter_seal = \"echo user\"\n",
            "/home/u/config.toml",
        );
        let repo = layer(
            "[hooks]\nbefore_merge = { command = \"make check\", timeout_secs = 600 }\nafter_seal = \"echo repo\"\n",
            "/r/orchestrator.toml",
        );
        let hooks = resolved(&[user.clone(), repo.clone()]).unwrap();
        assert_eq!(hooks.get(HookKind::MissionStart), Some(&hook("true", 30)));
        assert_eq!(hooks.get(HookKind::BeforeMerge), Some(&hook("make check", 600)));
        assert_eq!(hooks.get(HookKind::AfterSeal), Some(&hook("echo repo", 30)));
        assert_eq!(hooks.get(HookKind::AfterPlan), None);
        assert_eq!(
            resolved(&[]).unwrap(),
            HookSettings::default(),
            "no hooks unless configured"
        );

        let empty = layer("[hooks]\nafter_plan = \"  \"\n", "/r/orchestrator.toml");
        let error = resolved(&[user.clone(), empty]).unwrap_err().to_string();
        assert!(
            error.contains("`hooks.after_plan` in /r/orchestrator.toml is an empty command"),
            "{error}"
        );
        let zero = layer(
            "[hooks]\nafter_plan = { command = \"x\", timeout_secs = 0 }\n",
            "/r/orchestrator.toml",
        );
        let error = resolved(&[user, zero]).unwrap_err().to_string();
        assert!(
            error.contains("`hooks.after_plan.timeout_secs` in /r/orchestrator.toml is 0"),
            "{error}"
        );
        let huge = layer("[hooks]\ntimeout_secs = 100000\n", "/home/u/config.toml");
        assert!(resolved(&[huge])
            .unwrap_err()
            .to_string()
            .contains("`hooks.timeout_secs` in /home/u/config.toml"));

        for bad in [
            "[hooks]\nbefore_merge = 3\n",
            "[hooks]\nbefore_merge = { cmd = \"x\" }\n",
            "[hooks]\nbefore_merge = { command = \"x\", timeout = 3 }\n",
            "[hooks]\nbefore_merge = { command = \"x\", timeout_secs = -1 }\n",
            "[hooks]\nbefore_push = \"x\"\n",
        ] {
            assert!(toml::from_str::<FileConfig>(bad).is_err(), "{bad}");
        }
    }
}
