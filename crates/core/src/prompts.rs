//! Role prompts: short and specific. Long prompts cost tokens on every turn of every session and
//! bury the instruction that matters; the mission context carries the facts instead.

use std::collections::BTreeMap;

use orchestrator_protocol::Role;

/// The built-in system prompt for a role. The first line names the role so logs and test servers
/// can tell sessions apart.
pub fn system_prompt(role: Role) -> String {
    with_role_line(role, builtin_body(role))
}

/// A built-in role's prompt under its `# Role:` line.
pub fn builtin_body(role: Role) -> &'static str {
    let body = match role {
        Role::Scout => SCOUT,
        Role::Planner => PLANNER,
        Role::Worker => WORKER,
        Role::Reviewer => REVIEWER,
        Role::MasterReviewer => MASTER_REVIEWER,
        Role::ConflictResolver => CONFLICT_RESOLVER,
    };
    body.trim()
}

fn with_role_line(role: Role, body: &str) -> String {
    format!("# Role: {}\n{}", role.as_str(), body.trim())
}

/// The system prompts of one mission: each role's prompt (built in, or from its role file), then the
/// project instructions block, the same text in every session.
#[derive(Debug, Clone, Default)]
pub struct Prompts {
    /// Prompt bodies from role files, replacing the built-in ones.
    bodies: BTreeMap<Role, String>,
    /// The "Project instructions" block ([`crate::instructions`]); empty when the project has none.
    instructions: String,
    /// Specialist reviewers' prompt bodies, by name.
    specialists: BTreeMap<String, String>,
}

impl Prompts {
    pub fn new(bodies: BTreeMap<Role, String>, instructions: String) -> Self {
        Prompts {
            bodies,
            instructions,
            specialists: BTreeMap::new(),
        }
    }

    /// With the specialist reviewers' prompt bodies, by name.
    pub fn with_specialists(mut self, specialists: BTreeMap<String, String>) -> Self {
        self.specialists = specialists;
        self
    }

    /// The role's system prompt. Its first line is always `# Role: <name>`.
    pub fn system(&self, role: Role) -> String {
        let body = self.bodies.get(&role).map_or(builtin_body(role), String::as_str);
        self.with_instructions(with_role_line(role, body))
    }

    /// A specialist reviewer's system prompt: `# Role: <kind>` first (the kind decides the session's
    /// tools and what it submits), then `# Specialist: <name>`, then its own prompt.
    pub fn specialist(&self, kind: Role, name: &str) -> String {
        let body = self.specialists.get(name).map_or("", String::as_str);
        let prompt = format!("# Role: {kind}\n# Specialist: {name}\n{}", body.trim());
        self.with_instructions(prompt)
    }

    fn with_instructions(&self, mut prompt: String) -> String {
        if !self.instructions.is_empty() {
            prompt.push_str("\n\n");
            prompt.push_str(self.instructions.trim_end());
        }
        prompt
    }
}

/// `text` cut to at most `max` bytes, with a note saying how much is left out and where to find it.
pub fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}\n[… {} more bytes cut; read the files for the rest]",
        &text[..end],
        text.len() - end
    )
}

const SCOUT: &str = "
You are a scout in a team of coding agents. Study the repository for the focus you are given and write a
concise report (at most 40 lines) that later agents will rely on: facts, file paths, commands, conventions.
Use the read-only tools; do not change files. End by answering with the report and no tool call.";

const PLANNER: &str = "
You are the planner. Split the objective into units of work that separate workers can build in parallel,
each in its own git worktree. Make units independent where you can; add `depends_on` only where a unit needs
another's result. Give each unit a description that a worker can act on alone: what to build, where, and how
to know it is done. Prefer few well-sized units over many tiny ones; units touching the same lines conflict.
Inspect the code as needed, then call `submit_plan` exactly once with the whole plan.";

const WORKER: &str = "
You are a worker. Build exactly the unit you are given in your worktree, using the tools. Keep to the unit's
scope, follow the repository's conventions, and add or update tests where the project has them. Run the
build and tests yourself before finishing. If the unit is too large, you may `spawn` sub-units (when offered)
and integrate their results. When the unit is complete, answer with a short summary and no tool call; the
runtime commits your changes, runs the build and tests, and a reviewer checks the diff.";

const REVIEWER: &str = "
You are a reviewer. Judge one unit's diff against its description and the evidence (build and test results
the runtime ran itself). Fail it for real defects only: wrong or missing behaviour, broken tests, bugs,
security problems, changes outside its scope. You may read files and run commands. Finish by calling
`submit_review` with verdict pass or fail, a summary, and for a failure the issues to fix. Each issue names
its file and quotes one line copied exactly from it (read the file first); the runtime checks the quote.";

const MASTER_REVIEWER: &str = "
You are the master reviewer. The units have been built and merged; judge the integrated result against the
objective, with the evidence of the full build and tests. Check that the pieces fit together and nothing the
objective asks for is missing. Finish by calling `submit_review`: pass seals the mission; fail must list
each missing or broken thing as an issue that a worker can fix alone.";

const CONFLICT_RESOLVER: &str = "
You are a conflict resolver. A merge of two branches stopped on conflicts. Edit each conflicted file so it
keeps the intent of both sides, and remove every conflict marker. Do not run git commands that commit, reset
or abort; the runtime concludes the merge and verifies it. Answer with a short summary and no tool call when
done.";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_name_their_role_and_stay_short() {
        for role in Role::ALL {
            let prompt = system_prompt(role);
            assert!(prompt.starts_with(&format!("# Role: {}\n", role.as_str())));
            assert!(prompt.len() < 1200, "{role} prompt is {} bytes", prompt.len());
        }
    }

    #[test]
    fn a_role_file_replaces_the_body_and_instructions_end_every_prompt() {
        let bodies = BTreeMap::from([(Role::Worker, "Custom worker.".to_string())]);
        let prompts = Prompts::new(bodies, "# Project instructions\n\nUse tabs.\n".into());
        let worker = prompts.system(Role::Worker);
        assert_eq!(
            worker,
            "# Role: worker\nCustom worker.\n\n# Project instructions\n\nUse tabs."
        );
        for role in Role::ALL {
            let prompt = prompts.system(role);
            assert!(prompt.starts_with(&format!("# Role: {}\n", role.as_str())));
            assert!(
                prompt.ends_with("# Project instructions\n\nUse tabs."),
                "{prompt}"
            );
        }
        assert_eq!(Prompts::default().system(Role::Scout), system_prompt(Role::Scout));
    }
}
