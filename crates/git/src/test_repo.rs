//! Scratch repositories for the crate's unit tests, made with git itself and isolated from the
//! machine's configuration.

use std::process::Command;

pub(crate) struct Scratch {
    _dir: tempfile::TempDir,
    pub root: std::path::PathBuf,
}

impl Scratch {
    pub fn new() -> Scratch {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().canonicalize().expect("canonical").join("repo");
        std::fs::create_dir_all(&root).expect("mkdir");
        let scratch = Scratch { _dir: dir, root };
        scratch.git(&["init", "-q", "-b", "main"]);
        scratch
    }

    pub fn git(&self, args: &[&str]) -> String {
        self.git_in(&self.root, args)
    }

    pub fn git_in(&self, dir: &std::path::Path, args: &[&str]) -> String {
        let home = self.root.parent().expect("parent").join("home");
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=T", "-c", "user.email=t@example.com"])
            .args(args)
            .env("HOME", &home)
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("LC_ALL", "C")
            .output()
            .expect("git");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn write(&self, path: &str, content: impl AsRef<[u8]>) {
        let path = self.root.join(path);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, content).expect("write");
    }

    pub fn commit(&self) -> gix::ObjectId {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", "c"]);
        let id = self.git(&["rev-parse", "HEAD"]);
        gix::ObjectId::from_hex(id.trim().as_bytes()).expect("id")
    }

    pub fn open(&self) -> gix::Repository {
        gix::open_opts(self.root.join(".git"), gix::open::Options::isolated()).expect("open")
    }
}

/// `chmod 755` on a file the test wrote.
pub fn make_executable(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}
