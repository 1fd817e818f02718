//! A scripted "model" that plays every role of a mission, for end-to-end tests and offline demos.
//!
//! It tells roles apart by the first line of the system prompt (`# Role: worker`), and it acts on
//! directives written into unit descriptions, so a test states what each unit does in the plan itself:
//!
//! - `FILE <path> := <content>` — write the file (`\n` in content is a newline).
//! - `INSERT <path> := <text>` — add the text at the end of the file with `insert` (after the
//!   BASH commands, before the FILEs); `INSERT <path> after <n> := <text>` adds it after line n.
//! - `FIX <path> := <content>` — after feedback (a failed verification or review), write this instead.
//! - `SPAWN <title> :: <description>` — split the unit; ` ;; ` in the description separates lines, so
//!   a child's description can hold its own directives; ` ;;; ` becomes the child's ` ;; `, for deeper trees.
//! - `BADJSON` — make the first tool call with arguments that are not valid JSON.
//! - `BASH <command>` — run the command with the `bash` tool (before the files), as a hostile model
//!   would try an escape.
//! - `CALL <tool> <json arguments>` — call any tool by name (after the BASH commands, before the
//!   INSERTs and FILEs), e.g. a tool of the user's MCP servers: `CALL mcp__docs__echo {"text": "hi"}`.
//! - `ANSWER <text>` — the worker's final answer, instead of "Done: wrote …".
//! - `BIGFILE <path> <chars>` — write a file of that many filler characters (long conversations
//!   from short descriptions, to exercise context compaction).
//! - `CANDIDATE <n>: <directive>` — best of N: the directive applies only to candidate n (its brief
//!   has `# Candidate <n> of <m>`; a worker that is no candidate counts as candidate 1).
//! - `PICK <value> <reasons>` — best of N: what the comparing reviewer sends as `pick` (a number, or
//!   `none` to leave it out), one `PICK` per `submit_review` call in order, the last one repeated.
//! - `FAILS <n> <issue>` — in a specialist reviewer's prompt (the body of its role file, under the
//!   `# Specialist: <name>` line): it fails each unit (a master kind: the whole) n times with that
//!   issue, then passes; a specialist without it passes.
//!
//! Decisions are made from the conversation alone (no per-session memory), so any number of sessions
//! can run at once; only review and plan counters are shared.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::{json, Value};

use crate::{Brain, Reply, SeenMessage, SeenRequest};

/// One unit of the plan the scripted planner submits.
#[derive(Debug, Clone)]
pub struct PlanUnit {
    pub id: String,
    pub title: String,
    pub description: String,
    pub depends_on: Vec<String>,
    /// The files the plan says the unit changes (`files`; left out when empty).
    pub files: Vec<String>,
}

impl PlanUnit {
    pub fn new(id: &str, title: &str, description: &str, depends_on: &[&str]) -> Self {
        PlanUnit {
            id: id.into(),
            title: title.into(),
            description: description.into(),
            depends_on: depends_on.iter().map(|d| d.to_string()).collect(),
            files: Vec::new(),
        }
    }

    /// The same unit, planned to change `files`.
    pub fn with_files(mut self, files: &[&str]) -> Self {
        self.files = files.iter().map(|f| f.to_string()).collect();
        self
    }

    /// A unit that writes one file.
    pub fn file(id: &str, path: &str, content: &str) -> Self {
        PlanUnit::new(
            id,
            &format!("Create {path}"),
            &format!("FILE {path} := {content}"),
            &[],
        )
    }
}

/// What the scripted roles do.
#[derive(Debug, Clone, Default)]
pub struct Script {
    pub plan: Vec<PlanUnit>,
    /// Raw `submit_plan` arguments to send before the real plan (to exercise plan validation).
    pub bad_plans: Vec<Value>,
    /// The master reviewer fails this many times before passing (`usize::MAX`: never passes).
    pub master_failures: usize,
    /// `FILE`/`FIX` directives for the units a failed master review asks for.
    pub master_issue_description: String,
    /// Unit title → how many times its stage 1 review fails before passing.
    pub review_failures: HashMap<String, usize>,
    /// File → content a conflict resolver writes; files not listed get both sides kept (markers removed).
    pub resolutions: HashMap<String, String>,
}

/// The [`Brain`] that runs a [`Script`].
pub struct ScriptedMission {
    script: Script,
    counters: Mutex<Counters>,
}

#[derive(Default)]
struct Counters {
    reviews: HashMap<String, usize>,
    master_reviews: usize,
    /// `<specialist>:<unit title>` (master kind: `<specialist>:`) → reviews so far.
    specialist_reviews: HashMap<String, usize>,
}

/// The specialist reviewer a system prompt names (`# Specialist: <name>`), if any.
pub fn specialist_of(request: &SeenRequest) -> Option<&str> {
    request
        .system
        .lines()
        .find_map(|l| l.strip_prefix("# Specialist: "))
        .map(str::trim)
}

/// A specialist's `FAILS <n> <issue>` directive.
fn specialist_fails(request: &SeenRequest) -> Option<(usize, String)> {
    let line = request
        .system
        .lines()
        .find_map(|l| l.trim().strip_prefix("FAILS "))?;
    let (count, issue) = line.split_once(' ')?;
    Some((count.parse().ok()?, issue.trim().to_string()))
}

impl ScriptedMission {
    pub fn new(script: Script) -> Self {
        ScriptedMission {
            script,
            counters: Mutex::new(Counters::default()),
        }
    }

    fn counters(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.counters.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The role named by the `# Role: <name>` line of the system prompt: the first line natively; under
/// OpenCode the system prompt starts with OpenCode's own text, so the line is looked for anywhere.
pub fn role_of(request: &SeenRequest) -> &str {
    request
        .system
        .lines()
        .find_map(|l| l.strip_prefix("# Role: "))
        .map(str::trim)
        .unwrap_or("")
}

/// Orchestration tools as OpenCode offers them from an MCP server: `<server>_<tool>`.
const ORCHESTRATION_TOOLS: [&str; 3] = ["spawn", "submit_plan", "submit_review"];

/// Whether the request comes from OpenCode, told by tools only OpenCode offers. Its `write` tool
/// takes `{filePath, content}` instead of `{path, content}`.
pub fn is_opencode(request: &SeenRequest) -> bool {
    request.offers("todowrite") || request.offers("webfetch")
}

/// The offered tool that stands for `name`: the exact name when offered, else one ending in `_<name>`
/// (an MCP server's tool under OpenCode), else `name` itself.
fn offered_name(request: &SeenRequest, name: &str) -> String {
    if request.offers(name) {
        return name.to_string();
    }
    let suffix = format!("_{name}");
    request
        .tools
        .iter()
        .find(|t| t.ends_with(&suffix))
        .cloned()
        .unwrap_or_else(|| name.to_string())
}

/// The request as the script's roles read it: prefixed tool names and OpenCode's write arguments
/// mapped back to the protocol's names and shapes.
fn as_protocol(request: &SeenRequest, opencode: bool) -> SeenRequest {
    let mut request = request.clone();
    for message in &mut request.messages {
        if let SeenMessage::Assistant { tool_calls, .. } = message {
            for call in tool_calls {
                if let Some(tool) = ORCHESTRATION_TOOLS
                    .iter()
                    .find(|t| call.name != **t && call.name.ends_with(&format!("_{t}")))
                {
                    call.name = tool.to_string();
                }
                if opencode && call.name == "write" {
                    if let Ok(Value::Object(mut args)) = serde_json::from_str::<Value>(&call.arguments) {
                        if let Some(path) = args.remove("filePath") {
                            let content = args.remove("content").unwrap_or(Value::Null);
                            call.arguments = json!({"path": path, "content": content}).to_string();
                        }
                    }
                }
            }
        }
    }
    request
}

/// The reply in the names and shapes the request offers (the inverse of [`as_protocol`]).
fn as_offered(reply: Reply, request: &SeenRequest, opencode: bool) -> Reply {
    let Reply::ToolCalls { text, calls } = reply else {
        return reply;
    };
    let calls = calls
        .into_iter()
        .map(|(name, arguments)| {
            let arguments = match serde_json::from_str::<Value>(&arguments) {
                Ok(Value::Object(mut args)) if opencode && name == "write" => match args.remove("path") {
                    Some(path) => {
                        let content = args.remove("content").unwrap_or(Value::Null);
                        json!({"filePath": path, "content": content}).to_string()
                    }
                    None => arguments,
                },
                _ => arguments,
            };
            (offered_name(request, &name), arguments)
        })
        .collect();
    Reply::ToolCalls { text, calls }
}

/// The unit id a worker session builds, from its first message (`# Your unit: <id> — <title>`).
pub fn worker_unit(request: &SeenRequest) -> Option<String> {
    let line = request
        .first_user_text()
        .lines()
        .find(|l| l.starts_with("# Your unit: "))?;
    let rest = line.trim_start_matches("# Your unit: ");
    Some(rest.split(" — ").next().unwrap_or(rest).to_string())
}

impl Brain for ScriptedMission {
    fn respond(&self, request: &SeenRequest) -> Reply {
        if request.system.starts_with("You condense") {
            return compactor(request);
        }
        let opencode = is_opencode(request);
        let seen = as_protocol(request, opencode);
        let reply = self.play(&seen);
        as_offered(reply, request, opencode)
    }
}

impl ScriptedMission {
    fn play(&self, request: &SeenRequest) -> Reply {
        // A client that goes on after an accepted plan or review (OpenCode's agent loop) is told so.
        if submitted(request) {
            return Reply::Text("Submitted.".into());
        }
        match role_of(request) {
            "scout" => scout(request),
            "planner" => self.planner(request),
            "worker" => worker(request),
            "reviewer" => self.reviewer(request),
            "master_reviewer" => self.master(request),
            "conflict_resolver" => self.resolver(request),
            other => Reply::Text(format!("scripted model: unknown role `{other}`")),
        }
    }
}

/// Whether the conversation ends with an accepted `submit_plan` or `submit_review`.
fn submitted(request: &SeenRequest) -> bool {
    if !matches!(request.last_message(), Some(SeenMessage::Tool { .. })) {
        return false;
    }
    request
        .tool_results()
        .last()
        .is_some_and(|(call, content, is_error)| {
            !is_error
                && ((call.name == "submit_plan" && content.starts_with("Plan accepted"))
                    || (call.name == "submit_review" && content.starts_with("Review recorded")))
        })
}

/// A failing review's issue, with the `file` and `quote` the runtime asks of a unit that changed
/// files: the first added line of the diff in the reviewer's brief (one of 8 characters or more when
/// there is one). Without a diff, the issue alone.
fn grounded_issue(request: &SeenRequest, title: &str, description: &str) -> Value {
    // Sent back (a quote too short to confirm, in a tiny file), it looks again and says so: the same
    // call again would only be taken out of the conversation.
    let description = if first_of_session(request) {
        description.to_string()
    } else {
        format!("{description} (looked again)")
    };
    let mut issue = json!({"title": title, "description": description});
    let mut file = None;
    let mut first = None;
    for line in request.first_user_text().lines() {
        if let Some(path) = line.strip_prefix("+++ b/") {
            file = Some(path);
        } else if let (Some(path), Some(added)) = (file, line.strip_prefix('+')) {
            first.get_or_insert((path, added));
            if added.trim().chars().count() >= 8 {
                first = Some((path, added));
                break;
            }
        }
    }
    if let Some((path, added)) = first {
        issue["file"] = json!(path);
        issue["quote"] = json!(added);
    }
    issue
}

/// Whether this is a session's first request: its brief alone, nothing answered or sent back yet.
fn first_of_session(request: &SeenRequest) -> bool {
    request.assistant_turns() == 0
        && request
            .messages
            .iter()
            .filter(|m| matches!(m, SeenMessage::User { .. }))
            .count()
            <= 1
}

fn call(name: &str, arguments: Value) -> Reply {
    Reply::ToolCalls {
        text: String::new(),
        calls: vec![(name.to_string(), arguments.to_string())],
    }
}

fn scout(request: &SeenRequest) -> Reply {
    if request.tool_results().is_empty() {
        return call("list", json!({}));
    }
    let focus = request
        .first_user_text()
        .lines()
        .next()
        .unwrap_or("Focus: ?")
        .to_string();
    Reply::Text(format!(
        "Scout report. {focus}\nThe repository is small; nothing unusual."
    ))
}

impl ScriptedMission {
    fn planner(&self, request: &SeenRequest) -> Reply {
        let submitted = request
            .tool_results()
            .iter()
            .filter(|(c, _, _)| c.name == "submit_plan")
            .count();
        if let Some(bad) = self.script.bad_plans.get(submitted) {
            return call("submit_plan", bad.clone());
        }
        let tasks: Vec<Value> = self
            .script
            .plan
            .iter()
            .map(|u| {
                let mut task = json!({"id": u.id, "title": u.title, "description": u.description, "depends_on": u.depends_on});
                if !u.files.is_empty() {
                    task["files"] = json!(u.files);
                }
                task
            })
            .collect();
        call("submit_plan", json!({ "tasks": tasks }))
    }

    /// A specialist's verdict: fail while its `FAILS` count for `key` lasts, else pass.
    fn specialist(&self, request: &SeenRequest, name: &str, key: String) -> Reply {
        let fails = specialist_fails(request);
        let fail = {
            let mut counters = self.counters();
            let seen = counters.specialist_reviews.entry(key).or_default();
            *seen += usize::from(first_of_session(request));
            fails.as_ref().is_some_and(|(n, _)| *seen <= *n)
        };
        match fails.filter(|_| fail) {
            Some((_, issue)) => call(
                "submit_review",
                json!({"verdict": "fail", "summary": format!("the {name} specialist found a problem"),
                       "issues": [grounded_issue(request, &format!("{name}: {issue}"), &issue)]}),
            ),
            None => call(
                "submit_review",
                json!({"verdict": "pass", "summary": format!("the {name} specialist is satisfied")}),
            ),
        }
    }

    fn reviewer(&self, request: &SeenRequest) -> Reply {
        if request
            .first_user_text()
            .contains("# Candidates that passed verification: ")
        {
            return compare(request);
        }
        let title = request
            .first_user_text()
            .lines()
            .find_map(|l| l.strip_prefix("# The unit under review: "))
            .and_then(|l| l.split(" — ").nth(1))
            .unwrap_or("")
            .to_string();
        if let Some(name) = specialist_of(request) {
            return self.specialist(request, name, format!("{name}:{title}"));
        }
        let fail = {
            let mut counters = self.counters();
            let seen = counters.reviews.entry(title.clone()).or_default();
            // A review the runtime sent back is the same review, not the next one.
            *seen += usize::from(first_of_session(request));
            *seen <= self.script.review_failures.get(&title).copied().unwrap_or(0)
        };
        if fail {
            let issue = grounded_issue(request, "Fix the unit", "The scripted reviewer wants a fix.");
            return call(
                "submit_review",
                json!({"verdict": "fail", "summary": format!("{title} is not right yet"), "issues": [issue]}),
            );
        }
        // A unit that changed nothing is passed with what the reviewer read, as the runtime asks: the
        // test repositories' README.md, whose first line every one of them has.
        if request
            .first_user_text()
            .contains("(EMPTY: this unit changed no file")
        {
            return call(
                "submit_review",
                json!({"verdict": "pass", "summary": format!("{title} needs no change"),
                       "checked": [{"file": "README.md", "quote": "# test project"}]}),
            );
        }
        call(
            "submit_review",
            json!({"verdict": "pass", "summary": format!("{title} looks good")}),
        )
    }

    fn master(&self, request: &SeenRequest) -> Reply {
        if let Some(name) = specialist_of(request) {
            return self.specialist(request, name, format!("{name}:"));
        }
        let round = {
            let mut counters = self.counters();
            counters.master_reviews += 1;
            counters.master_reviews
        };
        if round <= self.script.master_failures {
            return call(
                "submit_review",
                json!({"verdict": "fail", "summary": "something is missing",
                       "issues": [{"title": format!("Missing piece {round}"),
                                   "description": self.script.master_issue_description}]}),
            );
        }
        call(
            "submit_review",
            json!({"verdict": "pass", "summary": "the objective is met"}),
        )
    }

    fn resolver(&self, request: &SeenRequest) -> Reply {
        if matches!(request.last_message(), Some(SeenMessage::Tool { .. })) {
            return Reply::Text("Conflicts resolved.".into());
        }
        let text = request.first_user_text();
        let files: Vec<String> = text
            .split("stopped on conflicts in: ")
            .nth(1)
            .and_then(|rest| rest.split(".\n").next())
            .map(|list| list.split(", ").map(str::to_string).collect())
            .unwrap_or_default();
        let mut calls = Vec::new();
        for file in files {
            match self.script.resolutions.get(&file) {
                Some(content) => calls.push((
                    "write".to_string(),
                    json!({"path": file, "content": content}).to_string(),
                )),
                None => {
                    let command =
                        format!("sed -i -e '/^<<<<<<< /d' -e '/^=======$/d' -e '/^>>>>>>> /d' '{file}'");
                    calls.push(("bash".to_string(), json!({ "command": command }).to_string()));
                }
            }
        }
        Reply::ToolCalls {
            text: String::new(),
            calls,
        }
    }
}

/// Best of N: the comparing reviewer sends the `PICK` directive for this call (the first passing
/// candidate when there is none) and passes the candidate it names.
fn compare(request: &SeenRequest) -> Reply {
    let first = request.first_user_text();
    let calls = request
        .tool_results()
        .iter()
        .filter(|(c, _, _)| c.name == "submit_review")
        .count();
    let picks = directives(first, "PICK");
    let chosen = picks.get(calls).or(picks.last()).copied();
    let passing: String = first
        .lines()
        .find_map(|l| l.strip_prefix("# Candidates that passed verification: "))
        .and_then(|list| list.split(',').next())
        .unwrap_or("1")
        .trim()
        .to_string();
    let (pick, reasons) = match chosen {
        Some(directive) => {
            let (pick, reasons) = directive.split_once(' ').unwrap_or((directive, "it is the best"));
            (pick.to_string(), reasons.to_string())
        }
        None => (passing, "the first one is fine".to_string()),
    };
    let mut arguments = json!({"verdict": "pass", "summary": reasons});
    if pick != "none" {
        arguments["pick"] = pick
            .parse::<u64>()
            .map(Value::from)
            .unwrap_or(Value::String(pick));
    }
    call("submit_review", arguments)
}

/// A worker acts out its unit's directives, one tool call per turn, then answers. What is done is read
/// from the conversation itself (earlier calls, and files a compaction summary lists), so the worker
/// picks up where it was after its older turns were summarised away.
fn worker(request: &SeenRequest) -> Reply {
    let first = request.first_user_text();
    let description = for_candidate(&unit_description(first), candidate_number(first));
    let feedback = request.messages.iter().rposition(is_feedback);
    let actions = match feedback {
        None => first_actions(&description),
        Some(_) => fix_actions(&description),
    };
    let since = feedback.unwrap_or(0);
    let paths = touched_paths(&actions);
    let next = actions
        .into_iter()
        .find(|action| !is_done(request, since, action));
    match next {
        Some((name, arguments)) => Reply::ToolCalls {
            text: String::new(),
            calls: vec![(name, arguments)],
        },
        None => match directives(&description, "ANSWER").first() {
            Some(answer) => Reply::Text(answer.to_string()),
            None => done_text(&paths),
        },
    }
}

/// What a model would say, not the directive text (whose `\n` escapes read badly in progress lines).
fn done_text(paths: &[String]) -> Reply {
    match paths {
        [] => Reply::Text("Done.".into()),
        _ => Reply::Text(format!("Done: wrote {}.", paths.join(", "))),
    }
}

/// The files a worker's actions write or edit, in order.
fn touched_paths(actions: &[(String, String)]) -> Vec<String> {
    let mut paths: Vec<String> = Vec::new();
    for (_, arguments) in actions {
        let path = serde_json::from_str::<serde_json::Value>(arguments)
            .ok()
            .and_then(|v| v.get("path").and_then(|p| p.as_str()).map(str::to_string));
        if let Some(path) = path.filter(|p| !paths.contains(p)) {
            paths.push(path);
        }
    }
    paths
}

/// A user message that sends the worker back to fix something (a failed verification or review).
fn is_feedback(message: &SeenMessage) -> bool {
    matches!(message, SeenMessage::User { text } if text.starts_with("Stage 1 "))
}

/// The runtime keeps big tool-call arguments short in the history ("[omitted from the history: …]"):
/// such a call to the same path is the one already made.
fn slimmed_same_path(history: &str, path: Option<&str>) -> bool {
    let Some(path) = path else { return false };
    history.contains("[omitted from the history:")
        && serde_json::from_str::<Value>(history)
            .ok()
            .and_then(|v| v.get("path").and_then(Value::as_str).map(|p| p == path))
            .unwrap_or(false)
}

/// Whether the conversation after message `since` already holds this action.
fn is_done(request: &SeenRequest, since: usize, action: &(String, String)) -> bool {
    let (name, arguments) = action;
    let path = serde_json::from_str::<Value>(arguments)
        .ok()
        .and_then(|v| v.get("path").and_then(Value::as_str).map(str::to_string));
    request.messages.iter().skip(since).any(|m| match m {
        SeenMessage::Assistant { tool_calls, .. } => tool_calls.iter().any(|c| {
            let same_call = c.arguments == *arguments
                || same_json(&c.arguments, arguments)
                || slimmed_same_path(&c.arguments, path.as_deref());
            // One spawn per unit; and invalid arguments come back from the client as `{}`, so a
            // BADJSON call (no path) matches that.
            let spawned = name == "spawn";
            let broken = path.is_none() && c.arguments == "{}";
            c.name == *name && (same_call || spawned || broken)
        }),
        SeenMessage::User { text } if text.starts_with("Summary of earlier work") => {
            path.as_deref().is_some_and(|p| text.contains(&format!("`{p}`")))
        }
        _ => false,
    })
}

/// Equal as JSON values (a client may re-serialise arguments with another key order).
fn same_json(a: &str, b: &str) -> bool {
    match (serde_json::from_str::<Value>(a), serde_json::from_str::<Value>(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// The scripted summariser lists the files the transcript wrote, which is what a worker needs. It
/// reads the engine's one-line call summaries (`[assistant calls write (id)] write a.txt`) and, failing
/// that, `"path":` arguments.
fn compactor(request: &SeenRequest) -> Reply {
    let text = request.first_user_text();
    let mut files: Vec<String> = Vec::new();
    let mut add = |path: String| {
        if !path.is_empty() && !files.contains(&path) {
            files.push(path);
        }
    };
    for line in text.lines().filter(|l| l.starts_with("[assistant calls write")) {
        if let Some((_, path)) = line.split_once("] write ") {
            add(path.trim().to_string());
        }
    }
    for part in text.split("\"path\":").skip(1) {
        add(part
            .trim_start()
            .trim_start_matches('"')
            .chars()
            .take_while(|c| *c != '"')
            .collect());
    }
    // An earlier summary in the transcript carries its list forward.
    for line in text.lines().filter(|l| l.contains("Files written so far: ")) {
        for path in line.split('`').skip(1).step_by(2) {
            add(path.to_string());
        }
    }
    let listed: Vec<String> = files.iter().map(|f| format!("`{f}`")).collect();
    Reply::Text(format!("Files written so far: {}.", listed.join(", ")))
}

/// Best of N: the candidate a worker is, from its brief's `# Candidate <n> of <m>` (1 otherwise).
fn candidate_number(first: &str) -> u32 {
    first
        .lines()
        .find_map(|l| l.strip_prefix("# Candidate "))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(1)
}

/// The description as candidate `number` acts on it: its own `CANDIDATE <n>:` lines (prefix off),
/// the other candidates' left out.
fn for_candidate(description: &str, number: u32) -> String {
    description
        .lines()
        .filter_map(|line| match line.trim().strip_prefix("CANDIDATE ") {
            Some(rest) => {
                let (n, directive) = rest.split_once(':')?;
                (n.trim().parse::<u32>().ok()? == number).then(|| directive.trim().to_string())
            }
            None => Some(line.to_string()),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The unit's description: the text after the `# Your unit:` heading, up to the next heading-less note.
fn unit_description(first: &str) -> String {
    let mut lines = first.lines().skip_while(|l| !l.starts_with("# Your unit: "));
    lines.next();
    lines.collect::<Vec<_>>().join("\n")
}

fn directives<'a>(description: &'a str, keyword: &str) -> Vec<&'a str> {
    let prefix = format!("{keyword} ");
    description
        .lines()
        .filter_map(|l| l.trim().strip_prefix(prefix.as_str()))
        .collect()
}

fn write_action(directive: &str) -> Option<(String, String)> {
    let (path, content) = directive.split_once(" := ")?;
    let content = content.replace("\\n", "\n");
    Some((
        "write".into(),
        json!({"path": path.trim(), "content": content}).to_string(),
    ))
}

/// `INSERT <path> [after <n>] := <text>`.
fn insert_action(directive: &str) -> Option<(String, String)> {
    let (target, text) = directive.split_once(" := ")?;
    let text = text.replace("\\n", "\n");
    let arguments = match target.trim().split_once(" after ") {
        Some((path, line)) => {
            json!({"path": path.trim(), "text": text, "after_line": line.trim().parse::<u64>().ok()?})
        }
        None => json!({"path": target.trim(), "text": text}),
    };
    Some(("insert".into(), arguments.to_string()))
}

fn first_actions(description: &str) -> Vec<(String, String)> {
    let mut actions = Vec::new();
    if description.lines().any(|l| l.trim() == "BADJSON") {
        actions.push(("write".to_string(), "{\"path\": \"broken".to_string()));
    }
    let spawns: Vec<Value> = directives(description, "SPAWN")
        .into_iter()
        .filter_map(|d| d.split_once(" :: "))
        .map(|(title, desc)| json!({"title": title.trim(), "description": unnest(desc)}))
        .collect();
    if !spawns.is_empty() {
        actions.push(("spawn".into(), json!({ "tasks": spawns }).to_string()));
    }
    // `BASH <command>`: a shell command, in order, before the files (a hostile model's attempts).
    actions.extend(
        directives(description, "BASH")
            .into_iter()
            .map(|command| ("bash".to_string(), json!({ "command": command }).to_string())),
    );
    actions.extend(directives(description, "CALL").into_iter().map(|call| {
        let (name, arguments) = call.trim().split_once(' ').unwrap_or((call.trim(), "{}"));
        (name.to_string(), arguments.trim().to_string())
    }));
    actions.extend(
        directives(description, "INSERT")
            .into_iter()
            .filter_map(insert_action),
    );
    actions.extend(
        directives(description, "FILE")
            .into_iter()
            .filter_map(write_action),
    );
    actions.extend(
        directives(description, "BIGFILE")
            .into_iter()
            .filter_map(big_write_action),
    );
    actions
}

/// `BIGFILE <path> <chars>`: a write of that many characters, in numbered lines of 80 (numbered,
/// so that no stretch of it repeats: the same line over and over is a reply fallen into a loop,
/// which clients cut off).
fn big_write_action(directive: &str) -> Option<(String, String)> {
    let (path, chars) = directive.trim().split_once(' ')?;
    let chars: usize = chars.trim().parse().ok()?;
    let filler = "x".repeat(71);
    let content: String = (0..)
        .flat_map(|n| format!("{n:08} {filler}\n").into_bytes())
        .take(chars)
        .map(char::from)
        .collect();
    Some((
        "write".into(),
        json!({"path": path.trim(), "content": content}).to_string(),
    ))
}

/// One level of nesting comes off a child's description: ` ;; ` becomes a line break, ` ;;; ` becomes ` ;; `.
fn unnest(description: &str) -> String {
    description.replace(" ;; ", "\n").replace(" ;;; ", " ;; ")
}

fn fix_actions(description: &str) -> Vec<(String, String)> {
    let fixes: Vec<_> = directives(description, "FIX")
        .into_iter()
        .filter_map(write_action)
        .collect();
    if fixes.is_empty() {
        directives(description, "FILE")
            .into_iter()
            .filter_map(write_action)
            .collect()
    } else {
        fixes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Api, SeenToolCall};

    fn request(system: &str, messages: Vec<SeenMessage>) -> SeenRequest {
        SeenRequest {
            seq: 0,
            api: Api::OpenAi,
            model: "m".into(),
            system: system.into(),
            messages,
            tools: vec![],
            stream: false,
            max_tokens: None,
            tool_choice: None,
            response_format: None,
            temperature: None,
            prompt: Vec::new(),
            prompt_cache_key: None,
        }
    }

    fn user(text: &str) -> SeenMessage {
        SeenMessage::User { text: text.into() }
    }

    #[test]
    fn worker_writes_files_then_answers_and_fixes_after_feedback() {
        let brain = ScriptedMission::new(Script::default());
        let first = "# Your unit: t1 — A\nFILE a.txt := one\\ntwo\nFIX a.txt := fixed\n";
        let reply = brain.respond(&request("# Role: worker\n...", vec![user(first)]));
        let arguments = match reply {
            Reply::ToolCalls { calls, .. } => {
                assert_eq!(calls[0].0, "write");
                assert!(calls[0].1.contains("one\\ntwo"), "{}", calls[0].1);
                calls[0].1.clone()
            }
            other => panic!("{other:?}"),
        };
        let call = SeenToolCall {
            id: "c1".into(),
            name: "write".into(),
            arguments,
        };
        let after = vec![
            user(first),
            SeenMessage::Assistant {
                text: String::new(),
                tool_calls: vec![call],
            },
            SeenMessage::Tool {
                call_id: "c1".into(),
                content: "ok".into(),
                is_error: false,
            },
        ];
        assert!(matches!(
            brain.respond(&request("# Role: worker", after.clone())),
            Reply::Text(_)
        ));
        let mut fix = after;
        fix.push(SeenMessage::Assistant {
            text: "done".into(),
            tool_calls: vec![],
        });
        fix.push(user("Stage 1 verification failed"));
        match brain.respond(&request("# Role: worker", fix)) {
            Reply::ToolCalls { calls, .. } => assert!(calls[0].1.contains("fixed")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_compacted_worker_goes_on_from_the_summary() {
        let brain = ScriptedMission::new(Script::default());
        let first = "# Your unit: t1 — A\nFILE a.txt := 1\nFILE b.txt := 2\n";
        let summary = brain.respond(&SeenRequest {
            system: "You condense the transcript".into(),
            ..request(
                "",
                vec![user(
                    "<transcript>{\"path\":\"a.txt\",\"content\":\"1\"}</transcript>",
                )],
            )
        });
        let Reply::Text(summary) = summary else {
            panic!("{summary:?}")
        };
        assert!(summary.contains("`a.txt`"), "{summary}");
        let compacted = vec![
            user(first),
            user(&format!("Summary of earlier work (…):\n\n{summary}")),
        ];
        match brain.respond(&request("# Role: worker", compacted)) {
            Reply::ToolCalls { calls, .. } => assert!(calls[0].1.contains("b.txt"), "{}", calls[0].1),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn spawn_directives_nest() {
        let actions =
            first_actions("SPAWN a :: SPAWN b :: FILE x := y ;;; FILE z := 1 ;; FILE w := 2\nFILE top := 1");
        assert_eq!(actions[0].0, "spawn");
        let args: Value = serde_json::from_str(&actions[0].1).unwrap();
        assert_eq!(
            args["tasks"][0]["description"],
            "SPAWN b :: FILE x := y ;; FILE z := 1\nFILE w := 2"
        );
        assert_eq!(actions[1].0, "write");
    }
}
