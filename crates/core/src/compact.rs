//! Context management, as pure decisions: how big a model's window is, how full a conversation is,
//! which older turns to summarise, how to ask for the summary and how to splice it in. No I/O and no
//! model calls here; the session makes the summary call with whatever model the config names.
//!
//! The first user message holds the task and is always kept verbatim, as are the most recent turns.
//! The conversation that results is valid for both APIs: a tool result never loses the assistant
//! message whose call it answers.

use std::ops::Range;

use orchestrator_model::{Message, ToolSpec};

/// The window assumed for a model no rule knows: small enough to be safe on most local servers.
pub const DEFAULT_CONTEXT_WINDOW: u64 = 32_768;

/// Added to each message's estimate for the role and framing tokens every API adds.
const MESSAGE_OVERHEAD_TOKENS: u64 = 4;

/// Summarising fewer tokens than this saves nothing: a summary costs about as much.
const MIN_SUMMARISED_TOKENS: u64 = 256;

/// Each item of the transcript sent for summary is cut to this many characters, so one huge tool
/// output cannot crowd out the rest (or overflow the summarising model).
const TRANSCRIPT_ITEM_CHARS: usize = 4_000;

/// How the summary starts in the compacted conversation.
pub const SUMMARY_PREFIX: &str =
    "Summary of earlier work (older turns of this session were condensed to save context):";

/// The system prompt for the summary call.
pub const SUMMARY_SYSTEM_PROMPT: &str = "You condense the transcript of an AI coding agent's work so the \
agent can continue with a shorter context. You write only the summary: no preamble, no advice, nothing \
invented. Keep exact file paths, identifiers, commands and error messages.";

/// A rule for a model family: how the name is matched and the window it gets.
enum Rule {
    Prefix(&'static str, u64),
    Contains(&'static str, u64),
}

/// Context windows by model family, most specific first. For local families, the conservative
/// native window (servers often run smaller ones; the config overrides).
const WINDOWS: &[Rule] = &[
    Rule::Prefix("gpt-4.1", 1_047_576),
    // GPT-5: 400k in all, of which up to 128k is output.
    Rule::Prefix("gpt-5", 272_000),
    Rule::Prefix("gpt-4o", 128_000),
    Rule::Prefix("chatgpt-4o", 128_000),
    Rule::Prefix("gpt-4-turbo", 128_000),
    Rule::Prefix("gpt-4-32k", 32_768),
    Rule::Prefix("gpt-4", 8_192),
    Rule::Prefix("gpt-3.5-turbo", 16_385),
    Rule::Prefix("gpt-oss", 131_072),
    Rule::Prefix("o1-mini", 128_000),
    Rule::Prefix("o1-preview", 128_000),
    Rule::Prefix("o1", 200_000),
    Rule::Prefix("o3", 200_000),
    Rule::Prefix("o4", 200_000),
    Rule::Prefix("claude", 200_000),
    Rule::Prefix("gemini", 1_048_576),
    Rule::Contains("codellama", 16_384),
    Rule::Contains("llama-4", 131_072),
    Rule::Contains("llama4", 131_072),
    Rule::Contains("llama-3.1", 131_072),
    Rule::Contains("llama3.1", 131_072),
    Rule::Contains("llama-3.2", 131_072),
    Rule::Contains("llama3.2", 131_072),
    Rule::Contains("llama-3.3", 131_072),
    Rule::Contains("llama3.3", 131_072),
    Rule::Contains("llama-3", 8_192),
    Rule::Contains("llama3", 8_192),
    Rule::Contains("llama-2", 4_096),
    Rule::Contains("llama2", 4_096),
    Rule::Contains("qwen3-coder", 262_144),
    Rule::Contains("qwq", 131_072),
    Rule::Contains("qwen", 32_768),
    Rule::Contains("devstral", 131_072),
    Rule::Contains("mistral-large", 131_072),
    Rule::Contains("mistral-medium", 131_072),
    Rule::Contains("magistral", 40_960),
    Rule::Contains("mixtral", 32_768),
    Rule::Contains("codestral", 32_768),
    Rule::Contains("mistral", 32_768),
    Rule::Contains("deepseek-coder-v2", 128_000),
    Rule::Contains("deepseek-coder", 16_384),
    Rule::Contains("deepseek", 128_000),
    Rule::Contains("gemma-3", 131_072),
    Rule::Contains("gemma3", 131_072),
    Rule::Contains("gemma", 8_192),
    Rule::Contains("phi-4", 16_384),
    Rule::Contains("phi4", 16_384),
    Rule::Contains("phi-3", 4_096),
    Rule::Contains("phi3", 4_096),
    Rule::Contains("command-r", 128_000),
];

/// The context window of `model`, in tokens, from its family; [`DEFAULT_CONTEXT_WINDOW`] for
/// unknown models. Provider prefixes (`openai/gpt-4.1`, `Qwen/Qwen2.5-Coder-32B`) and Ollama tags
/// (`qwen2.5-coder:32b`) are understood.
pub fn context_window_for(model: &str) -> u64 {
    let lower = model.trim().to_ascii_lowercase();
    let name = lower.rsplit('/').next().unwrap_or(&lower);
    WINDOWS
        .iter()
        .find_map(|rule| match rule {
            Rule::Prefix(prefix, window) => name.starts_with(prefix).then_some(*window),
            Rule::Contains(part, window) => name.contains(part).then_some(*window),
        })
        .unwrap_or(DEFAULT_CONTEXT_WINDOW)
}

/// A token estimate for text: a quarter of its characters, rounded up.
pub fn estimate_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

/// A token estimate for one message, tool calls and results included.
pub fn message_tokens(message: &Message) -> u64 {
    let content = match message {
        Message::User { content } => estimate_tokens(content),
        Message::Assistant { content, tool_calls } => {
            estimate_tokens(content)
                + tool_calls
                    .iter()
                    .map(|c| estimate_tokens(&c.name) + estimate_tokens(&c.arguments))
                    .sum::<u64>()
        }
        Message::Tool { content, .. } => estimate_tokens(content),
    };
    content + MESSAGE_OVERHEAD_TOKENS
}

fn messages_tokens(messages: &[Message]) -> u64 {
    messages.iter().map(message_tokens).sum()
}

/// How many input tokens the next call will take: the exact count the API reported for the last
/// call, plus an estimate for the messages added since. Without a report (or after the conversation
/// shrank), everything is estimated.
#[derive(Debug, Clone, Default)]
pub struct ContextEstimator {
    /// (messages sent in the last call, the input tokens the API reported for it).
    last: Option<(usize, u64)>,
}

impl ContextEstimator {
    pub fn new() -> Self {
        ContextEstimator::default()
    }

    /// Records a finished call: it sent the first `messages_len` messages and the API reported
    /// `reported_input_tokens`. A report of 0 (a server that does not count) is ignored.
    pub fn observe(&mut self, messages_len: usize, reported_input_tokens: u64) {
        if reported_input_tokens > 0 {
            self.last = Some((messages_len, reported_input_tokens));
        }
    }

    /// Forgets the last report; call it after the conversation is compacted.
    pub fn reset(&mut self) {
        self.last = None;
    }

    pub fn estimate(&self, messages: &[Message], system: &str, tools: &[ToolSpec]) -> u64 {
        match self.last {
            Some((sent, reported)) if sent <= messages.len() => reported + messages_tokens(&messages[sent..]),
            _ => estimate_tokens(system) + tools_tokens(tools) + messages_tokens(messages),
        }
    }
}

fn tools_tokens(tools: &[ToolSpec]) -> u64 {
    tools
        .iter()
        .map(|t| {
            estimate_tokens(&t.name)
                + estimate_tokens(&t.description)
                + estimate_tokens(&t.parameters.to_string())
        })
        .sum()
}

/// Which messages a compaction summarises and which it keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactionPlan {
    /// The first user message (the task): it, and anything before it, is kept verbatim.
    pub task: usize,
    /// The messages replaced by the summary: `task + 1 .. keep_from`.
    pub summarise: Range<usize>,
    /// Where the kept recent messages start: always a user or assistant message.
    pub keep_from: usize,
    pub summarised_tokens: u64,
    pub kept_tokens: u64,
}

/// Plans a compaction that keeps about `keep_recent_tokens` of the most recent messages verbatim
/// (never fewer than the last turn: the latest user message, or the latest assistant message with
/// its tool results) and summarises everything between the task and them. `None` when there is
/// nothing worth summarising.
pub fn plan_compaction(messages: &[Message], keep_recent_tokens: u64) -> Option<CompactionPlan> {
    let task = messages.iter().position(|m| matches!(m, Message::User { .. }))?;
    // The last turn starts at the last message that is not a tool result.
    let last_turn = (task + 1..messages.len())
        .rev()
        .find(|&i| !matches!(messages[i], Message::Tool { .. }))?;
    let mut keep_from = last_turn;
    let mut kept_tokens = messages_tokens(&messages[last_turn..]);
    // Extend the kept part backwards a whole turn at a time while it fits.
    let mut i = last_turn;
    let mut turn_tokens = 0;
    while i > task + 1 {
        i -= 1;
        turn_tokens += message_tokens(&messages[i]);
        if matches!(messages[i], Message::Tool { .. }) {
            continue;
        }
        if kept_tokens + turn_tokens > keep_recent_tokens {
            break;
        }
        kept_tokens += turn_tokens;
        turn_tokens = 0;
        keep_from = i;
    }
    let summarise = task + 1..keep_from;
    let summarised_tokens = messages_tokens(&messages[summarise.clone()]);
    if summarise.is_empty() || summarised_tokens < MIN_SUMMARISED_TOKENS {
        return None;
    }
    Some(CompactionPlan {
        task,
        summarise,
        keep_from,
        summarised_tokens,
        kept_tokens,
    })
}

/// The messages to send (with [`SUMMARY_SYSTEM_PROMPT`]) to the model that writes the summary.
pub fn summary_request(plan: &CompactionPlan, messages: &[Message]) -> Vec<Message> {
    let task = match messages.get(plan.task) {
        Some(Message::User { content }) => truncate_for_context(content, TRANSCRIPT_ITEM_CHARS, None),
        _ => String::new(),
    };
    let range = plan.summarise.start.min(messages.len())..plan.summarise.end.min(messages.len());
    let transcript: Vec<String> = messages[range].iter().map(transcript_item).collect();
    let text = format!(
        "Summarise the transcript below: the earlier part of an agent's session working on the task \
         shown first. The summary replaces the transcript in the agent's context, so it must keep \
         everything the agent still needs:\n\
         - decisions made, and why;\n\
         - files read, created or changed (with paths), and what changed;\n\
         - commands run and their outcome; what was tried and failed, and why;\n\
         - open problems, errors not yet fixed, and what the agent was about to do next.\n\
         Leave out what no longer matters. Do not restate the task.\n\n\
         <task>\n{task}\n</task>\n\n<transcript>\n{}\n</transcript>",
        transcript.join("\n\n")
    );
    vec![Message::user(text)]
}

/// One message of the transcript as text.
fn transcript_item(message: &Message) -> String {
    let cut = |text: &str| truncate_for_context(text, TRANSCRIPT_ITEM_CHARS, None);
    match message {
        Message::User { content } => format!("[user]\n{}", cut(content)),
        Message::Assistant { content, tool_calls } => {
            let mut parts = Vec::new();
            if !content.is_empty() {
                parts.push(format!("[assistant]\n{}", cut(content)));
            }
            // The one-line summary comes first: a long argument (a file's content) is cut, and the
            // path it was written to must survive the cut.
            parts.extend(tool_calls.iter().map(|c| {
                let args = serde_json::from_str(&c.arguments).unwrap_or(serde_json::Value::Null);
                let what = orchestrator_tools::summarize_call(&c.name, &args);
                format!(
                    "[assistant calls {} ({})] {what}\n{}",
                    c.name,
                    c.id,
                    cut(&c.arguments)
                )
            }));
            parts.join("\n")
        }
        Message::Tool {
            call_id,
            content,
            is_error,
        } => {
            let kind = if *is_error { "error from" } else { "result of" };
            format!("[{kind} {call_id}]\n{}", cut(content))
        }
    }
}

/// The conversation with the planned range replaced by one user message holding `summary`: the
/// task, the summary, then the kept recent messages. A plan that does not fit `messages` (stale)
/// leaves them unchanged. Tool results whose call is not in the result are dropped, so the
/// conversation stays valid for both APIs. Everything up to the task is kept byte for byte: with
/// the tools and system prompt, it is the prefix the provider's prompt cache already holds.
pub fn apply_compaction(messages: &[Message], plan: &CompactionPlan, summary: &str) -> Vec<Message> {
    let fits = plan.task < messages.len()
        && matches!(messages[plan.task], Message::User { .. })
        && plan.task < plan.keep_from
        && plan.keep_from <= messages.len();
    if !fits {
        return messages.to_vec();
    }
    let mut compacted: Vec<Message> = messages[..=plan.task].to_vec();
    compacted.push(Message::user(format!("{SUMMARY_PREFIX}\n\n{}", summary.trim())));
    compacted.extend(messages[plan.keep_from..].iter().cloned());
    drop_orphan_results(compacted)
}

/// Removes tool results that answer no call of an earlier assistant message.
fn drop_orphan_results(messages: Vec<Message>) -> Vec<Message> {
    let mut calls: Vec<String> = Vec::new();
    messages
        .into_iter()
        .filter(|message| match message {
            Message::Assistant { tool_calls, .. } => {
                calls.extend(tool_calls.iter().map(|c| c.id.clone()));
                true
            }
            Message::Tool { call_id, .. } => calls.contains(call_id),
            Message::User { .. } => true,
        })
        .collect()
}

/// `output` cut to about `max_chars`: its head and its tail, with a note in between saying how much
/// was left out and, if given, where the whole output is kept (for the model to `read`). Cuts fall
/// on line breaks where one is near. Output that fits is returned unchanged.
pub fn truncate_for_context(output: &str, max_chars: usize, full_output_path: Option<&str>) -> String {
    let chars: Vec<char> = output.chars().collect();
    if chars.len() <= max_chars {
        return output.to_string();
    }
    // The note's length depends on the numbers in it; sizing it for the largest keeps the total
    // within `max_chars`.
    let budget = max_chars.saturating_sub(note(chars.len(), chars.len(), full_output_path).chars().count());
    let head_end = snap_back(&chars, budget / 2);
    let tail_start = snap_forward(&chars, chars.len() - (budget - budget / 2)).max(head_end);
    let omitted = &chars[head_end..tail_start];
    let lines = omitted.iter().filter(|c| **c == '\n').count();
    let mut text: String = chars[..head_end].iter().collect();
    text.push_str(&note(omitted.len(), lines, full_output_path));
    text.extend(&chars[tail_start..]);
    text
}

fn note(omitted: usize, lines: usize, path: Option<&str>) -> String {
    match path {
        Some(path) => format!(
            "\n[... {omitted} characters ({lines} lines) left out here; the whole output is in {path}: read it for the rest ...]\n"
        ),
        None => format!("\n[... {omitted} characters ({lines} lines) left out here ...]\n"),
    }
}

/// Moves a cut at `at` back to just after a line break, if one is within the last quarter.
fn snap_back(chars: &[char], at: usize) -> usize {
    let window = at / 4;
    (at.saturating_sub(window)..at)
        .rev()
        .find(|&i| chars[i] == '\n')
        .map_or(at, |i| i + 1)
}

/// Moves a cut at `at` forward to just after a line break, if one is within the next quarter.
fn snap_forward(chars: &[char], at: usize) -> usize {
    let window = (chars.len() - at) / 4;
    (at..(at + window).min(chars.len()))
        .find(|&i| chars[i] == '\n')
        .map_or(at, |i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use orchestrator_model::ToolCall;

    fn user(text: &str) -> Message {
        Message::user(text)
    }

    fn assistant(text: &str) -> Message {
        Message::Assistant {
            content: text.into(),
            tool_calls: vec![],
        }
    }

    fn calling(id: &str, arguments: &str) -> Message {
        Message::Assistant {
            content: String::new(),
            tool_calls: vec![ToolCall {
                id: id.into(),
                name: "read".into(),
                arguments: arguments.into(),
            }],
        }
    }

    fn result(id: &str, content: &str) -> Message {
        Message::Tool {
            call_id: id.into(),
            content: content.into(),
            is_error: false,
        }
    }

    /// A session: the task, then `turns` rounds of a call and a ~250-token result.
    fn session(turns: usize) -> Vec<Message> {
        let mut messages = vec![user("# Task\nBuild the thing.")];
        for i in 0..turns {
            let id = format!("c{i}");
            messages.push(calling(&id, &format!("{{\"path\":\"f{i}.rs\"}}")));
            messages.push(result(&id, &"x".repeat(1000)));
        }
        messages
    }

    /// The checks both APIs make: the first message is the user's, and every tool result follows
    /// the assistant message that made its call.
    fn assert_valid(messages: &[Message]) {
        assert!(matches!(messages.first(), Some(Message::User { .. })));
        let mut open: Vec<&str> = Vec::new();
        for message in messages {
            match message {
                Message::Assistant { tool_calls, .. } => {
                    open = tool_calls.iter().map(|c| c.id.as_str()).collect();
                }
                Message::Tool { call_id, .. } => {
                    assert!(open.contains(&call_id.as_str()), "orphan result {call_id}");
                }
                Message::User { .. } => open.clear(),
            }
        }
    }

    #[test]
    fn windows_by_family() {
        assert_eq!(context_window_for("gpt-4.1"), 1_047_576);
        assert_eq!(context_window_for("gpt-4.1-mini"), 1_047_576);
        assert_eq!(context_window_for("openai/gpt-4o-mini"), 128_000);
        assert_eq!(context_window_for("gpt-4"), 8_192);
        assert_eq!(context_window_for("o3-mini"), 200_000);
        assert_eq!(context_window_for("o1-mini"), 128_000);
        assert_eq!(context_window_for("claude-sonnet-4-5-20250929"), 200_000);
        assert_eq!(context_window_for("anthropic/claude-3.5-sonnet"), 200_000);
        assert_eq!(context_window_for("llama3.1:8b"), 131_072);
        assert_eq!(context_window_for("meta-llama/Meta-Llama-3-8B-Instruct"), 8_192);
        assert_eq!(context_window_for("Qwen/Qwen2.5-Coder-32B-Instruct"), 32_768);
        assert_eq!(context_window_for("qwen3-coder:30b"), 262_144);
        assert_eq!(context_window_for("mistral:7b"), 32_768);
        assert_eq!(context_window_for("deepseek-coder:6.7b"), 16_384);
        assert_eq!(context_window_for("deepseek-r1:14b"), 128_000);
        assert_eq!(context_window_for("gemma3:12b"), 131_072);
        assert_eq!(context_window_for("gemma2:9b"), 8_192);
        assert_eq!(context_window_for("fake-model"), DEFAULT_CONTEXT_WINDOW);
        assert_eq!(context_window_for(""), DEFAULT_CONTEXT_WINDOW);
    }

    #[test]
    fn estimates_round_up() {
        assert_eq!(estimate_tokens(""), 0);
        assert_eq!(estimate_tokens("abc"), 1);
        assert_eq!(estimate_tokens("abcde"), 2);
        assert_eq!(estimate_tokens("héllo wörld!"), 3, "characters, not bytes");
        assert_eq!(message_tokens(&user("abcd")), 1 + MESSAGE_OVERHEAD_TOKENS);
        assert_eq!(
            message_tokens(&calling("c", "{}")),
            1 + 1 + MESSAGE_OVERHEAD_TOKENS,
            "call name and arguments count"
        );
    }

    #[test]
    fn the_estimator_builds_on_the_reported_count() {
        let mut messages = session(2);
        let mut estimator = ContextEstimator::new();
        let cold = estimator.estimate(&messages, "system prompt", &[]);
        assert_eq!(
            cold,
            estimate_tokens("system prompt") + messages_tokens(&messages)
        );
        estimator.observe(messages.len(), 10_000);
        assert_eq!(estimator.estimate(&messages, "system prompt", &[]), 10_000);
        messages.push(user("abcdefgh"));
        assert_eq!(
            estimator.estimate(&messages, "system prompt", &[]),
            10_000 + 2 + MESSAGE_OVERHEAD_TOKENS
        );
        estimator.observe(3, 0);
        assert_eq!(
            estimator.estimate(&messages, "", &[]),
            10_000 + 2 + MESSAGE_OVERHEAD_TOKENS,
            "a zero report is ignored"
        );
        // After a compaction the conversation is shorter than the one reported.
        let shorter = &messages[..2];
        assert_eq!(estimator.estimate(shorter, "", &[]), messages_tokens(shorter));
        estimator.reset();
        assert_eq!(estimator.estimate(&messages, "", &[]), messages_tokens(&messages));
    }

    #[test]
    fn tools_count_towards_the_estimate() {
        let tool = ToolSpec {
            name: "read".into(),
            description: "Reads a file.".into(),
            parameters: serde_json::json!({"type": "object"}),
        };
        let with = ContextEstimator::new().estimate(&[user("hi")], "", std::slice::from_ref(&tool));
        let without = ContextEstimator::new().estimate(&[user("hi")], "", &[]);
        assert!(with > without);
    }

    #[test]
    fn the_plan_keeps_the_task_and_whole_recent_turns() {
        let messages = session(10);
        let plan = plan_compaction(&messages, 600).expect("worth compacting");
        assert_eq!(plan.task, 0);
        assert_eq!(plan.summarise.start, 1);
        assert_eq!(plan.summarise.end, plan.keep_from);
        assert!(
            matches!(messages[plan.keep_from], Message::Assistant { .. }),
            "the kept part starts at an assistant message"
        );
        assert!(plan.kept_tokens <= 600, "{plan:?}");
        assert!(
            plan.kept_tokens >= 250,
            "at least the last turn is kept: {plan:?}"
        );
        assert_eq!(
            plan.summarised_tokens + plan.kept_tokens,
            messages_tokens(&messages[1..])
        );
    }

    #[test]
    fn the_last_turn_is_kept_even_over_budget() {
        let messages = session(4);
        let plan = plan_compaction(&messages, 10).expect("worth compacting");
        assert_eq!(plan.keep_from, messages.len() - 2, "the last call and its result");
        let mut ending_in_user = session(4);
        ending_in_user.push(user("The review failed: fix the tests."));
        let plan = plan_compaction(&ending_in_user, 10).expect("worth compacting");
        assert_eq!(plan.keep_from, ending_in_user.len() - 1);
    }

    #[test]
    fn results_of_several_calls_stay_with_their_turn() {
        let mut messages = session(3);
        messages.push(Message::Assistant {
            content: String::new(),
            tool_calls: vec![
                ToolCall {
                    id: "a".into(),
                    name: "read".into(),
                    arguments: "{}".into(),
                },
                ToolCall {
                    id: "b".into(),
                    name: "read".into(),
                    arguments: "{}".into(),
                },
            ],
        });
        messages.push(result("a", &"y".repeat(400)));
        messages.push(result("b", &"y".repeat(400)));
        for keep in [0, 150, 260, 400, 700] {
            if let Some(plan) = plan_compaction(&messages, keep) {
                assert!(
                    !matches!(messages[plan.keep_from], Message::Tool { .. }),
                    "keep {keep}"
                );
                assert_valid(&apply_compaction(&messages, &plan, "sum"));
            }
        }
    }

    #[test]
    fn nothing_to_summarise_means_no_plan() {
        assert_eq!(plan_compaction(&[], 100), None);
        assert_eq!(plan_compaction(&[user("task")], 100), None);
        assert_eq!(plan_compaction(&session(1), 0), None, "only the last turn");
        let small = vec![user("task"), assistant("ok"), user("more"), assistant("done")];
        assert_eq!(
            plan_compaction(&small, 0),
            None,
            "too little to be worth a summary"
        );
        assert_eq!(plan_compaction(&session(10), 1_000_000), None, "everything fits");
    }

    #[test]
    fn applying_a_plan_gives_task_summary_and_recent_turns() {
        let messages = session(10);
        let plan = plan_compaction(&messages, 600).expect("worth compacting");
        let compacted = apply_compaction(&messages, &plan, "  Read f0..f7; nothing failed.  ");
        assert_eq!(compacted[0], messages[0]);
        match &compacted[1] {
            Message::User { content } => {
                assert!(content.starts_with(SUMMARY_PREFIX));
                assert!(content.ends_with("Read f0..f7; nothing failed."));
            }
            other => panic!("expected the summary, got {other:?}"),
        }
        assert_eq!(&compacted[2..], &messages[plan.keep_from..]);
        assert_valid(&compacted);
        // Compacting again folds the earlier summary into the new one.
        let mut longer = compacted.clone();
        longer.extend(session(6).into_iter().skip(1));
        let again = plan_compaction(&longer, 600).expect("worth compacting");
        assert_eq!(again.summarise.start, 1, "the old summary is summarised too");
    }

    #[test]
    fn a_stale_plan_leaves_the_conversation_valid() {
        let messages = session(10);
        let plan = plan_compaction(&messages, 600).expect("worth compacting");
        let short = &messages[..3];
        assert_eq!(apply_compaction(short, &plan, "s"), short.to_vec());
        // A plan pointing at a tool result: the orphan goes.
        let skewed = CompactionPlan {
            keep_from: 2,
            summarise: 1..2,
            ..plan
        };
        let compacted = apply_compaction(&messages, &skewed, "s");
        assert!(!matches!(compacted[2], Message::Tool { .. }));
        assert_valid(&compacted);
    }

    #[test]
    fn the_summary_request_holds_task_instructions_and_transcript() {
        let mut messages = session(10);
        messages[1] = Message::Assistant {
            content: "Looking at the layout first.".into(),
            tool_calls: vec![ToolCall {
                id: "c0".into(),
                name: "read".into(),
                arguments: "{\"path\":\"f0.rs\"}".into(),
            }],
        };
        messages[2] = Message::Tool {
            call_id: "c0".into(),
            content: "z".repeat(50_000),
            is_error: true,
        };
        let plan = plan_compaction(&messages, 600).expect("worth compacting");
        let request = summary_request(&plan, &messages);
        assert_eq!(request.len(), 1);
        let Message::User { content } = &request[0] else {
            panic!("a user message")
        };
        assert!(content.contains("<task>\n# Task\nBuild the thing.\n</task>"));
        assert!(content.contains("what was tried and failed"));
        assert!(content.contains("[assistant]\nLooking at the layout first."));
        assert!(content.contains("[assistant calls read (c0)] read f0.rs\n{\"path\":\"f0.rs\"}"));
        assert!(content.contains("[error from c0]"));
        assert!(content.len() < 20_000 + 4_000 * 10, "huge items are cut");
        let kept_call = format!(
            "({})",
            match &messages[plan.keep_from] {
                Message::Assistant { tool_calls, .. } => tool_calls[0].id.clone(),
                _ => String::new(),
            }
        );
        assert!(!content.contains(&kept_call), "kept turns are not summarised");
    }

    #[test]
    fn truncation_keeps_head_and_tail_and_says_where_the_rest_is() {
        let output: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        let cut = truncate_for_context(&output, 500, Some(".orchestrator/outputs/42.txt"));
        assert!(cut.chars().count() <= 500, "{}", cut.chars().count());
        assert!(cut.starts_with("line 0\nline 1\n"));
        assert!(cut.ends_with("line 999\n"));
        assert!(cut.contains("the whole output is in .orchestrator/outputs/42.txt"));
        let note_line = cut.lines().find(|l| l.starts_with("[...")).expect("a note");
        assert!(note_line.contains("lines) left out"), "{note_line}");
        // Cut on line boundaries: every kept line is whole.
        assert!(cut
            .lines()
            .filter(|l| l.starts_with("line "))
            .all(|l| l[5..].parse::<u32>().is_ok()));

        let plain = truncate_for_context(&"é".repeat(300), 120, None);
        assert!(plain.chars().count() <= 120 && plain.contains("characters (0 lines) left out"));
        assert_eq!(truncate_for_context("short", 100, None), "short");
    }
}
