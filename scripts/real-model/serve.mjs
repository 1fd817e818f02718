#!/usr/bin/env node
// OpenAI-compatible chat server over node-llama-cpp, for field tests and CI smoke checks
// with small local GGUF models (see shared/REALMODEL.md and scripts/real-model/fetch-model).
//
// Install (once, ~10-20 s, no compiler; prebuilt CPU llama.cpp from npm):
//   cd scripts/real-model && npm ci
// The .npmrc beside this file makes that `--omit=optional --ignore-scripts`: the prebuilt
// @node-llama-cpp/linux-x64 is a direct dependency, the other platform packages (CUDA and
// Vulkan builds of hundreds of MB) are skipped, and node-llama-cpp's postinstall (which may
// try to download or build llama.cpp) does not run.
//
// package-lock.json note: the registry reachable here lacks some optional platform packages
// of node-llama-cpp 3.22.1 (win-*, mac-*, linux-riscv64), so `npm install` leaves them out of
// the lock file and `npm ci` then refuses it ("Missing: ... from lock file"). The lock file
// therefore carries hand-added entries for them (version, os, cpu, optional: true); they are
// never installed on Linux x64. If you regenerate the lock, add them back the same way.
//
// Run:
//   node serve.mjs --model PATH [--port 0] [--host 127.0.0.1] [--alias local] [--ctx 4096] [--threads N]
// (--threads defaults to cores - 1; see THREADS below)
// stdout: exactly one line `listening on http://HOST:PORT` once the model is loaded.
// stderr: load messages and one line per request.
//
// Design:
// - One model, one context, one sequence; requests run one at a time in arrival order
//   (2 cores: parallel sequences would only slow each other down).
// - The prompt is rendered here as Qwen2.5's ChatML (not from the GGUF's embedded template,
//   which is buggy in the 1.5B), and evaluated on the one sequence. Before evaluating, the
//   sequence's KV cache is trimmed to the longest common prefix with the new prompt, so a
//   conversation that grows turn by turn only evaluates the new tail.
// - Generation uses the low-level `sequence.evaluate()` iterator; the server does its own
//   stop detection, detokenization, tool-call parsing and SSE framing.

import http from "node:http";
import crypto from "node:crypto";
import os from "node:os";
import { parseArgs } from "node:util";
import { getLlama, LlamaGrammarEvaluationState } from "node-llama-cpp";

// ---------------------------------------------------------------- command line
const { values: opts } = parseArgs({
  options: {
    model: { type: "string" },
    port: { type: "string", default: "0" },
    host: { type: "string", default: "127.0.0.1" },
    alias: { type: "string", default: "local" },
    ctx: { type: "string", default: "4096" },
    threads: { type: "string" },
    // The seed of a sampled request that names none: fixed by default, so a field test or CI check
    // that samples (the orchestrator warms a stuck session's temperature) runs the same each time.
    seed: { type: "string", default: "0" },
    help: { type: "boolean", short: "h" },
  },
});
const USAGE =
  "usage: node serve.mjs --model PATH [--port 0] [--host 127.0.0.1] [--alias local] [--ctx 4096] [--threads N] [--seed 0]";
if (opts.help) {
  console.log(USAGE);
  process.exit(0);
}
if (!opts.model) {
  console.error(`serve: --model is required\n${USAGE}`);
  process.exit(2);
}
const PORT = Number(opts.port);
const CTX = Number(opts.ctx);
// Default: all cores but one. llama.cpp's threads wait for each other after every step, so
// when another process (a cargo build, the orchestrator's agents) takes a core, a thread
// that is descheduled stalls the rest: measured here on 2 cores next to a test run,
// 1 thread generated 16 tokens in ~4 s and 2 threads in 25-37 s. (node-llama-cpp's own
// default was 4 threads on this 2-core machine.) On an idle machine --threads <cores> is faster.
const THREADS = opts.threads === undefined ? Math.max(1, os.availableParallelism() - 1) : Number(opts.threads);
if (!Number.isInteger(PORT) || PORT < 0 || PORT > 65535 || !Number.isInteger(CTX) || CTX < 256 ||
    (THREADS !== undefined && (!Number.isInteger(THREADS) || THREADS < 1))) {
  console.error(`serve: bad --port, --ctx (>= 256) or --threads\n${USAGE}`);
  process.exit(2);
}
const ALIAS = opts.alias;
const DEFAULT_SEED = Number(opts.seed);
if (!Number.isInteger(DEFAULT_SEED)) {
  console.error(`serve: bad --seed\n${USAGE}`);
  process.exit(2);
}
const MAX_BODY = 16 * 1024 * 1024;

const log = (msg) => process.stderr.write(`serve: ${msg}\n`);

// ---------------------------------------------------------------- model
// gpu:false and build:"never": this machine has no GPU, and a missing or unusable prebuilt
// binary must fail loudly instead of starting a download or a cmake build.
let llama, model, context, sequence;
try {
  llama = await getLlama({ gpu: false, build: "never", logLevel: "warn", progressLogs: false });
  model = await llama.loadModel({ modelPath: opts.model, gpuLayers: 0 });
  context = await model.createContext({ contextSize: CTX, sequences: 1, threads: THREADS });
  sequence = context.getSequence();
} catch (e) {
  console.error(`serve: cannot load ${opts.model}: ${e?.message ?? e}`);
  console.error("serve: check the path (scripts/real-model/fetch-model prints it) and that `npm ci` ran here");
  process.exit(1);
}
log(`loaded ${opts.model} (ctx ${CTX}, threads ${context.currentThreads})`);

// ---------------------------------------------------------------- errors
class HttpError extends Error {
  constructor(status, message, type = "invalid_request_error") {
    super(message);
    this.status = status;
    this.type = type;
  }
}
const bad = (message) => new HttpError(400, message);

// ---------------------------------------------------------------- prompt rendering
// Python's json.dumps style (", " and ": " separators, non-ASCII kept), which is what the
// `tojson` filter of Qwen2.5's Hugging Face template produces; matching it keeps the prompt
// the model was trained on.
function pyJson(v) {
  if (Array.isArray(v)) return "[" + v.map(pyJson).join(", ") + "]";
  if (v && typeof v === "object")
    return "{" + Object.entries(v).map(([k, x]) => JSON.stringify(k) + ": " + pyJson(x)).join(", ") + "}";
  return JSON.stringify(v ?? null);
}

// `content` may be a string, null, or an array of {type:"text", text} parts.
function text(content, where) {
  if (content == null) return "";
  if (typeof content === "string") return content;
  if (Array.isArray(content))
    return content.map((p, i) => {
      if (p?.type === "text" && typeof p.text === "string") return p.text;
      throw bad(`${where}.content[${i}]: only text parts are supported`);
    }).join("");
  throw bad(`${where}.content must be a string, null or an array of text parts`);
}

const DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";

// Renders like Qwen2.5's official chat template (the one in the 0.5B GGUF).
function renderPrompt(messages, tools) {
  let out = "";
  const first = messages[0];
  const system = first?.role === "system" ? text(first.content, "messages[0]") : DEFAULT_SYSTEM;
  if (tools.length) {
    out += "<|im_start|>system\n" + system +
      "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n" +
      "You are provided with function signatures within <tools></tools> XML tags:\n<tools>";
    for (const t of tools) out += "\n" + pyJson(t);
    out += "\n</tools>\n\nFor each function call, return a json object with function name and arguments " +
      "within <tool_call></tool_call> XML tags:\n<tool_call>\n" +
      '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n';
  } else {
    out += "<|im_start|>system\n" + system + "<|im_end|>\n";
  }
  messages.forEach((m, i) => {
    const where = `messages[${i}]`;
    if (i === 0 && m.role === "system") return; // already in the header
    const calls = m.role === "assistant" && Array.isArray(m.tool_calls) && m.tool_calls.length ? m.tool_calls : null;
    if (m.role === "user" || m.role === "system" || (m.role === "assistant" && !calls)) {
      out += `<|im_start|>${m.role}\n${text(m.content, where)}<|im_end|>\n`;
    } else if (m.role === "assistant") {
      out += "<|im_start|>assistant";
      const c = text(m.content, where);
      if (c) out += "\n" + c;
      calls.forEach((tc, j) => {
        const f = tc?.function ?? tc;
        if (typeof f?.name !== "string") throw bad(`${where}.tool_calls[${j}].function.name must be a string`);
        // OpenAI sends arguments as a JSON string; the template wants the object.
        let args = f.arguments ?? {};
        if (typeof args === "string") {
          try { args = JSON.parse(args || "{}"); } catch { /* not JSON: keep the string as is */ }
        }
        out += '\n<tool_call>\n{"name": "' + f.name + '", "arguments": ' + pyJson(args) + "}\n</tool_call>";
      });
      out += "<|im_end|>\n";
    } else if (m.role === "tool") {
      // Consecutive tool results share one user turn, as in Qwen's template.
      if (i === 0 || messages[i - 1].role !== "tool") out += "<|im_start|>user";
      out += "\n<tool_response>\n" + text(m.content, where) + "\n</tool_response>";
      if (i === messages.length - 1 || messages[i + 1].role !== "tool") out += "<|im_end|>\n";
    } else {
      throw bad(`${where}.role must be system, user, assistant or tool`);
    }
  });
  return out + "<|im_start|>assistant\n";
}

// ---------------------------------------------------------------- JSON schema -> grammar
// node-llama-cpp's JSON-schema grammar understands a dialect of JSON Schema (oneOf, const,
// enum, type, properties, required, additionalProperties, items, prefixItems, min/maxItems,
// min/maxLength, string format, $defs/$ref). It does NOT reject what it does not know: a root
// `anyOf` silently became a grammar for `null`. So the schema is translated here, and
// anything that cannot be translated is a 400.
const TYPES = new Set(["string", "number", "integer", "boolean", "null", "object", "array"]);
const ANY = { oneOf: [{ type: ["string", "number", "boolean", "null"] }, { type: "object", additionalProperties: true }, { type: "array" }] };

function toGbnf(s, path, defs) {
  if (s === true || (s && typeof s === "object" && !Array.isArray(s) && Object.keys(s).every((k) => IGNORED.has(k))))
    return ANY;
  if (!s || typeof s !== "object" || Array.isArray(s)) throw bad(`${path}: a schema must be an object`);
  const keep = (o) => (typeof s.description === "string" ? { ...o, description: s.description } : o);
  if (s.$ref !== undefined) {
    const m = typeof s.$ref === "string" && s.$ref.match(/^#\/(?:\$defs|definitions)\/(.+)$/);
    if (!m || !(m[1] in defs)) throw bad(`${path}.$ref: only local #/$defs/NAME references are supported`);
    return { $ref: `#/$defs/${m[1]}` };
  }
  if ("const" in s) return keep({ const: s.const });
  if (Array.isArray(s.enum)) return keep({ enum: s.enum });
  for (const k of ["anyOf", "oneOf"]) {
    if (s[k] === undefined) continue;
    if (!Array.isArray(s[k]) || !s[k].length) throw bad(`${path}.${k} must be a non-empty array`);
    // Sibling keywords (e.g. a shared `type`) are merged into each branch.
    const { [k]: branches, ...rest } = s;
    return keep({ oneOf: branches.map((b, i) => toGbnf({ ...rest, ...b }, `${path}.${k}[${i}]`, defs)) });
  }
  if (s.allOf !== undefined) {
    if (!Array.isArray(s.allOf) || s.allOf.length !== 1) throw bad(`${path}.allOf: only a single-element allOf is supported`);
    const { allOf, ...rest } = s;
    return toGbnf({ ...rest, ...allOf[0] }, `${path}.allOf[0]`, defs);
  }
  let type = s.type ?? (s.properties ? "object" : s.items ? "array" : undefined);
  if (type === undefined) return ANY;
  if (Array.isArray(type)) {
    if (!type.length || type.some((t) => !TYPES.has(t))) throw bad(`${path}.type: unsupported type list ${JSON.stringify(type)}`);
    if (type.length === 1) type = type[0];
    else if (type.every((t) => t !== "object" && t !== "array" && t !== "string")) return keep({ type });
    else return keep({ oneOf: type.map((t, i) => toGbnf({ ...s, type: t }, `${path}.type[${i}]`, defs)) });
  }
  if (!TYPES.has(type)) throw bad(`${path}.type: unsupported type ${JSON.stringify(type)}`);
  if (type === "object") {
    const o = { type: "object" };
    if (s.properties !== undefined) {
      if (!s.properties || typeof s.properties !== "object") throw bad(`${path}.properties must be an object`);
      // node-llama-cpp's grammar emits every property (`required` has no effect), so a model had to
      // invent values for optional ones (every `read` came with `limit: 5`). An optional property
      // may be null instead, which the engine reads as "not given", as with OpenAI's strict mode.
      const required = new Set(Array.isArray(s.required) ? s.required : []);
      o.properties = Object.fromEntries(
        Object.entries(s.properties).map(([k, v]) => {
          const t = toGbnf(v, `${path}.properties.${k}`, defs);
          return [k, required.has(k) ? t : { oneOf: [t, { type: "null" }] }];
        }),
      );
    }
    if (s.required !== undefined) {
      if (!Array.isArray(s.required) || s.required.some((r) => typeof r !== "string")) throw bad(`${path}.required must be an array of strings`);
      o.required = s.required;
    }
    // With no properties and no additionalProperties, JSON Schema allows any object; the
    // grammar builder would allow only {}.
    const ap = s.additionalProperties ?? (s.properties ? undefined : true);
    if (ap !== undefined) o.additionalProperties = typeof ap === "boolean" ? ap : toGbnf(ap, `${path}.additionalProperties`, defs);
    for (const k of ["minProperties", "maxProperties"]) if (Number.isInteger(s[k])) o[k] = s[k];
    return keep(o);
  }
  if (type === "array") {
    const o = { type: "array" };
    if (s.items !== undefined && s.items !== true) o.items = toGbnf(s.items, `${path}.items`, defs);
    if (Array.isArray(s.prefixItems)) o.prefixItems = s.prefixItems.map((p, i) => toGbnf(p, `${path}.prefixItems[${i}]`, defs));
    for (const k of ["minItems", "maxItems"]) if (Number.isInteger(s[k])) o[k] = s[k];
    return keep(o);
  }
  if (type === "string") {
    const o = { type: "string" };
    if (["date-time", "time", "date"].includes(s.format)) o.format = s.format;
    for (const k of ["minLength", "maxLength"]) if (Number.isInteger(s[k])) o[k] = s[k];
    return keep(o);
  }
  return keep({ type }); // number, integer, boolean, null (numeric bounds are not enforced)
}
const IGNORED = new Set(["title", "description", "$schema", "$id", "default", "examples", "$comment"]);

function translateSchema(schema, path) {
  const rawDefs = { ...(schema?.definitions ?? {}), ...(schema?.$defs ?? {}) };
  const defs = {};
  for (const name of Object.keys(rawDefs)) defs[name] = null; // known names, for $ref checks
  for (const [name, d] of Object.entries(rawDefs)) defs[name] = toGbnf(d, `${path}.$defs.${name}`, defs);
  const { $defs, definitions, ...body } = schema ?? {};
  const root = toGbnf(body, path, defs);
  return Object.keys(defs).length ? { ...root, $defs: defs } : root;
}

// Grammars are reused across requests: the orchestrator sends the same schemas again and again.
const grammarCache = new Map();
async function grammarFor(key, make) {
  if (!grammarCache.has(key)) {
    if (grammarCache.size >= 64) grammarCache.delete(grammarCache.keys().next().value);
    grammarCache.set(key, await make());
  }
  return grammarCache.get(key);
}

// node-llama-cpp's JSON-schema grammar lets the model pretty-print (a newline and indent
// may follow every brace and comma) and makes it end the JSON with "\n\n\n\n". A small model
// takes that offer: the 1.5B spent 142 tokens (30 s) on a plan that is ~45 tokens compact.
// So the GBNF text is rewritten to allow at most one space between tokens (as llama.cpp's own
// json-schema-to-grammar does) and to end at the closing brace, where only an end-of-
// generation token can follow. The rewrite matches the GBNF that node-llama-cpp 3.22.1 emits
// (rules named whitespace-b-N-M-rule / comma-whitespace-b-N-M-rule); with another version it
// may match nothing, and the grammar is then used as built (still correct, only wordier).
function compactJsonGbnf(gbnf) {
  return gbnf
    .replace(/^((?:comma-)?whitespace-b-\d+-\d+-rule) ::= .*$/gm, (_, name) =>
      `${name} ::= ${name.startsWith("comma-") ? '"," ' : ""}[ ]?`)
    .replace(/^(root ::= .*) "\\n\\n\\n\\n" \[\\n\]\*$/m, "$1");
}

async function jsonSchemaGrammar(schema, path) {
  const gbnfSchema = translateSchema(schema, path);
  try {
    return await grammarFor("schema:" + JSON.stringify(gbnfSchema), async () => {
      const built = await llama.createGrammarForJsonSchema(gbnfSchema);
      return llama.createGrammar({ grammar: compactJsonGbnf(built.grammar), stopGenerationTriggers: ["\n\n\n\n"] });
    });
  } catch (e) {
    throw bad(`${path}: the grammar builder rejected the schema: ${e?.message ?? e}`);
  }
}

// ---------------------------------------------------------------- request validation
async function prepare(body) {
  if (!body || typeof body !== "object" || Array.isArray(body)) throw bad("the body must be a JSON object");
  const { messages } = body;
  if (!Array.isArray(messages) || !messages.length) throw bad("messages must be a non-empty array");
  messages.forEach((m, i) => {
    if (!m || typeof m !== "object" || typeof m.role !== "string") throw bad(`messages[${i}] must be an object with a role`);
  });
  const num = (k, lo, hi) => {
    const v = body[k];
    if (v == null) return undefined;
    if (typeof v !== "number" || !Number.isFinite(v) || v < lo || v > hi) throw bad(`${k} must be a number in [${lo}, ${hi}]`);
    return v;
  };
  const maxTokens = num("max_tokens", 1, 1e9) ?? num("max_completion_tokens", 1, 1e9);
  const temperature = num("temperature", 0, 2) ?? 1; // OpenAI's default is 1
  const topP = num("top_p", 0, 1);
  const seed = num("seed", -(2 ** 53), 2 ** 53);
  if (body.stream != null && typeof body.stream !== "boolean") throw bad("stream must be a boolean");

  let tools = body.tools ?? [];
  if (!Array.isArray(tools)) throw bad("tools must be an array");
  tools.forEach((t, i) => {
    if (t?.type !== "function" || typeof t.function?.name !== "string") throw bad(`tools[${i}] must be {"type":"function","function":{"name":...}}`);
  });
  const choice = body.tool_choice ?? "auto";
  let forced = null; // tools a reply is constrained to call
  if (choice === "required") forced = tools;
  else if (choice && typeof choice === "object") {
    const name = choice.function?.name;
    forced = tools.filter((t) => t.function.name === name);
    if (!forced.length) throw bad(`tool_choice names ${JSON.stringify(name)}, which is not in tools`);
  } else if (!["auto", "none"].includes(choice)) throw bad('tool_choice must be "auto", "none", "required" or {"type":"function",...}');
  if (forced && !forced.length) throw bad('tool_choice "required" needs tools');

  let grammar = null;
  let prefill = ""; // text put in the assistant turn before generation starts
  const rf = body.response_format;
  if (rf != null && (typeof rf !== "object" || typeof rf.type !== "string")) throw bad("response_format must be an object with a type");
  if (rf?.type === "json_schema") {
    const schema = rf.json_schema?.schema;
    if (!schema || typeof schema !== "object") throw bad("response_format.json_schema.schema must be an object");
    grammar = await jsonSchemaGrammar(schema, "response_format.json_schema.schema");
  } else if (rf?.type === "json_object") {
    // llama.cpp's json.gbnf, with its whitespace rule cut to one optional space (see above).
    grammar = await grammarFor("json", async () => {
      const built = await llama.getGrammarFor("json");
      return llama.createGrammar({ grammar: built.grammar.replace(/^ws ::= .*$/m, 'ws ::= | " "') });
    });
  } else if (rf != null && rf.type !== "text") {
    throw bad('response_format.type must be "text", "json_object" or "json_schema"');
  } else if (forced) {
    // Forced tool call: start the reply with "<tool_call>\n" and constrain the rest to
    // {"name": <one of the tools>, "arguments": <its parameters>}. The reply is then
    // parsed as a tool call like any other.
    const schema = { oneOf: forced.map((t) => ({
      type: "object",
      properties: { name: { const: t.function.name }, arguments: t.function.parameters ?? { type: "object" } },
      required: ["name", "arguments"],
    })) };
    grammar = await jsonSchemaGrammar(schema, "tools[].function.parameters");
    prefill = "<tool_call>\n";
  }

  // Tokenized here, before a streamed reply has sent its headers, so that a prompt that does
  // not fit is still a plain 400. Special-token text such as <|im_start|> in the messages is
  // parsed as the special token (as llama-server does).
  const promptTokens = model.tokenize(renderPrompt(messages, tools) + prefill, true);
  if (promptTokens.length >= CTX) throw bad(`the prompt has ${promptTokens.length} tokens; the context holds ${CTX} (--ctx)`);
  return {
    promptTokens, prefill, grammar, maxTokens, temperature, topP, seed,
    parseTools: tools.length > 0 && choice !== "none",
    stream: body.stream === true,
    includeUsage: body.stream_options?.include_usage === true,
  };
}

// ---------------------------------------------------------------- tool-call parsing
const OPEN = "<tool_call>", CLOSE = "</tool_call>";

// Splits a reply into the text outside <tool_call> blocks and OpenAI tool_calls. A block
// that is not JSON with a name stays in the text. A block cut off at the end (no closing
// tag) still counts if its JSON parses.
function parseToolCalls(reply) {
  const calls = [];
  let content = "", pos = 0;
  while (true) {
    const a = reply.indexOf(OPEN, pos);
    if (a < 0) { content += reply.slice(pos); break; }
    const b = reply.indexOf(CLOSE, a);
    const end = b < 0 ? reply.length : b + CLOSE.length;
    const inner = reply.slice(a + OPEN.length, b < 0 ? reply.length : b).trim();
    let call = null;
    try {
      const j = JSON.parse(inner);
      const args = j?.arguments ?? j?.parameters ?? {};
      if (typeof j?.name === "string")
        call = { id: "call_" + crypto.randomBytes(12).toString("hex"), type: "function",
          function: { name: j.name, arguments: typeof args === "string" ? args : JSON.stringify(args) } };
    } catch { /* not a call */ }
    if (call) calls.push(call);
    content += reply.slice(pos, call ? a : end);
    pos = end;
  }
  return { content: content.trim(), calls };
}

// ---------------------------------------------------------------- generation
const EOG_TEXT = ["<|im_end|>", "<|endoftext|>"].map((t) => model.tokenize(t, true)).filter((t) => t.length === 1).map((t) => t[0]);
const isStop = (tok) => model.isEogToken(tok) || EOG_TEXT.includes(tok);

// Runs one request on the shared sequence. `emit(text)` gets content pieces as they become
// final; `signal.aborted` (client gone, shutdown) stops generation.
async function generate(job, emit, signal) {
  const t0 = process.hrtime.bigint();
  const { promptTokens } = job;
  const room = CTX - promptTokens.length;
  const limit = Math.min(job.maxTokens ?? room, room); // never let the context shift

  // Prefix reuse: keep the cached tokens the new prompt starts with, erase the rest, and
  // evaluate only the new tail (at least one token, to get logits for the first reply token).
  const { firstDifferentIndex } = sequence.compareContextTokens(promptTokens);
  const reused = Math.min(firstDifferentIndex, promptTokens.length - 1);
  if (reused < sequence.nextTokenIndex)
    await sequence.eraseContextTokenRanges([{ start: reused, end: sequence.nextTokenIndex }]);

  const grammarState = job.grammar ? new LlamaGrammarEvaluationState({ model, grammar: job.grammar }) : undefined;
  const triggers = job.grammar?.stopGenerationTriggers
    ?.map((t) => (typeof t === "string" ? t : typeof t?.toString === "function" ? t.toString() : null))
    .filter((t) => typeof t === "string" && t.length) ?? [];
  const sampling = job.temperature > 0
    ? { temperature: job.temperature, topP: job.topP, seed: job.seed ?? DEFAULT_SEED }
    : { temperature: 0 }; // greedy: deterministic, seed irrelevant

  const out = []; // generated tokens, without the stop token
  let finish = "stop", firstTokenAt = null;
  const streamer = makeStreamer(job, emit);
  const it = sequence.evaluate(promptTokens.slice(reused), {
    ...sampling, grammarEvaluationState: grammarState,
    yieldEogToken: true, // by default the iterator silently ends at an end-of-generation token
  });
  try {
    for await (const tok of it) {
      firstTokenAt ??= process.hrtime.bigint();
      if (signal.aborted) { finish = "aborted"; break; }
      if (isStop(tok)) { finish = "stop"; break; }
      out.push(tok);
      const sofar = model.detokenize(out);
      if (triggers.some((t) => sofar.endsWith(t))) { finish = "stop"; break; }
      streamer.update(sofar);
      if (out.length >= limit) { finish = "length"; break; }
    }
  } finally {
    await it.return?.(); // stops the evaluation loop inside node-llama-cpp
  }

  // Replies are trimmed (a grammar reply may end in whitespace, Qwen often adds a newline),
  // the same way in both modes so that streamed and whole replies agree.
  const reply = job.prefill + model.detokenize(out);
  let content = reply.trim(), calls = [];
  if (job.parseTools) ({ content, calls } = parseToolCalls(reply));
  if (calls.length && finish === "stop") finish = "tool_calls";
  streamer.finish(content);

  const secs = (a, b) => Number(b - a) / 1e9;
  const t1 = process.hrtime.bigint();
  return {
    content, calls, finish,
    usage: { prompt_tokens: promptTokens.length, completion_tokens: out.length, total_tokens: 0 },
    stats: { reused, evaluated: promptTokens.length - reused, secs: secs(t0, t1),
      promptSecs: firstTokenAt ? secs(t0, firstTokenAt) : secs(t0, t1) },
  };
}

// Decides which part of the growing reply text is final and can be streamed: leading
// whitespace is dropped and trailing whitespace held back (the whole reply is trimmed), a
// trailing U+FFFD (a UTF-8 character split across tokens) is held back, and with tools
// nothing from a "<tool_call>" (or a possible start of one) on is streamed: it is parsed at
// the end. finish(content) then sends whatever of the final content is still missing.
function makeStreamer(job, emit) {
  let sent = "";
  const push = (full) => {
    if (full.length > sent.length && full.startsWith(sent)) {
      emit(full.slice(sent.length));
      sent = full;
    }
  };
  return {
    update(sofar) {
      if (!emit) return;
      let t = (job.prefill + sofar).trimStart();
      if (job.parseTools) {
        const a = t.indexOf(OPEN);
        if (a >= 0) t = t.slice(0, a);
        else for (let n = Math.min(OPEN.length - 1, t.length); n > 0; n--)
          if (t.endsWith(OPEN.slice(0, n))) { t = t.slice(0, -n); break; }
      }
      t = t.replace(/\uFFFD+$/, "").trimEnd();
      push(t);
    },
    finish(content) {
      if (emit) push(content ?? "");
    },
  };
}

// One request at a time, in arrival order.
let queue = Promise.resolve();
function serialized(fn) {
  const run = queue.then(fn, fn);
  queue = run.catch(() => {});
  return run;
}

// ---------------------------------------------------------------- HTTP
let nextId = 1;
const current = new Set(); // abort controllers of running requests, for shutdown

function sendJson(res, status, obj) {
  if (res.headersSent) return res.end();
  const body = JSON.stringify(obj);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
  res.end(body);
}
const sendError = (res, e) =>
  sendJson(res, e.status ?? 500, { error: { message: e.message, type: e.type ?? "server_error" } });

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on("data", (c) => {
      size += c.length;
      if (size > MAX_BODY) {
        reject(new HttpError(413, `request body over ${MAX_BODY} bytes`));
        req.removeAllListeners("data");
        req.resume(); // drain without storing
        return;
      }
      chunks.push(c);
    });
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}

async function chatCompletions(req, res) {
  const raw = await readBody(req);
  let body;
  try { body = JSON.parse(raw); } catch (e) { throw bad(`the body is not valid JSON: ${e.message}`); }
  const job = await prepare(body);
  const id = "chatcmpl-" + crypto.randomBytes(12).toString("hex");
  const created = Math.floor(Date.now() / 1000);
  const reqNo = nextId++;
  const abort = new AbortController();
  // 'close' on the response fires when the client goes away before we finished.
  res.on("close", () => { if (!res.writableFinished) abort.abort(); });

  const chunk = (choices, extra = {}) =>
    res.write(`data: ${JSON.stringify({ id, object: "chat.completion.chunk", created, model: ALIAS, choices, ...extra })}\n\n`);
  let emit = null;
  if (job.stream) {
    emit = (piece) => chunk([{ index: 0, delta: { content: piece }, finish_reason: null }]);
  }

  const result = await serialized(async () => {
    if (abort.signal.aborted) return null; // client left while waiting in the queue
    current.add(abort);
    try {
      let beat = null;
      if (job.stream) {
        res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache", connection: "keep-alive" });
        chunk([{ index: 0, delta: { role: "assistant", content: "" }, finish_reason: null }]);
        // A cold prompt of a few thousand tokens takes minutes on two CPU cores, and clients time
        // out a stream that says nothing for that long: an SSE comment now and then says we live.
        beat = setInterval(() => res.write(": evaluating\n\n"), 15000);
      }
      try {
        return await generate(job, emit, abort.signal);
      } finally {
        if (beat) clearInterval(beat);
      }
    } finally {
      current.delete(abort);
    }
  });
  if (!result) return;
  const { content, calls, finish, usage, stats } = result;
  usage.total_tokens = usage.prompt_tokens + usage.completion_tokens;
  log(`#${reqNo} prompt=${usage.prompt_tokens} reused=${stats.reused} evaluated=${stats.evaluated} ` +
    `completion=${usage.completion_tokens} prompt_s=${stats.promptSecs.toFixed(2)} total_s=${stats.secs.toFixed(2)} ` +
    `finish=${finish}${job.stream ? " stream" : ""}`);
  if (finish === "aborted") return res.end();

  const message = { role: "assistant", content: calls.length && !content ? null : content };
  if (calls.length) message.tool_calls = calls;
  if (!job.stream) {
    return sendJson(res, 200, { id, object: "chat.completion", created, model: ALIAS,
      choices: [{ index: 0, message, finish_reason: finish }], usage });
  }
  if (calls.length)
    chunk([{ index: 0, delta: { tool_calls: calls.map((c, index) => ({ index, ...c })) }, finish_reason: null }]);
  chunk([{ index: 0, delta: {}, finish_reason: finish }]);
  if (job.includeUsage) chunk([], { usage });
  res.end("data: [DONE]\n\n");
}

const server = http.createServer(async (req, res) => {
  try {
    const path = new URL(req.url, "http://x").pathname.replace(/\/+$/, "");
    if (req.method === "GET" && path === "/v1/models") {
      return sendJson(res, 200, { object: "list", data: [{ id: ALIAS, object: "model", created: 0, owned_by: "llamacpp" }] });
    }
    if (path === "/v1/chat/completions") {
      if (req.method !== "POST") throw new HttpError(405, "use POST");
      return await chatCompletions(req, res);
    }
    if (req.method === "GET" && (path === "" || path === "/health")) return sendJson(res, 200, { status: "ok" });
    throw new HttpError(404, `no route for ${req.method} ${req.url}`);
  } catch (e) {
    if (!(e instanceof HttpError)) log(`internal error: ${e?.stack ?? e}`);
    if (res.headersSent) return res.end(); // mid-stream: nothing sensible left to send
    if (e.status === 413) res.setHeader("connection", "close");
    sendError(res, e instanceof HttpError ? e : new HttpError(500, String(e?.message ?? e), "server_error"));
  }
});
server.on("clientError", (err, socket) => socket.destroy());

server.listen(PORT, opts.host, () => {
  const { port } = server.address();
  const host = opts.host.includes(":") ? `[${opts.host}]` : opts.host;
  process.stdout.write(`listening on http://${host}:${port}\n`);
});

// ---------------------------------------------------------------- shutdown
let stopping = false;
async function shutdown(sig) {
  if (stopping) return;
  stopping = true;
  log(`${sig}: shutting down`);
  for (const a of current) a.abort();
  server.close();
  server.closeAllConnections?.();
  // Let the running evaluation notice the abort (it checks between tokens), then exit. The
  // model is not disposed: the OS frees it at exit, and disposing the 1.5B took seconds.
  setTimeout(() => process.exit(0), 3000).unref();
  await queue.catch(() => {});
  process.exit(0);
}
process.on("SIGTERM", () => shutdown("SIGTERM"));
process.on("SIGINT", () => shutdown("SIGINT"));
