//! read, list, glob, grep, write and edit through the public `Toolbox` API.

use std::fs;
use std::os::unix::fs::symlink;

use super::common::{exists, Fixture};
use orchestrator_tools::{ToolOptions, Toolbox};
use serde_json::json;

#[tokio::test]
async fn read_numbers_lines_and_pages() {
    let fx = Fixture::writable();
    let text: String = (1..=100).map(|i| format!("line {i}\n")).collect();
    fx.file("src/a.txt", &text);
    let out = fx.ok("read", json!({"path": "src/a.txt"})).await;
    assert!(out.starts_with("     1\tline 1\n     2\tline 2\n"), "{out}");
    assert!(out.ends_with("   100\tline 100\n"), "{out}");
    // Counting from 0 means the start too; a negative offset is still refused.
    assert_eq!(
        fx.ok("read", json!({"path": "src/a.txt", "offset": 0})).await,
        out
    );
    let err = fx.err("read", json!({"path": "src/a.txt", "offset": -1})).await;
    assert!(err.contains("`offset`"), "{err}");
    let out = fx
        .ok("read", json!({"path": "src/a.txt", "offset": 4, "limit": 50}))
        .await;
    assert!(out.starts_with("     4\tline 4\n"), "{out}");
    assert!(
        out.ends_with("    53\tline 53\n(47 more lines follow, 100 in total; continue with offset=54)\n"),
        "{out}"
    );
    // A page of a few lines is widened to 40: a model asking for 2 gets enough to act on.
    let out = fx
        .ok("read", json!({"path": "src/a.txt", "offset": 4, "limit": 2}))
        .await;
    assert!(
        out.ends_with("    43\tline 43\n(57 more lines follow, 100 in total; continue with offset=44)\n"),
        "{out}"
    );
}

#[tokio::test]
async fn read_refuses_binary_files_and_directories() {
    let fx = Fixture::writable();
    fs::write(fx.root().join("image.png"), b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR").expect("write");
    let err = fx.err("read", json!({"path": "image.png"})).await;
    assert!(err.contains("binary"), "{err}");
    fx.file("src/a.rs", "");
    let err = fx.err("read", json!({"path": "src"})).await;
    assert!(err.contains("is a directory"), "{err}");
    let err = fx.err("read", json!({"path": "missing.txt"})).await;
    assert!(err.contains("missing.txt"), "{err}");
}

#[tokio::test]
async fn read_cuts_very_long_lines() {
    let fx = Fixture::writable();
    fx.file("min.js", &"x".repeat(5000));
    let out = fx.ok("read", json!({"path": "min.js"})).await;
    assert!(out.contains("[line cut: 3000 more characters]"), "{out}");
}

#[tokio::test]
async fn list_shows_one_sorted_level_without_git() {
    let fx = Fixture::writable();
    fx.file("b.txt", "")
        .file("a.txt", "")
        .file("src/main.rs", "")
        .file(".git/HEAD", "");
    fx.file(".github/ci.yml", "");
    assert_eq!(fx.ok("list", json!({})).await, ".github/\na.txt\nb.txt\nsrc/\n");
    assert_eq!(fx.ok("list", json!({"path": "src"})).await, "main.rs\n");
    let err = fx.err("list", json!({"path": "a.txt"})).await;
    assert!(err.contains("is a file"), "{err}");
}

#[tokio::test]
async fn glob_matches_sorted_and_respects_gitignore() {
    let fx = Fixture::writable();
    fx.file(".gitignore", "target/\n*.log\n")
        .file("src/main.rs", "")
        .file("src/lib/mod.rs", "")
        .file("build.rs", "")
        .file("target/debug/gen.rs", "")
        .file("crates/x/target/y.rs", "")
        .file("debug.log", "")
        .file(".git/objects/z.rs", "");
    let out = fx.ok("glob", json!({"pattern": "**/*.rs"})).await;
    assert_eq!(out, "build.rs\nsrc/lib/mod.rs\nsrc/main.rs\n");
    assert_eq!(
        fx.ok("glob", json!({"pattern": "src/*.rs"})).await,
        "src/main.rs\n"
    );
    assert_eq!(fx.ok("glob", json!({"pattern": "./*.rs"})).await, "build.rs\n");
    let out = fx.ok("glob", json!({"pattern": "*.txt"})).await;
    assert!(out.contains("no files match") && out.contains("**/"), "{out}");
}

#[tokio::test]
async fn glob_caps_results() {
    let fx = Fixture::writable();
    for i in 0..1005 {
        fx.file(&format!("f/{i:04}.txt"), "");
    }
    let out = fx.ok("glob", json!({"pattern": "f/*.txt"})).await;
    assert_eq!(out.lines().count(), 1001, "1000 paths and a note");
    assert!(out.contains("first 1000 of 1005"), "{out}");
}

#[tokio::test]
async fn glob_refuses_patterns_leaving_the_root() {
    let fx = Fixture::writable();
    let err = fx.err("glob", json!({"pattern": "../outside/*"})).await;
    assert!(err.contains("outside the worktree"), "{err}");
    let err = fx.err("glob", json!({"pattern": "/etc/*"})).await;
    assert!(err.contains("outside the worktree"), "{err}");
}

#[tokio::test]
async fn grep_finds_lines_with_include_and_path() {
    let fx = Fixture::writable();
    fx.file("src/a.rs", "fn alpha() {}\nfn beta() {}\n")
        .file("src/b.ts", "function alpha() {}\n")
        .file("docs/readme.md", "alpha\n");
    let out = fx.ok("grep", json!({"pattern": "alpha"})).await;
    assert_eq!(
        out,
        "docs/readme.md:1: alpha\nsrc/a.rs:1: fn alpha() {}\nsrc/b.ts:1: function alpha() {}\n"
    );
    let out = fx
        .ok("grep", json!({"pattern": "fn \\w+", "include": "*.rs"}))
        .await;
    assert_eq!(out, "src/a.rs:1: fn alpha() {}\nsrc/a.rs:2: fn beta() {}\n");
    let out = fx
        .ok("grep", json!({"pattern": "alpha", "include": "src/**/*.ts"}))
        .await;
    assert_eq!(out, "src/b.ts:1: function alpha() {}\n");
    let out = fx.ok("grep", json!({"pattern": "alpha", "path": "docs"})).await;
    assert_eq!(out, "docs/readme.md:1: alpha\n");
    let out = fx
        .ok("grep", json!({"pattern": "beta", "path": "src/a.rs"}))
        .await;
    assert_eq!(out, "src/a.rs:2: fn beta() {}\n");
    let out = fx.ok("grep", json!({"pattern": "gamma"})).await;
    assert!(out.starts_with("no matches"), "{out}");
}

#[tokio::test]
async fn grep_skips_ignored_and_binary_files() {
    let fx = Fixture::writable();
    fx.file(".gitignore", "target/\n")
        .file("src/a.rs", "needle\n")
        .file("src/target/gen.rs", "needle\n")
        .file("target/out.rs", "needle\n");
    fs::write(fx.root().join("blob.bin"), b"needle\0\x01").expect("write");
    // Searching from below the root must still honour the root's .gitignore.
    assert_eq!(
        fx.ok("grep", json!({"pattern": "needle", "path": "src"})).await,
        "src/a.rs:1: needle\n"
    );
    assert_eq!(
        fx.ok("grep", json!({"pattern": "needle"})).await,
        "src/a.rs:1: needle\n"
    );
    let err = fx.err("grep", json!({"pattern": "("})).await;
    assert!(err.contains("invalid regex"), "{err}");
}

#[tokio::test]
async fn grep_caps_results() {
    let fx = Fixture::writable();
    fx.file("many.txt", &"hit\n".repeat(600));
    let out = fx.ok("grep", json!({"pattern": "hit"})).await;
    assert_eq!(out.lines().count(), 501, "500 matches and a note");
    assert!(out.contains("stopped after 500 matching lines"), "{out}");
}

#[tokio::test]
async fn write_creates_parents_and_overwrites() {
    let fx = Fixture::writable();
    let out = fx
        .ok(
            "write",
            json!({"path": "new/deep/file.txt", "content": "hello\n"}),
        )
        .await;
    assert_eq!(out, "created new/deep/file.txt (6 bytes)");
    assert_eq!(fx.read_back("new/deep/file.txt"), "hello\n");
    let out = fx
        .ok("write", json!({"path": "new/deep/file.txt", "content": "bye"}))
        .await;
    assert!(out.starts_with("overwrote"), "{out}");
    assert_eq!(fx.read_back("new/deep/file.txt"), "bye");
    // The same content again changes nothing, and says so (as an identical edit does).
    let err = fx
        .err("write", json!({"path": "new/deep/file.txt", "content": "bye"}))
        .await;
    assert!(err.contains("already holds exactly this content"), "{err}");
    // An empty file written empty is the same case; creating an empty file is not.
    let out = fx.ok("write", json!({"path": "empty.txt", "content": ""})).await;
    assert!(out.starts_with("created"), "{out}");
}

#[tokio::test]
async fn edit_requires_exactly_one_match_unless_replace_all() {
    let fx = Fixture::writable();
    fx.file("a.txt", "one two two three\n");
    let edit = |old: &str, new: &str, all: bool| json!({"path": "a.txt", "old_string": old, "new_string": new, "replace_all": all});
    let out = fx.ok("edit", edit("one", "1", false)).await;
    // The change is shown as the file now reads there, numbered like `read`.
    assert_eq!(
        out,
        "edited a.txt: replaced 1 occurrence; the first now reads:\n     1\t1 two two three\n"
    );
    assert_eq!(fx.read_back("a.txt"), "1 two two three\n");
    let err = fx.err("edit", edit("four", "4", false)).await;
    assert!(err.contains("not found"), "{err}");
    let err = fx.err("edit", edit("two", "2", false)).await;
    assert!(
        err.contains("occurs 2 times") && err.contains("replace_all"),
        "{err}"
    );
    assert_eq!(
        fx.read_back("a.txt"),
        "1 two two three\n",
        "a refused edit changes nothing"
    );
    let out = fx.ok("edit", edit("two", "2", true)).await;
    assert!(out.starts_with("edited a.txt: replaced 2 occurrences;"), "{out}");
    assert_eq!(fx.read_back("a.txt"), "1 2 2 three\n");
    let err = fx.err("edit", edit("three", "three", false)).await;
    assert!(err.contains("identical"), "{err}");
    let err = fx.err("edit", edit("", "x", false)).await;
    assert!(err.contains("must not be empty"), "{err}");
}

#[tokio::test]
async fn write_tools_are_offered_only_when_allowed() {
    let fx = Fixture::new(ToolOptions::default());
    let names: Vec<_> = fx.tools.specs().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["read", "list", "glob", "grep", "bash"]);
    assert!(!fx.tools.provides("write"));
    let err = fx.err("write", json!({"path": "a.txt", "content": "x"})).await;
    assert!(err.contains("not available"), "{err}");
    assert!(!exists(&fx.root().join("a.txt")));

    let fx = Fixture::writable();
    let specs = fx.tools.specs();
    let names: Vec<_> = specs.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["read", "list", "glob", "grep", "bash", "write", "edit", "insert"]
    );
    for spec in &specs {
        assert_eq!(
            spec.parameters["additionalProperties"],
            json!(false),
            "{}",
            spec.name
        );
        assert!(spec.parameters["required"].is_array(), "{}", spec.name);
    }
}

#[tokio::test]
async fn paths_outside_the_root_are_refused() {
    let fx = Fixture::writable();
    let outside = fx.outside();
    symlink(&outside, fx.root().join("link-out")).expect("symlink");
    symlink(outside.join("secret.txt"), fx.root().join("secret-link")).expect("symlink");
    let secret = outside.join("secret.txt");
    let secret = secret.to_str().expect("utf-8");
    for path in [
        "../outside/secret.txt",
        "/etc/passwd",
        secret,
        "link-out/secret.txt",
        "secret-link",
    ] {
        let err = fx.err("read", json!({"path": path})).await;
        assert!(err.contains("outside the worktree"), "{path}: {err}");
    }
    let err = fx.err("list", json!({"path": "link-out"})).await;
    assert!(err.contains("outside the worktree"), "{err}");
    let err = fx
        .err("grep", json!({"pattern": "secret", "path": "link-out"}))
        .await;
    assert!(err.contains("outside the worktree"), "{err}");
    // A walk does not follow the symlinks out either.
    let out = fx.ok("grep", json!({"pattern": "secret"})).await;
    assert!(out.starts_with("no matches"), "{out}");
}

#[tokio::test]
async fn writes_through_symlinks_out_or_into_git_are_refused() {
    let fx = Fixture::writable();
    let outside = fx.outside();
    symlink(&outside, fx.root().join("dir-link")).expect("symlink");
    let attempts = [
        ("write", json!({"path": "dir-link/new.txt", "content": "x"})),
        (
            "write",
            json!({"path": "dir-link/deeper/new.txt", "content": "x"}),
        ),
        ("write", json!({"path": "../outside/new.txt", "content": "x"})),
        (
            "edit",
            json!({"path": "dir-link/secret.txt", "old_string": "outside", "new_string": "x"}),
        ),
    ];
    for (tool, args) in attempts {
        let err = fx.err(tool, args.clone()).await;
        assert!(err.contains("outside the worktree"), "{args}: {err}");
    }
    assert!(!exists(&outside.join("new.txt")) && !exists(&outside.join("deeper")));
    assert_eq!(
        fs::read_to_string(outside.join("secret.txt")).expect("read"),
        "outside secret\n"
    );

    fx.file(".git/config", "[core]\n");
    let err = fx
        .err("write", json!({"path": ".git/hooks/pre-commit", "content": "x"}))
        .await;
    assert!(err.contains(".git"), "{err}");
    let err = fx
        .err(
            "edit",
            json!({"path": ".git/config", "old_string": "core", "new_string": "x"}),
        )
        .await;
    assert!(err.contains(".git"), "{err}");
}

#[tokio::test]
async fn absolute_paths_inside_the_root_are_accepted() {
    let fx = Fixture::writable();
    fx.file("a.txt", "hi\n");
    let path = fx.root().join("a.txt");
    let out = fx
        .ok("read", json!({"path": path.to_str().expect("utf-8")}))
        .await;
    assert_eq!(out, "     1\thi\n");
    // The root as the caller spelled it (not canonical) is accepted too.
    let given = fx.dir.path().join("root/./a.txt");
    let tools = Toolbox::new(fx.dir.path().join("root"), ToolOptions::default()).expect("toolbox");
    let token = tokio_util::sync::CancellationToken::new();
    let out = tools
        .call("read", &json!({"path": given.to_str().expect("utf-8")}), &token)
        .await;
    assert!(!out.is_error, "{}", out.content);
}

#[tokio::test]
async fn malformed_arguments_name_the_problem() {
    let fx = Fixture::writable();
    let cases = [
        ("read", json!({}), "missing required argument `path`"),
        (
            "read",
            json!({"path": 7}),
            "`path` must be a string, got the number 7",
        ),
        (
            "read",
            json!({"path": "a", "offset": -1}),
            "`offset` must be a whole number (0 or more)",
        ),
        (
            "read",
            json!({"path": "a", "limit": "all"}),
            "`limit` must be a positive integer",
        ),
        ("read", json!("a.txt"), "arguments must be a JSON object"),
        (
            "grep",
            json!({"pattern": "x", "file": "a"}),
            "unknown argument `file`",
        ),
        (
            "edit",
            json!({"path": "a", "old_string": "x"}),
            "missing required argument `new_string`",
        ),
        (
            "edit",
            json!({"path": "a", "old_string": "x", "new_string": "y", "replace_all": "yes"}),
            "`replace_all` must be a boolean",
        ),
        (
            "bash",
            json!({"command": ["ls"]}),
            "`command` must be a string, got an array",
        ),
        (
            "bash",
            json!({"command": "ls", "timeout": 0}),
            "`timeout` must be a positive number",
        ),
        (
            "frobnicate",
            json!({}),
            "unknown tool `frobnicate`; available tools: read, list, glob, grep, bash, write, edit",
        ),
    ];
    for (tool, args, expected) in cases {
        let err = fx.err(tool, args.clone()).await;
        assert!(err.contains(expected), "{tool} {args}: {err}");
    }
}

#[tokio::test]
async fn long_output_is_clipped_with_a_note() {
    let fx = Fixture::new(ToolOptions {
        allow_write: true,
        max_output_chars: 1_000,
        ..ToolOptions::default()
    });
    for i in 0..200 {
        fx.file(&format!("d/{i:03}-some-longish-file-name.txt"), "");
    }
    let out = fx.ok("list", json!({"path": "d"})).await;
    assert!(out.chars().count() <= 1_000, "{}", out.len());
    assert!(out.starts_with("000-") && out.trim_end().ends_with("199-some-longish-file-name.txt"));
    assert!(out.contains("characters cut from the middle"), "{out}");
}

#[tokio::test]
async fn special_files_are_refused_rather_than_blocking() {
    let fx = Fixture::writable();
    let fifo = fx.root().join("pipe");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(status.success());
    let attempts = [
        ("read", json!({"path": "pipe"})),
        (
            "edit",
            json!({"path": "pipe", "old_string": "a", "new_string": "b"}),
        ),
        ("write", json!({"path": "pipe", "content": "x"})),
    ];
    for (tool, args) in attempts {
        let call = fx.err(tool, args);
        let err = tokio::time::timeout(std::time::Duration::from_secs(5), call)
            .await
            .expect("must not block on a FIFO");
        assert!(err.contains("not a regular file"), "{tool}: {err}");
    }
    assert_eq!(
        fx.ok("grep", json!({"pattern": "x"})).await,
        "no matches for `x` in ."
    );
}

#[test]
fn the_toolbox_can_be_shared_across_tasks() {
    fn is_send_sync<T: Send + Sync>(_: &T) {}
    fn is_send<T: Send>(_: &T) {}
    let fx = Fixture::writable();
    is_send_sync(&fx.tools);
    let (args, cancel) = (json!({}), tokio_util::sync::CancellationToken::new());
    is_send(&fx.tools.call("bash", &args, &cancel));
}

/// A role limited to some tools (`[roles.<role>] tools`) is offered only those, and a call to one it
/// was not offered is refused, even when the model names it anyway.
#[tokio::test]
async fn a_limited_toolbox_offers_and_runs_only_its_tools() {
    let fx = Fixture::new(ToolOptions {
        allow_write: true,
        only: Some(vec!["read".into(), "write".into(), "nonsense".into()]),
        ..ToolOptions::default()
    });
    let names: Vec<String> = fx.tools.specs().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["read", "write"]);
    fx.ok("write", json!({"path": "a.txt", "content": "a\n"})).await;
    assert!(fx.ok("read", json!({"path": "a.txt"})).await.contains('a'));
    let refused = fx.err("bash", json!({"command": "echo hi"})).await;
    assert!(
        refused.contains("`bash` is not offered to this session; available tools: read, write"),
        "{refused}"
    );
    // Without write permission, a listed `write` is still not offered.
    let looking = Fixture::new(ToolOptions {
        only: Some(vec!["read".into(), "write".into()]),
        ..ToolOptions::default()
    });
    let names: Vec<String> = looking.tools.specs().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["read"]);
}

/// The 1.5B's way to "add a function": write the file with only that function, deleting the rest.
/// A write that would drop most of a file the session never looked at is refused with what it would
/// delete; after a `read` (or for a short file, or a write that keeps most lines) it goes through.
#[tokio::test]
async fn a_blind_overwrite_that_deletes_most_of_a_file_is_refused() {
    let fx = Fixture::writable();
    let calc = "\"\"\"A tiny calculator.\"\"\"\n\n\ndef add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n";
    fx.file("calc.py", calc);
    let only_mul = json!({"path": "calc.py", "content": "def mul(a, b):\n    return a * b\n"});
    let refused = fx.err("write", only_mul.clone()).await;
    assert!(
        refused.contains(
            "not written: this would replace calc.py, which you have not read in full, and delete 5 of its 5 lines"
        ) && refused.contains("`def add(a, b):`")
            && refused.contains("Read it first"),
        "{refused}"
    );
    assert_eq!(fx.read_back("calc.py"), calc, "nothing was lost");
    // Keeping the old lines and adding one is fine without a read.
    let added = format!("{calc}\n\ndef mul(a, b):\n    return a * b\n");
    fx.ok("write", json!({"path": "calc.py", "content": added})).await;
    // A short file, or a new one, may be replaced blindly.
    fx.file("short.txt", "one\ntwo\n");
    fx.ok("write", json!({"path": "short.txt", "content": "three\n"}))
        .await;
    // A read of part of it is not enough (the 1.5B read five lines of nine, then wrote).
    fx.file("calc2.py", calc);
    fx.ok("read", json!({"path": "calc2.py", "offset": 4})).await;
    let partly = fx
        .err(
            "write",
            json!({"path": "calc2.py", "content": "def mul(a, b):\n    return a * b\n"}),
        )
        .await;
    assert!(partly.contains("not read in full"), "{partly}");
    // After reading all of it, the session may replace it as it likes, and is told what went.
    fx.ok("read", json!({"path": "calc2.py"})).await;
    let replaced = fx
        .ok(
            "write",
            json!({"path": "calc2.py", "content": "def mul(a, b):\n    return a * b\n"}),
        )
        .await;
    assert!(fx.read_back("calc2.py").starts_with("def mul"));
    assert!(
        replaced.starts_with("overwrote calc2.py")
            && replaced.contains("this deleted 5 of its 5 lines")
            && replaced.contains("`def add(a, b):`"),
        "{replaced}"
    );
    // A rewrite that keeps most lines says nothing more.
    let kept = fx
        .ok(
            "write",
            json!({"path": "calc.py", "content": format!("{calc}# end\n")}),
        )
        .await;
    assert!(!kept.contains("deleted"), "{kept}");
}

/// With rewrites that may not drop (the small profile), a write that would delete most of a file is
/// refused even after a full read, as the field's 1.5B did after a wrong review ("mul is missing":
/// it wrote calc.py holding only `mul`, and `add` and `sub` were gone); lines go with `edit`.
#[tokio::test]
async fn a_write_that_deletes_most_of_a_file_is_refused_even_read_when_rewrites_may_not_drop() {
    let fx = Fixture::new(ToolOptions {
        allow_write: true,
        rewrites_may_drop: false,
        ..ToolOptions::default()
    });
    let calc = "\"\"\"A tiny calculator.\"\"\"\n\n\ndef add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n";
    fx.file("calc.py", calc);
    fx.ok("read", json!({"path": "calc.py"})).await;
    let only_mul = json!({"path": "calc.py", "content": "def mul(a, b):\n    return a * b\n"});
    let refused = fx.err("write", only_mul.clone()).await;
    assert!(
        refused.contains("this would delete 5 of the 5 lines of calc.py")
            && refused.contains("`def add(a, b):`")
            && refused.contains("`insert`")
            && refused.contains("an empty `new_string`")
            && !refused.contains("not read"),
        "{refused}"
    );
    // The same again is refused the same: there is no way around it but keeping the lines.
    assert_eq!(fx.err("write", only_mul).await, refused);
    assert_eq!(fx.read_back("calc.py"), calc, "nothing was lost");
    // Nor may an edit replace one definition by another (the field's other way to lose `sub`).
    let swap = json!({"path": "calc.py", "old_string": "def sub(a, b):\n    return a - b\n",
                      "new_string": "def mul(a, b):\n    return a * b\n"});
    let refused = fx.err("edit", swap).await;
    assert!(
        refused.contains("would replace `sub` with `mul`") && refused.contains("an empty `new_string`"),
        "{refused}"
    );
    assert_eq!(fx.read_back("calc.py"), calc, "nothing was lost");
    // Keeping the lines and adding one goes through; so does removing a few with `edit`.
    let added = format!("{calc}\n\ndef mul(a, b):\n    return a * b\n");
    fx.ok("write", json!({"path": "calc.py", "content": added})).await;
    fx.ok(
        "edit",
        json!({"path": "calc.py", "old_string": "def sub(a, b):\n    return a - b\n", "new_string": ""}),
    )
    .await;
    assert!(!fx.read_back("calc.py").contains("def sub"));
    // New files and short ones are written as ever.
    fx.ok("write", json!({"path": "new.py", "content": "x = 1\n"}))
        .await;
}

/// By default an edit may replace a definition (a rename is one), and its result says what went.
#[tokio::test]
async fn an_edit_that_replaces_a_definition_says_what_it_deleted() {
    let fx = Fixture::writable();
    fx.file(
        "calc.py",
        "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n",
    );
    let done = fx
        .ok(
            "edit",
            json!({"path": "calc.py", "old_string": "def sub(a, b):\n    return a - b\n",
                   "new_string": "def mul(a, b):\n    return a * b\n"}),
        )
        .await;
    assert!(done.contains("This deleted `sub`"), "{done}");
    // Changing a body, or adding beside what stays, says nothing more.
    let body = fx
        .ok(
            "edit",
            json!({"path": "calc.py", "old_string": "    return a * b\n", "new_string": "    return b * a\n"}),
        )
        .await;
    assert!(!body.contains("deleted"), "{body}");
    let beside = fx
        .ok(
            "edit",
            json!({"path": "calc.py", "old_string": "def add(a, b):\n", "new_string": "def neg(a):\n    return -a\n\n\ndef add(a, b):\n"}),
        )
        .await;
    assert!(!beside.contains("deleted"), "{beside}");
}

/// A weak reviewer reads "diff --git a/calc.py b/calc.py" (a line of the diff it was shown): it gets
/// the file that line names, with a note, instead of "no such file" until its turns run out.
#[tokio::test]
async fn a_diff_line_given_as_a_path_reads_the_file_it_names() {
    let fx = Fixture::writable();
    fx.file("calc.py", "def mul(a, b):\n    return a * b\n");
    for path in ["diff --git a/calc.py b/calc.py", "+++ b/calc.py", "--- a/calc.py"] {
        let out = fx.ok("read", json!({"path": path})).await;
        assert!(
            out.starts_with(&format!("(`{path}` is a line of a diff; this is calc.py)")),
            "{out}"
        );
        assert!(out.contains("return a * b"), "{out}");
    }
    // Still confined: a diff line naming a path outside the worktree is refused as any path is.
    let err = fx
        .err("read", json!({"path": "diff --git a/../outside/secret.txt b/x"}))
        .await;
    assert!(!err.contains("outside secret"), "{err}");
}

#[tokio::test]
async fn a_missing_path_says_which_existing_path_it_may_mean() {
    let fx = Fixture::writable();
    fx.file("test_calc.py", "import unittest\n");
    // Copied from a traceback or a unit's name: the file exists under a shorter path.
    for wrong in ["units/1-r2/test_calc.py", "1-r2/test_calc.py"] {
        let err = fx.err("read", json!({ "path": wrong })).await;
        assert!(
            err.contains("no such file or directory") && err.contains("`test_calc.py` exists: use that path"),
            "{wrong}: {err}"
        );
        let err = fx
            .err(
                "edit",
                json!({"path": wrong, "old_string": "import", "new_string": "x"}),
            )
            .await;
        assert!(err.contains("`test_calc.py` exists"), "{wrong}: {err}");
    }
    let err = fx.err("read", json!({"path": "nowhere/else.py"})).await;
    assert!(err.contains("`list` shows what is there"), "{err}");
}

/// The 1.5B wrote `calc_mul/calc.py` (its unit's name, then the file it was told to change): a copy
/// in a new folder that nothing imported, merged while `calc.py` stayed as it was. Refused once with
/// the path that exists; sent again, the write is taken as meant.
#[tokio::test]
async fn a_new_copy_of_an_existing_file_in_a_new_folder_is_questioned_once() {
    let fx = Fixture::writable();
    fx.file("calc.py", "def add(a, b):\n    return a + b\n");
    fx.file("src/util.py", "x = 1\n");
    let write = |path: &str| json!({"path": path, "content": "def mul(a, b):\n    return a * b\n"});
    for wrong in [
        "calc_mul/calc.py",
        "units/calc_mul-r2/calc.py",
        "src/calc_mul/util.py",
    ] {
        let err = fx.err("write", write(wrong)).await;
        let meant = if wrong.ends_with("util.py") {
            "src/util.py"
        } else {
            "calc.py"
        };
        assert!(
            err.contains("would be a new file in a new folder") && err.contains(&format!("write `{meant}`")),
            "{wrong}: {err}"
        );
        assert!(!exists(&fx.root().join(wrong)), "{wrong} was not written");
    }
    // Meant after all (a package of its own with a file of the same name): the same write again.
    fx.ok("write", write("calc_mul/calc.py")).await;
    assert!(exists(&fx.root().join("calc_mul/calc.py")));
    // Not questioned: a new file in an existing folder, a new name in a new folder, the file itself.
    fx.ok("write", write("src/calc.py")).await;
    fx.ok("write", write("pkg/mul.py")).await;
    fx.ok("write", write("calc.py")).await;
    assert!(fs::read_to_string(fx.root().join("calc.py"))
        .expect("read")
        .contains("mul"));
}

/// The field runs' 1.5B put its unit's name in front of paths (`calc_mul-r2-r3/calc.py`) and,
/// refused, sent the same calls until it was cut off as a loop: a first folder named like the unit
/// that the worktree does not have is taken away, and the result says so. Made with `bash` first, a
/// folder of that name is used like any other; what is left still resolves inside the worktree.
#[tokio::test]
async fn a_folder_named_like_the_unit_is_taken_off_the_path_and_said() {
    let fx = Fixture::new(ToolOptions {
        allow_write: true,
        not_folders: vec!["calc_mul-r2-r3".into()],
        ..ToolOptions::default()
    });
    fx.file("calc.py", "def add(a, b):\n    return a + b\n");
    let note = "(`calc_mul-r2-r3` is your unit's name, not a folder: this is `calc.py`.)";
    let read = fx.ok("read", json!({"path": "calc_mul-r2-r3/calc.py"})).await;
    assert!(read.starts_with(note) && read.contains("return a + b"), "{read}");
    let insert = json!({"path": "./calc_mul-r2-r3/calc.py", "text": "\ndef mul(a, b):\n    return a * b\n"});
    let done = fx.ok("insert", insert).await;
    assert!(done.starts_with(note), "{done}");
    let calc = fs::read_to_string(fx.root().join("calc.py")).expect("read");
    assert!(calc.contains("def add") && calc.contains("def mul"), "{calc}");
    assert!(!exists(&fx.root().join("calc_mul-r2-r3")));
    // A refusal keeps the note, so the model knows which file was meant.
    let err = fx
        .err(
            "edit",
            json!({"path": "calc_mul-r2-r3/calc.py", "old_string": "nowhere", "new_string": "x"}),
        )
        .await;
    assert!(err.starts_with(note), "{err}");
    // Out of the worktree is out, with the folder or without.
    let escape = json!({"path": "calc_mul-r2-r3/../../outside.txt", "text": "x"});
    assert!(fx.err("insert", escape).await.contains("outside the worktree"));
    // `write` keeps its refusal, which names the file to write; a new file under the folder is
    // written where asked.
    let write = json!({"path": "calc_mul-r2-r3/calc.py", "content": "def mul(a, b):\n    return a * b\n"});
    for _ in 0..2 {
        let err = fx.err("write", write.clone()).await;
        assert!(
            err.contains("write `calc.py`") && err.contains("is your unit's name, not a folder"),
            "{err}"
        );
    }
    let new = json!({"path": "calc_mul-r2-r3/notes.txt", "text": "n\n"});
    let done = fx.ok("insert", new).await;
    assert!(!done.contains("not a folder"), "{done}");
    assert!(exists(&fx.root().join("calc_mul-r2-r3/notes.txt")));
    fs::remove_dir_all(fx.root().join("calc_mul-r2-r3")).expect("rm");
    // Another new folder is still questioned once only.
    let other = json!({"path": "pkg/calc.py", "content": "x = 1\n"});
    assert!(fx
        .err("write", other.clone())
        .await
        .contains("send the same write again"));
    fx.ok("write", other).await;
    // A folder of that name that exists (made on purpose) is written like any other.
    fs::create_dir(fx.root().join("calc_mul-r2-r3")).expect("mkdir");
    let write = json!({"path": "calc_mul-r2-r3/calc.py", "content": "def mul(a, b):\n    return a * b\n"});
    let done = fx.ok("write", write).await;
    assert!(!done.contains("not a folder"), "{done}");
    assert!(exists(&fx.root().join("calc_mul-r2-r3/calc.py")));
}

/// Lines copied from `read` with their numbers still in front: refused with what to do, before they
/// land in a file (write, insert, edit's new text) or miss every match (edit's old text).
#[tokio::test]
async fn text_pasted_from_read_with_its_line_numbers_is_refused() {
    let fx = Fixture::writable();
    let calc = "def add(a, b):\n    return a + b\n";
    fx.file("calc.py", calc);
    let numbered = fx.ok("read", json!({"path": "calc.py"})).await;
    let err = fx
        .err("write", json!({"path": "calc.py", "content": numbered}))
        .await;
    assert!(err.contains("`content` carries `read`'s line numbers"), "{err}");
    let err = fx
        .err(
            "insert",
            json!({"path": "calc.py", "text": "     3\tdef mul(a, b):\n     4\t    return a * b\n"}),
        )
        .await;
    assert!(err.contains("`text` carries `read`'s line numbers"), "{err}");
    let err = fx
        .err(
            "edit",
            json!({"path": "calc.py", "old_string": "     2\t    return a + b", "new_string": "    return b + a"}),
        )
        .await;
    assert!(
        err.contains("`old_string` carries `read`'s line numbers"),
        "{err}"
    );
    let err = fx
        .err(
            "edit",
            json!({"path": "calc.py", "old_string": "return a + b", "new_string": "     2\t    return b + a"}),
        )
        .await;
    assert!(err.contains("`new_string` carries"), "{err}");
    assert_eq!(fx.read_back("calc.py"), calc, "nothing refused changed the file");
    // Tab-separated data that starts with numbers is written as given.
    fx.ok(
        "write",
        json!({"path": "data.tsv", "content": "1\tone\n2\ttwo\n"}),
    )
    .await;
}

/// The numbers retyped rather than pasted (a colon or spaces instead of the tab, lines skipped), as
/// the field's 1.5B sent them to `write` and `insert`: refused too, saying what to send instead.
#[tokio::test]
async fn lines_with_retyped_line_numbers_are_refused() {
    let fx = Fixture::writable();
    let test = "import unittest\n\n\nclass T(unittest.TestCase):\n    def test_add(self):\n        pass\n";
    fx.file("test_calc.py", test);
    fx.ok("read", json!({"path": "test_calc.py"})).await;
    let retyped = "    5:     def test_add(self):\n    6:         pass\n   14:    unittest.main()\n";
    let err = fx
        .err(
            "insert",
            json!({"path": "test_calc.py", "text": retyped, "after_line": 6}),
        )
        .await;
    assert!(err.contains("start with a line number"), "{err}");
    assert!(err.contains("send the lines of code alone"), "{err}");
    let spaced = "    14    if __name__ == '__main__':\n    15        unittest.main()\n";
    let err = fx
        .err("write", json!({"path": "test_calc.py", "content": spaced}))
        .await;
    assert!(err.contains("start with a line number"), "{err}");
    // One numbered statement, its body below it unnumbered (the field's 1.5B, again).
    let one = "\n    15    def test_mul(self):\n        pass\n";
    let err = fx
        .err(
            "insert",
            json!({"path": "test_calc.py", "text": one, "after_line": 6}),
        )
        .await;
    assert!(err.contains("start with a line number"), "{err}");
    assert_eq!(
        fx.read_back("test_calc.py"),
        test,
        "nothing refused changed the file"
    );
    // Data whose lines start with rising numbers, without indentation in front, is written.
    fx.ok(
        "write",
        json!({"path": "list.txt", "content": "1: one\n2: two\n"}),
    )
    .await;
}
