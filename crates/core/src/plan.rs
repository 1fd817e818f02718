//! Plans as the planner and spawning workers submit them: parsing, validation with problems a model
//! can fix, and the human-readable TODO mirror.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

use orchestrator_protocol::{UnitSpec, UnitState};
use serde::Deserialize;

/// The most units one plan or one spawn may hold; beyond this a plan is a to-do list, not a DAG.
pub const MAX_UNITS: usize = 200;

/// Best of N: the most candidates (workers side by side) one unit may have, from the plan or from
/// `--attempts`. Each is a worker session, a worktree and a build; past a few the reviewer compares
/// diffs it cannot hold at once.
pub const MAX_CANDIDATES: u32 = 5;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanArgs {
    tasks: Vec<PlanTask>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanTask {
    id: String,
    title: String,
    description: String,
    #[serde(default)]
    depends_on: Vec<String>,
    #[serde(default)]
    files: Vec<String>,
    /// Best of N for this unit (see [`MAX_CANDIDATES`]).
    #[serde(default)]
    attempts: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpawnArgs {
    tasks: Vec<SpawnTask>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpawnTask {
    title: String,
    description: String,
    #[serde(default)]
    depends_on: Vec<String>,
}

/// The example unit a correction shows (see [`example_plan`]): a plan that hands it back has copied
/// the instructions instead of planning, which small models do.
pub(crate) const EXAMPLE_TITLE: &str = "Add the parser";
pub(crate) const EXAMPLE_DESCRIPTION: &str = "What to build, in which files, and how to check it.";

/// The `submit_plan` call a correction shows a model that keeps getting it wrong. Kept out of the
/// tool's schema: a model that reads an example in every request copies it.
pub(crate) fn example_plan() -> serde_json::Value {
    serde_json::json!({"tasks": [{
        "id": "add-parser",
        "title": EXAMPLE_TITLE,
        "description": EXAMPLE_DESCRIPTION,
        "depends_on": [],
        "files": ["src/parser.rs"],
    }]})
}

/// Parses and validates `submit_plan` arguments. Errors are a list of problems, worded for the model.
pub fn parse_plan(arguments: serde_json::Value) -> Result<Vec<UnitSpec>, Vec<String>> {
    let args: PlanArgs = serde_json::from_value(arguments)
        .map_err(|e| vec![format!("the arguments do not match the schema: {e}")])?;
    let units: Vec<UnitSpec> = args
        .tasks
        .into_iter()
        .map(|t| UnitSpec {
            id: t.id.trim().to_string(),
            title: t.title.trim().to_string(),
            description: t.description,
            depends_on: t.depends_on.into_iter().map(|d| d.trim().to_string()).collect(),
            files: t.files,
            attempts: t.attempts,
        })
        .collect();
    let units = mend_ids_and_files(units);
    let mut problems = Vec::new();
    for unit in &units {
        if !valid_id(&unit.id) {
            problems.push(format!(
                "task id `{}` is not allowed: use letters, digits, `-` and `_`, starting with a letter or digit",
                unit.id
            ));
        }
    }
    for unit in &units {
        if unit.title == EXAMPLE_TITLE || unit.description.trim() == EXAMPLE_DESCRIPTION {
            problems.push(format!(
                "task `{}` is the example from the instructions, not work of this objective: write your \
                 own ids, titles and descriptions for what the objective asks",
                unit.id
            ));
        }
    }
    problems.extend(validate(&units));
    if problems.is_empty() {
        Ok(units)
    } else {
        Err(problems)
    }
}

/// A plan a person wrote or edited (`orchestrator approve --plan-file`): JSON in the shape
/// `submit_plan` takes (`{"tasks": [...]}`, or the bare list of tasks), checked as a planner's plan is.
pub fn parse_plan_text(text: &str) -> Result<Vec<UnitSpec>, Vec<String>> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        vec![format!(
            "the plan is not JSON ({e}); write it as submit_plan takes it: \
             {{\"tasks\": [{{\"id\": \"…\", \"title\": \"…\", \"description\": \"…\", \"depends_on\": []}}]}}"
        )]
    })?;
    match value {
        serde_json::Value::Array(tasks) => parse_plan(serde_json::json!({ "tasks": tasks })),
        other => parse_plan(other),
    }
}

/// Units a person handed in (an edited plan), checked as a planner's plan is.
pub fn check_units(units: &[UnitSpec]) -> Result<Vec<UnitSpec>, Vec<String>> {
    parse_plan(serde_json::json!({ "tasks": units }))
}

/// The units as `submit_plan` takes them, for a person to edit.
pub fn plan_json(units: &[UnitSpec]) -> serde_json::Value {
    serde_json::json!({ "tasks": units })
}

/// Mends what models commonly get wrong in a plan where only one reading makes sense, so the plan is
/// not sent back for it: an id with characters ids may not have (`calc.py`, `add mul`) becomes one
/// that may (`calc_py`, `add_mul`), its dependents following; a `depends_on` entry that names no task
/// and looks like a path (`calc.py`, `src/x`, which can never be an id) is a file the task touches.
fn mend_ids_and_files(mut units: Vec<UnitSpec>) -> Vec<UnitSpec> {
    let mut renamed: HashMap<String, String> = HashMap::new();
    let taken: HashSet<String> = units.iter().map(|u| u.id.clone()).collect();
    for unit in &mut units {
        if valid_id(&unit.id) {
            continue;
        }
        let mended: String = unit
            .id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect::<String>()
            .trim_start_matches(['-', '_'])
            .chars()
            .take(64)
            .collect();
        if valid_id(&mended) && !taken.contains(&mended) && !renamed.values().any(|v| *v == mended) {
            renamed.insert(unit.id.clone(), mended.clone());
            unit.id = mended;
        }
    }
    let ids: HashSet<String> = units.iter().map(|u| u.id.clone()).collect();
    for unit in &mut units {
        let mut depends_on = Vec::new();
        for dep in std::mem::take(&mut unit.depends_on) {
            let dep = renamed.get(&dep).cloned().unwrap_or(dep);
            if !ids.contains(&dep) && (dep.contains('.') || dep.contains('/')) {
                if !unit.files.contains(&dep) {
                    unit.files.push(dep);
                }
            } else {
                depends_on.push(dep);
            }
        }
        unit.depends_on = depends_on;
    }
    units
}

/// Parses `spawn` arguments into child units of `parent`, ids `<parent>.<n>`; dependencies name sibling titles.
pub fn parse_spawn(parent: &str, arguments: serde_json::Value) -> Result<Vec<UnitSpec>, Vec<String>> {
    let args: SpawnArgs = serde_json::from_value(arguments)
        .map_err(|e| vec![format!("the arguments do not match the schema: {e}")])?;
    let ids: HashMap<String, String> = args
        .tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.title.trim().to_string(), format!("{parent}.{}", i + 1)))
        .collect();
    let mut problems = Vec::new();
    if ids.len() != args.tasks.len() {
        problems.push("every spawned task needs a distinct title".to_string());
    }
    let units: Vec<UnitSpec> = args
        .tasks
        .into_iter()
        .enumerate()
        .map(|(i, t)| UnitSpec {
            id: format!("{parent}.{}", i + 1),
            title: t.title.trim().to_string(),
            description: t.description,
            depends_on: t
                .depends_on
                .iter()
                .map(|d| {
                    ids.get(d.trim()).cloned().unwrap_or_else(|| {
                        problems.push(format!(
                            "`depends_on` names `{d}`, which is not the title of a task in this call"
                        ));
                        String::new()
                    })
                })
                .filter(|d| !d.is_empty())
                .collect(),
            files: Vec::new(),
            attempts: None,
        })
        .collect();
    problems.extend(validate(&units));
    if problems.is_empty() {
        Ok(units)
    } else {
        Err(problems)
    }
}

fn valid_id(id: &str) -> bool {
    let mut chars = id.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && id.len() <= 64
}

/// Structural checks shared by plans and spawns: non-empty, unique ids, known dependencies, no cycles.
/// What an objective names as code: functions (`mul(a, b)` → `mul`), files (`calc.py`) and anything
/// in backticks. A plan should carry each into some task: the field's 1.5B planned "add(a, b)
/// function" for an objective that asked for `mul`, and every worker then built the wrong thing.
pub fn named_in_objective(objective: &str) -> Vec<String> {
    static PATTERNS: std::sync::LazyLock<Vec<regex::Regex>> = std::sync::LazyLock::new(|| {
        [
            r"`([^`\n]{1,80})`",
            r"\b([A-Za-z_][A-Za-z0-9_]{1,60})\(",
            r"\b([\w./-]{0,100}\w\.(?:py|rs|ts|tsx|js|jsx|mjs|go|java|kt|rb|c|h|cc|cpp|hpp|cs|swift|php|md|toml|json|ya?ml|sql|sh))\b",
        ]
        .iter()
        .map(|p| regex::Regex::new(p).unwrap_or_else(|e| panic!("bad objective pattern {p}: {e}")))
        .collect()
    });
    let mut names: Vec<String> = Vec::new();
    for pattern in PATTERNS.iter() {
        for captures in pattern.captures_iter(objective) {
            let Some(name) = captures.get(1).map(|m| m.as_str().trim().to_string()) else {
                continue;
            };
            if !name.is_empty() && !names.contains(&name) && names.len() < 20 {
                names.push(name);
            }
        }
    }
    names
}

/// The names of [`named_in_objective`] that no unit of `units` mentions (title, description or files).
pub fn uncovered(names: &[String], units: &[UnitSpec]) -> Vec<String> {
    let text: String = units
        .iter()
        .map(|u| format!("{}\n{}\n{}\n", u.title, u.description, u.files.join("\n")))
        .collect();
    names
        .iter()
        .filter(|name| !text.contains(name.as_str()))
        .cloned()
        .collect()
}

pub fn validate(units: &[UnitSpec]) -> Vec<String> {
    let mut problems = Vec::new();
    if units.is_empty() {
        problems.push("the plan has no tasks; give at least one".to_string());
    }
    if units.len() > MAX_UNITS {
        problems.push(format!(
            "the plan has {} tasks; the most allowed is {MAX_UNITS}",
            units.len()
        ));
    }
    let mut seen = HashSet::new();
    for unit in units {
        if !seen.insert(unit.id.as_str()) {
            problems.push(format!("task id `{}` is used more than once", unit.id));
        }
        if unit.title.is_empty() || unit.description.trim().is_empty() {
            problems.push(format!("task `{}` needs a title and a description", unit.id));
        }
        if let Some(n) = unit.attempts.filter(|n| !(1..=MAX_CANDIDATES).contains(n)) {
            problems.push(format!(
                "task `{}` asks for {n} attempts; `attempts` (workers building it side by side) must be \
                 between 1 and {MAX_CANDIDATES}, or left out",
                unit.id
            ));
        }
    }
    for unit in units {
        for dep in &unit.depends_on {
            if dep == &unit.id {
                problems.push(format!("task `{}` depends on itself", unit.id));
            } else if !seen.contains(dep.as_str()) {
                problems.push(format!(
                    "task `{}` depends on `{dep}`, which is not in the plan",
                    unit.id
                ));
            }
        }
    }
    if problems.is_empty() {
        if let Some(cycle) = find_cycle(units) {
            problems.push(format!("the dependencies form a cycle: {}", cycle.join(" → ")));
        }
    }
    problems
}

/// What starts the part of a retry's description that tells of the attempt before it.
pub(crate) const PREVIOUS_ATTEMPT: &str = "\n\nA previous attempt did not pass: ";

/// A unit's description without what earlier rounds added: a retry of a retry tells of the last
/// attempt only (in the field, round 3's brief carried round 1's findings inside round 2's), and
/// what the unit asks for is read from its own words (round 2's "did not pass after 3 attempt(s)"
/// was taken for a function `attempt`).
pub(crate) fn own_description(description: &str) -> &str {
    description
        .split_once(PREVIOUS_ATTEMPT)
        .map_or(description, |(own, _)| own)
}

/// What a unit asks for, in its own words: its title and its description without earlier rounds'
/// findings.
pub(crate) fn what_unit_asks(unit: &UnitSpec) -> String {
    format!("{}\n{}", unit.title, own_description(&unit.description))
}

/// [`order_shared_files`] for a mission of `max_parallel` sessions: only when it runs one at a time.
pub fn order_for_sessions(max_parallel: usize, units: Vec<UnitSpec>) -> Vec<UnitSpec> {
    if max_parallel == 1 {
        order_shared_files(units)
    } else {
        units
    }
}

/// The plan with units that share a planned file ordered: each waits for the earlier one (in an
/// order that keeps the plan's own dependencies, ties by plan position) unless one already waits
/// for the other. For a mission that runs one session at a time (`max_parallel = 1`, the small
/// profile), side by side buys nothing, and each unit would start without the other's work: the
/// field's 1.5B planner wrote `calc_mul` (mul and its test) and `test_calc` (the test again) with
/// no dependency, and each round both were built from the same base and collided. A valid plan
/// (no cycle, known ids) stays valid; ids it cannot order are left as they are.
pub fn order_shared_files(mut units: Vec<UnitSpec>) -> Vec<UnitSpec> {
    let Some(order) = topological_order(&units) else {
        return units;
    };
    let files: Vec<HashSet<String>> = units
        .iter()
        .map(|u| {
            u.files
                .iter()
                .map(|f| f.trim().trim_start_matches("./").to_string())
                .filter(|f| !f.is_empty())
                .collect()
        })
        .collect();
    let index: HashMap<String, usize> = units.iter().enumerate().map(|(i, u)| (u.id.clone(), i)).collect();
    let mut ancestors: Vec<HashSet<usize>> = vec![HashSet::new(); units.len()];
    for (position, &later) in order.iter().enumerate() {
        let mut before: HashSet<usize> = HashSet::new();
        for dep in &units[later].depends_on {
            if let Some(&d) = index.get(dep) {
                before.insert(d);
                before.extend(ancestors[d].iter().copied());
            }
        }
        // Latest first: waiting for it covers what it waits for already.
        for &earlier in order[..position].iter().rev() {
            if before.contains(&earlier) || files[later].is_disjoint(&files[earlier]) {
                continue;
            }
            let id = units[earlier].id.clone();
            units[later].depends_on.push(id);
            before.insert(earlier);
            before.extend(ancestors[earlier].iter().copied());
        }
        ancestors[later] = before;
    }
    units
}

/// The units' positions in an order where each comes after what it depends on, ties by plan
/// position; `None` for a cycle.
fn topological_order(units: &[UnitSpec]) -> Option<Vec<usize>> {
    let index: HashMap<&str, usize> = units
        .iter()
        .enumerate()
        .map(|(i, u)| (u.id.as_str(), i))
        .collect();
    let mut waiting: Vec<usize> = units
        .iter()
        .map(|u| {
            u.depends_on
                .iter()
                .filter(|d| index.contains_key(d.as_str()))
                .count()
        })
        .collect();
    let mut order = Vec::with_capacity(units.len());
    let mut ready: std::collections::BTreeSet<usize> =
        (0..units.len()).filter(|&i| waiting[i] == 0).collect();
    while let Some(next) = ready.pop_first() {
        order.push(next);
        for (i, unit) in units.iter().enumerate() {
            let edges = unit
                .depends_on
                .iter()
                .filter(|d| d.as_str() == units[next].id)
                .count();
            if edges > 0 {
                waiting[i] -= edges;
                if waiting[i] == 0 {
                    ready.insert(i);
                }
            }
        }
    }
    (order.len() == units.len()).then_some(order)
}

/// A dependency cycle, if any, as the ids along it (first id repeated at the end).
fn find_cycle(units: &[UnitSpec]) -> Option<Vec<String>> {
    let deps: HashMap<&str, &[String]> = units
        .iter()
        .map(|u| (u.id.as_str(), u.depends_on.as_slice()))
        .collect();
    // 0 = unvisited, 1 = on the current path, 2 = done.
    let mut mark: HashMap<&str, u8> = HashMap::new();
    let mut path: Vec<&str> = Vec::new();
    fn visit<'a>(
        id: &'a str,
        deps: &HashMap<&'a str, &'a [String]>,
        mark: &mut HashMap<&'a str, u8>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        match mark.get(id) {
            Some(2) => return None,
            Some(1) => {
                let start = path.iter().position(|p| *p == id).unwrap_or(0);
                let mut cycle: Vec<String> = path[start..].iter().map(|s| s.to_string()).collect();
                cycle.push(id.to_string());
                return Some(cycle);
            }
            _ => {}
        }
        mark.insert(id, 1);
        path.push(id);
        for dep in deps.get(id).copied().unwrap_or_default() {
            if let Some(cycle) = visit(dep.as_str(), deps, mark, path) {
                return Some(cycle);
            }
        }
        path.pop();
        mark.insert(id, 2);
        None
    }
    units
        .iter()
        .find_map(|u| visit(u.id.as_str(), &deps, &mut mark, &mut path))
}

/// One line per unit of the mission, in plan order, for `.orchestrator/todo.md`.
#[derive(Debug, Clone)]
pub struct TodoEntry {
    pub unit: UnitSpec,
    pub round: u32,
    pub state: UnitState,
    pub note: Option<String>,
}

/// The units in reading order: each one right under its parent (a spawned unit's id is its parent's
/// id and `.n`), siblings in the order they appeared. The order of appearance alone would put a
/// grandchild spawned late under whichever unit was listed last.
fn tree_order<'a>(entries: &BTreeMap<String, TodoEntry>, order: &'a [String]) -> Vec<&'a str> {
    fn parent_of<'s>(id: &'s str, entries: &BTreeMap<String, TodoEntry>) -> Option<&'s str> {
        id.rsplit_once('.')
            .map(|(parent, _)| parent)
            .filter(|parent| entries.contains_key(*parent))
    }
    let mut children: BTreeMap<&str, Vec<&'a str>> = BTreeMap::new();
    let mut roots = Vec::new();
    for id in order {
        match parent_of(id, entries) {
            Some(parent) => children.entry(parent).or_default().push(id),
            None => roots.push(id.as_str()),
        }
    }
    let mut listed = Vec::with_capacity(order.len());
    let mut stack: Vec<&str> = roots.into_iter().rev().collect();
    while let Some(id) = stack.pop() {
        listed.push(id);
        if let Some(kids) = children.get(id) {
            stack.extend(kids.iter().rev());
        }
    }
    listed
}

pub fn render_todo(
    objective: &str,
    mission: &str,
    entries: &BTreeMap<String, TodoEntry>,
    order: &[String],
) -> String {
    let mut out = format!("# Mission {mission}\n\n> {}\n", objective.replace('\n', "\n> "));
    let mut round = 0;
    for id in tree_order(entries, order) {
        let Some(entry) = entries.get(id) else { continue };
        if entry.round != round {
            round = entry.round;
            let _ = write!(out, "\n## Round {round}\n\n");
        }
        let depth = entry.unit.id.matches('.').count();
        let mark = match entry.state {
            UnitState::Passed => "x",
            UnitState::Failed | UnitState::Skipped => "!",
            _ => " ",
        };
        let deps = if entry.unit.depends_on.is_empty() {
            String::new()
        } else {
            format!(" (after {})", entry.unit.depends_on.join(", "))
        };
        let note = entry
            .note
            .as_deref()
            .map(|n| format!(" — {n}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{}- [{mark}] `{}` {}{deps} — {}{note}",
            "  ".repeat(depth),
            entry.unit.id,
            entry.unit.title,
            entry.state
        );
    }
    out
}

#[cfg(test)]
mod tests {
    fn planned(id: &str, files: &[&str], deps: &[&str]) -> UnitSpec {
        UnitSpec {
            id: id.into(),
            title: id.into(),
            description: id.into(),
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            files: files.iter().map(|f| f.to_string()).collect(),
            attempts: None,
        }
    }

    fn deps_of(units: &[UnitSpec]) -> Vec<(String, Vec<String>)> {
        units
            .iter()
            .map(|u| (u.id.clone(), u.depends_on.clone()))
            .collect()
    }

    #[test]
    fn what_a_unit_asks_leaves_out_earlier_rounds_findings() {
        let mut unit = planned("calc_mul-r2", &[], &[]);
        unit.title = "Add mul(a, b)".into();
        unit.description = format!("Define it in calc.py.{PREVIOUS_ATTEMPT}fix_imports() was missing");
        let asked = what_unit_asks(&unit);
        assert!(
            asked.contains("Add mul(a, b)") && asked.contains("Define it in calc.py."),
            "{asked}"
        );
        assert!(!asked.contains("fix_imports"), "{asked}");
    }

    #[test]
    fn units_sharing_a_planned_file_are_ordered_without_a_cycle() {
        // The field's plan: the same files, no dependency.
        let field = vec![
            planned("calc_mul", &["calc.py", "test_calc.py"], &[]),
            planned("test_calc", &["./test_calc.py", "calc.py"], &[]),
        ];
        assert_eq!(
            deps_of(&order_shared_files(field)),
            [
                ("calc_mul".to_string(), vec![]),
                ("test_calc".to_string(), vec!["calc_mul".to_string()])
            ]
        );
        // A plan whose first unit waits for its second: ordered the plan's way, never a cycle.
        let backwards = vec![
            planned("a", &["x.py"], &["b"]),
            planned("b", &["x.py"], &[]),
            planned("c", &["y.py"], &[]),
            planned("d", &["x.py", "y.py"], &[]),
        ];
        let ordered = order_shared_files(backwards);
        assert!(validate(&ordered).is_empty(), "{:?}", validate(&ordered));
        assert_eq!(
            deps_of(&ordered),
            [
                ("a".to_string(), vec!["b".to_string()]),
                ("b".to_string(), vec![]),
                ("c".to_string(), vec![]),
                // After `a` (which already follows `b`) and `c`; not `b` again.
                ("d".to_string(), vec!["c".to_string(), "a".to_string()])
            ]
        );
        // Nothing shared, or already ordered: unchanged.
        let apart = vec![planned("a", &["x.py"], &[]), planned("b", &["y.py"], &["a"])];
        assert_eq!(order_shared_files(apart.clone()), apart);
    }

    use super::*;

    #[test]
    fn what_an_objective_names_as_code_must_be_in_some_task() {
        let objective =
            "Add a function mul(a, b) to calc.py that returns a * b, and a test for it in test_calc.py.";
        assert_eq!(named_in_objective(objective), ["mul", "calc.py", "test_calc.py"]);
        assert_eq!(
            named_in_objective("Use `serde_json` in src/lib.rs, not a (hand-written) parser"),
            ["serde_json", "src/lib.rs"]
        );
        assert!(named_in_objective("Implement a real-time collaborative editor using WebSocket").is_empty());
        let task = |title: &str, description: &str, files: &[&str]| UnitSpec {
            id: "1".into(),
            title: title.into(),
            description: description.into(),
            depends_on: vec![],
            files: files.iter().map(|f| f.to_string()).collect(),
            attempts: None,
        };
        let names = named_in_objective(objective);
        // The field's plan: named after `add`, with the right files.
        let field = [task(
            "add(a, b) function",
            "Add two numbers",
            &["calc.py", "test_calc.py"],
        )];
        assert_eq!(uncovered(&names, &field), ["mul"]);
        let right = [task(
            "Add mul",
            "def mul(a, b) in calc.py and test_mul in test_calc.py",
            &[],
        )];
        assert!(uncovered(&names, &right).is_empty());
    }

    use serde_json::json;

    #[test]
    fn a_plan_that_copies_the_example_is_refused() {
        let problems = parse_plan(example_plan()).unwrap_err();
        assert!(
            problems
                .iter()
                .any(|p| p.contains("is the example from the instructions")),
            "{problems:?}"
        );
        let own = json!({"tasks": [{"id": "mul", "title": "Add mul", "description": "mul(a, b) in calc.py", "depends_on": []}]});
        assert!(parse_plan(own).is_ok());
    }

    #[test]
    fn a_units_attempts_are_taken_within_their_bound_and_refused_outside() {
        let plan = |attempts: serde_json::Value| {
            parse_plan(json!({"tasks": [
                {"id": "a", "title": "A", "description": "do a", "depends_on": [], "attempts": attempts},
                {"id": "b", "title": "B", "description": "do b", "depends_on": []}
            ]}))
        };
        let units = plan(json!(3)).expect("3 is within the bound");
        assert_eq!(units[0].attempts, Some(3));
        assert_eq!(units[1].attempts, None, "left out: the mission's --attempts");
        assert_eq!(
            plan(json!(MAX_CANDIDATES)).expect("the most")[0].attempts,
            Some(5)
        );
        for lying in [json!(0), json!(MAX_CANDIDATES + 1), json!(1_000_000)] {
            let problems = plan(lying.clone()).expect_err("out of bounds");
            assert!(
                problems
                    .iter()
                    .any(|p| p.contains("task `a` asks for") && p.contains("between 1 and 5")),
                "{lying}: {problems:?}"
            );
        }
        // Not a count at all: refused with the schema's words, never wrapped or panicking.
        for junk in [json!(-1), json!("three"), json!(2.5), json!(u64::MAX)] {
            assert!(plan(junk.clone()).is_err(), "{junk}");
        }
        // A person's edited plan goes through the same check.
        let edited = parse_plan_text(r#"[{"id": "a", "title": "A", "description": "d", "attempts": 9}]"#);
        assert!(edited.is_err());
        // And the plan shown to a person keeps the field (only when set).
        let shown = plan_json(&units);
        assert_eq!(shown["tasks"][0]["attempts"], 3);
        assert!(shown["tasks"][1].get("attempts").is_none());
    }

    #[test]
    fn the_todo_lists_every_unit_under_its_parent() {
        let entry = |id: &str| {
            (
                id.to_string(),
                TodoEntry {
                    unit: UnitSpec {
                        id: id.into(),
                        title: id.into(),
                        description: String::new(),
                        depends_on: Vec::new(),
                        files: Vec::new(),
                        attempts: None,
                    },
                    round: 1,
                    state: UnitState::Queued,
                    note: None,
                },
            )
        };
        // Spawn order: a's children, then b's, then a grandchild under a.1 last.
        let order: Vec<String> = ["a", "b", "a.1", "a.2", "b.1", "a.1.1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let entries: BTreeMap<String, TodoEntry> = order.iter().map(|id| entry(id)).collect();
        let text = render_todo("o", "m", &entries, &order);
        let ids: Vec<&str> = text.lines().filter_map(|l| l.split('`').nth(1)).collect();
        assert_eq!(ids, ["a", "a.1", "a.1.1", "a.2", "b", "b.1"], "{text}");
    }

    /// What the 1.5B sent: files in `depends_on`, and ids with dots and spaces. One reading makes
    /// sense for each, so the plan is mended rather than sent back.
    #[test]
    fn files_in_depends_on_and_ids_with_dots_are_mended() {
        let units = parse_plan(json!({"tasks": [
            {"id": "calc.mul", "title": "Mul", "description": "add mul", "depends_on": ["calc.py"]},
            {"id": "test mul", "title": "Test", "description": "test mul",
             "depends_on": ["calc.mul", "test_calc.py", "src/lib/x"], "files": ["test_calc.py"]}
        ]}))
        .expect("mended");
        assert_eq!(units[0].id, "calc_mul");
        assert!(units[0].depends_on.is_empty());
        assert_eq!(units[0].files, ["calc.py"]);
        assert_eq!(units[1].id, "test_mul");
        assert_eq!(units[1].depends_on, ["calc_mul"]);
        assert_eq!(units[1].files, ["test_calc.py", "src/lib/x"]);
        // Still refused: an unknown id that is no path, a cycle, ids that mend into each other.
        let unknown = parse_plan(json!({"tasks": [
            {"id": "a", "title": "A", "description": "a", "depends_on": ["nothing"]}]}));
        assert!(unknown.unwrap_err()[0].contains("`nothing`, which is not in the plan"));
        let clash = parse_plan(json!({"tasks": [
            {"id": "a.b", "title": "A", "description": "a", "depends_on": []},
            {"id": "a_b", "title": "B", "description": "b", "depends_on": []}]}));
        assert!(clash.unwrap_err()[0].contains("task id `a.b` is not allowed"));
    }

    #[test]
    fn accepts_a_valid_plan() {
        let units = parse_plan(json!({"tasks": [
            {"id": "a", "title": "A", "description": "do a", "depends_on": []},
            {"id": "b", "title": "B", "description": "do b", "depends_on": ["a"], "files": ["b.rs"]}
        ]}))
        .unwrap();
        assert_eq!(units.len(), 2);
        assert_eq!(units[1].depends_on, vec!["a"]);
    }

    #[test]
    fn reports_every_structural_problem() {
        let err = parse_plan(json!({"tasks": [
            {"id": "a", "title": "A", "description": "x", "depends_on": ["zzz"]},
            {"id": "a", "title": "A2", "description": "y", "depends_on": []}
        ]}))
        .unwrap_err();
        assert!(err.iter().any(|p| p.contains("more than once")), "{err:?}");
        assert!(err.iter().any(|p| p.contains("`zzz`")), "{err:?}");
        assert!(parse_plan(json!({"tasks": []})).unwrap_err()[0].contains("no tasks"));
        // An id shaped like a path never reaches a branch or folder name: mended, or refused.
        let mended = parse_plan(
            json!({"tasks": [{"id": "../x", "title": "t", "description": "d", "depends_on": []}]}),
        )
        .expect("mended");
        assert_eq!(mended[0].id, "x");
        assert!(parse_plan(
            json!({"tasks": [{"id": "../", "title": "t", "description": "d", "depends_on": []}]})
        )
        .unwrap_err()[0]
            .contains("is not allowed"));
        assert!(parse_plan(json!({"plan": []})).unwrap_err()[0].contains("schema"));
    }

    #[test]
    fn a_written_plan_is_checked_as_a_planners_is() {
        let plan = r#"{"tasks": [{"id": "a", "title": "A", "description": "x", "depends_on": []}]}"#;
        assert_eq!(parse_plan_text(plan).unwrap()[0].id, "a");
        let bare = r#"[{"id": "a", "title": "A", "description": "x"}]"#;
        assert_eq!(parse_plan_text(bare).unwrap().len(), 1);
        assert!(parse_plan_text("tasks: a, b").unwrap_err()[0].contains("not JSON"));
        let unknown = r#"[{"id": "a", "title": "A", "description": "x", "depends_on": ["zz"]}]"#;
        assert!(parse_plan_text(unknown).unwrap_err()[0].contains("`zz`, which is not in the plan"));
        let units = parse_plan_text(plan).unwrap();
        let round_trip = serde_json::to_string(&plan_json(&units)).unwrap();
        assert_eq!(parse_plan_text(&round_trip).unwrap(), units);
        assert_eq!(check_units(&units).unwrap(), units);
    }

    #[test]
    fn finds_cycles() {
        let err = parse_plan(json!({"tasks": [
            {"id": "a", "title": "A", "description": "x", "depends_on": ["c"]},
            {"id": "b", "title": "B", "description": "y", "depends_on": ["a"]},
            {"id": "c", "title": "C", "description": "z", "depends_on": ["b"]}
        ]}))
        .unwrap_err();
        assert!(
            err[0].contains("cycle") && err[0].contains("a → c → b → a"),
            "{err:?}"
        );
    }

    #[test]
    fn spawn_maps_titles_to_child_ids() {
        let units = parse_spawn(
            "t1",
            json!({"tasks": [
                {"title": "x", "description": "dx"},
                {"title": "y", "description": "dy", "depends_on": ["x"]}
            ]}),
        )
        .unwrap();
        assert_eq!(units[0].id, "t1.1");
        assert_eq!(units[1].depends_on, vec!["t1.1"]);
        let err = parse_spawn(
            "t1",
            json!({"tasks": [{"title": "x", "description": "d", "depends_on": ["nope"]}]}),
        );
        assert!(err.unwrap_err()[0].contains("nope"));
    }
}
