//! A confined command does its legitimate work — writes beneath its writable folders and its temp
//! folder, reads anything — and fails every escape a hostile model tried: writing next to it, into
//! /tmp or a repository's .git, connecting out, or leaving through `setsid`.

use std::path::Path;
use std::process::Stdio;

use orchestrator_sandbox::{landlock_abi, Policy, Sandbox};
use orchestrator_test_support::git::ScratchRepo;

/// These machines have Landlock (ABI 7); a kernel without it fails here rather than passing silently.
fn require_landlock() {
    assert!(
        landlock_abi() >= 4,
        "these tests need Landlock ABI 4 or newer (found {}): the confinement they check would be missing",
        landlock_abi()
    );
}

/// Runs `script` with bash under `sandbox` in `dir`: (exit code, stdout + stderr).
async fn run(sandbox: &Sandbox, dir: &Path, script: &str) -> (i32, String) {
    let mut command = tokio::process::Command::new("bash");
    command
        .arg("-c")
        .arg(format!("exec 2>&1\n{script}"))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let _lifeline = sandbox
        .apply(&mut command)
        .expect("the command can be supervised");
    let output = command.output().await.expect("bash runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

fn policy(writable: &Path) -> Policy {
    Policy {
        writable: vec![writable.to_path_buf()],
        ..Policy::default()
    }
}

#[tokio::test]
async fn writes_stay_beneath_the_writable_folders() {
    require_landlock();
    let work = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("readme"), "readable\n").unwrap();
    let sandbox = Sandbox::confined(&policy(work.path())).unwrap();
    assert!(sandbox.is_confined());

    // The legitimate work: files and folders in the worktree, temp files, reading anywhere, /dev/null.
    let (code, out) = run(
        &sandbox,
        work.path(),
        &format!(
            "set -e; mkdir -p src && echo hi > src/a.txt && mv src/a.txt src/b.txt && rm src/b.txt; \
             t=$(mktemp) && echo temp > \"$t\" && cat \"$t\"; cat {}/readme; echo gone > /dev/null; echo done",
            outside.path().display()
        ),
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("temp\nreadable\ndone"), "{out}");
    assert!(
        sandbox.temp_dir().starts_with(std::env::temp_dir()),
        "{:?}",
        sandbox.temp_dir()
    );

    // The escapes: next to the worktree, /tmp itself, and through a detached (setsid) child.
    let target = outside.path().join("planted");
    for script in [
        format!("echo x > {}", target.display()),
        format!(
            "touch {}",
            std::env::temp_dir().join("orchestrator-escape-test").display()
        ),
        format!("setsid bash -c 'echo x > {}' ; sleep 0.2", target.display()),
        format!("mkdir {}", outside.path().join("dir").display()),
        format!("rm {}/readme", outside.path().display()),
    ] {
        let (_, out) = run(&sandbox, work.path(), &script).await;
        assert!(!target.exists(), "{script}: {out}");
        assert!(outside.path().join("readme").exists(), "{script}: {out}");
        assert!(!outside.path().join("dir").exists(), "{script}: {out}");
        assert!(
            !std::env::temp_dir().join("orchestrator-escape-test").exists(),
            "{script}: {out}"
        );
    }
    let (code, out) = run(&sandbox, work.path(), &format!("echo x > {}", target.display())).await;
    assert_ne!(code, 0);
    assert!(out.contains("Permission denied"), "the command sees why: {out}");
}

#[tokio::test]
async fn a_repository_outside_the_worktree_cannot_be_changed() {
    require_landlock();
    let repo = ScratchRepo::init();
    let git = |args: &[&str]| repo.git(args);
    git(&[
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@t",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "start",
    ]);
    let head = git(&["rev-parse", "HEAD"]);
    let worktree = repo.path().join("wt");
    git(&["worktree", "add", "-q", "-b", "unit", worktree.to_str().unwrap()]);
    // Only the worktree's own files are the session's; the shared .git is not.
    let sandbox = Sandbox::confined(&policy(&worktree)).unwrap();
    let attacks = [
        "git update-ref refs/heads/main HEAD~0^{tree} 2>&1; git update-ref refs/heads/main $(git commit-tree -m x HEAD^{tree})",
        "git config core.fsmonitor 'touch /tmp/pwned'",
        "echo 'touch /tmp/pwned' > \"$(git rev-parse --git-common-dir)/hooks/pre-commit\"",
        "echo user-file > ../user-file",
    ];
    for attack in attacks {
        let (code, out) = run(&sandbox, &worktree, attack).await;
        assert_ne!(code, 0, "{attack}: {out}");
    }
    assert_eq!(
        git(&["rev-parse", "main"]),
        head,
        "the user's branch did not move"
    );
    let fsmonitor = std::process::Command::new("git")
        .args(["config", "--get", "core.fsmonitor"])
        .current_dir(repo.path())
        .output()
        .unwrap();
    assert!(
        fsmonitor.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&fsmonitor.stdout)
    );
    assert!(!repo.path().join(".git/hooks/pre-commit").exists());
    assert!(!repo.path().join("user-file").exists());
    // Reading the repository still works, and so does writing the worktree's files.
    let (code, out) = run(
        &sandbox,
        &worktree,
        "git log --oneline -1 && echo work > file.txt && cat file.txt",
    )
    .await;
    assert_eq!(code, 0, "{out}");
}

#[tokio::test]
async fn tcp_is_closed_unless_the_policy_opens_it() {
    require_landlock();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let work = tempfile::tempdir().unwrap();
    let connect = format!("exec 3<>/dev/tcp/127.0.0.1/{port} && echo connected");
    let closed = Sandbox::confined(&policy(work.path())).unwrap();
    let (code, out) = run(&closed, work.path(), &connect).await;
    assert_ne!(code, 0, "{out}");
    assert!(!out.contains("connected"), "{out}");
    assert!(closed.describe().contains("network off"), "{}", closed.describe());
    let open = Sandbox::confined(&Policy {
        network: true,
        ..policy(work.path())
    })
    .unwrap();
    let (code, out) = run(&open, work.path(), &connect).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("connected"), "{out}");
}

#[tokio::test]
async fn processes_outside_the_sandbox_cannot_be_signalled() {
    require_landlock();
    let work = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::confined(&policy(work.path())).unwrap();
    let me = std::process::id();
    let (code, out) = run(&sandbox, work.path(), &format!("kill -0 {me} && echo reachable")).await;
    assert_ne!(code, 0, "{out}");
    assert!(!out.contains("reachable"), "{out}");
    // Its own children are its to signal.
    let (code, out) = run(&sandbox, work.path(), "sleep 5 & kill $! && wait $!; echo $?").await;
    assert_eq!((code, out.trim()), (0, "143"));
}

#[tokio::test]
async fn unconfined_is_said_and_changes_nothing() {
    let sandbox = Sandbox::unconfined(&[]).unwrap();
    assert!(!sandbox.is_confined());
    assert!(sandbox.describe().starts_with("off"), "{}", sandbox.describe());
    let outside = tempfile::tempdir().unwrap();
    let (code, out) = run(&sandbox, outside.path(), "echo x > written && echo \"$TMPDIR\"").await;
    assert_eq!(code, 0, "{out}");
    assert!(outside.path().join("written").exists());
    assert_eq!(out.trim(), sandbox.temp_dir().display().to_string());
}

#[tokio::test]
async fn commands_get_only_the_allow_listed_environment() {
    // Cargo sets CARGO_MANIFEST_DIR for the test process: a name on no list, like OPENAI_API_KEY,
    // DATABASE_URL or SSH_AUTH_SOCK would be.
    assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());
    let work = tempfile::tempdir().unwrap();
    for sandbox in [
        Sandbox::confined(&policy(work.path())).unwrap(),
        Sandbox::unconfined(&[]).unwrap(),
    ] {
        let (code, out) = run(&sandbox, work.path(), "env").await;
        assert_eq!(code, 0, "{out}");
        assert!(!out.contains("CARGO_MANIFEST_DIR="), "{out}");
        assert!(out.contains("PATH=") && out.contains("HOME="), "{out}");
        assert!(out.contains("GIT_TERMINAL_PROMPT=0"), "{out}");
    }
    let listed = Sandbox::confined(&Policy {
        env: vec!["CARGO_MANIFEST_DIR".into()],
        ..policy(work.path())
    })
    .unwrap();
    let (_, out) = run(&listed, work.path(), "env").await;
    assert!(
        out.contains("CARGO_MANIFEST_DIR="),
        "`[sandbox] env` passes a variable on: {out}"
    );
}

#[tokio::test]
async fn the_orchestrator_is_not_dumpable_and_root_commands_lose_ptrace() {
    require_landlock();
    // The orchestrator's environment and memory (where the API key is) then need CAP_SYS_PTRACE: a
    // command of the same non-root user is refused. (Root on some kernels can still read it — seen on
    // this project's VMs — which is why the key also never enters agent environments.)
    orchestrator_sandbox::protect_process();
    const PR_GET_DUMPABLE: libc::c_int = 3;
    // SAFETY: a prctl query on this process.
    assert_eq!(unsafe { libc::prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) }, 0);
    let work = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::confined(&policy(work.path())).unwrap();
    let (code, out) = run(&sandbox, work.path(), "grep -E '^Cap(Eff|Bnd)' /proc/self/status").await;
    assert_eq!(code, 0, "{out}");
    if unsafe { libc::geteuid() } == 0 {
        for line in out.lines() {
            let mask = u64::from_str_radix(line.split_whitespace().last().unwrap_or("0"), 16).unwrap();
            assert_eq!(mask & (1 << 19), 0, "CAP_SYS_PTRACE is gone: {line}");
        }
    }
}
