//! The Rust project of the builds benchmark: a library depending on serde (with derive) and
//! serde_json, one module per unit. The registry is reached once (`cargo fetch` into a private
//! CARGO_HOME); every build after that is `--offline`.

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::{shell, Project};

pub struct Crate {
    cargo_home: PathBuf,
}

impl Crate {
    /// A crate whose Cargo home (registry index and sources) is under `scratch`.
    pub fn new(scratch: &Path) -> Crate {
        Crate {
            cargo_home: scratch.join("cargo-home"),
        }
    }
}

impl Project for Crate {
    fn describe(&self) -> String {
        "Rust crate: serde (derive) and serde_json, `cargo build --offline --all-targets`, `cargo test --offline`"
            .into()
    }

    fn prepare(&self, dir: &Path, units: usize) -> Result<()> {
        std::fs::create_dir_all(dir.join("src"))?;
        std::fs::write(
            dir.join("Cargo.toml"),
            "[package]\nname = \"warm\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\n\
             serde = { version = \"1\", features = [\"derive\"] }\nserde_json = \"1\"\n",
        )?;
        std::fs::write(dir.join(".gitignore"), "target/\n")?;
        let mut lib = String::from(
            "#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]\npub struct Part {\n    pub n: u32,\n}\n\n",
        );
        for i in 1..=units {
            lib.push_str(&format!("pub mod p{i};\n"));
            let (path, content) = self.module(i, 0);
            std::fs::write(dir.join(path), content)?;
        }
        std::fs::write(dir.join("src/lib.rs"), lib)?;
        let env = self.floor_env();
        shell(dir, "cargo generate-lockfile", &env)?;
        shell(dir, "cargo fetch", &env)?;
        Ok(())
    }

    /// Module `i` as version `v` of it: a function and a test through serde_json.
    fn module(&self, i: usize, v: usize) -> (String, String) {
        let content = format!(
            "pub fn part() -> crate::Part {{\n    crate::Part {{ n: {} }}\n}}\n\n#[cfg(test)]\nmod tests {{\n    #[test]\n    fn round_trips() {{\n        let text = serde_json::to_string(&super::part()).unwrap();\n        assert_eq!(serde_json::from_str::<crate::Part>(&text).unwrap(), super::part());\n    }}\n}}\n",
            i * 100 + v
        );
        (format!("src/p{i}.rs"), content)
    }

    fn install(&self) -> Option<&'static str> {
        None
    }

    fn build(&self) -> &'static str {
        "cargo build --offline --all-targets"
    }

    fn test(&self) -> &'static str {
        "cargo test --offline"
    }

    fn floor_env(&self) -> Vec<(&'static str, PathBuf)> {
        vec![("CARGO_HOME", self.cargo_home.clone())]
    }

    /// The fetched sources, and the toolchain the bench itself was started with, for a mission
    /// whose HOME is private.
    fn mission_env(&self) -> Vec<(&'static str, PathBuf)> {
        let rustup_home = std::env::var_os("RUSTUP_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".rustup")))
            .unwrap_or_default();
        vec![
            ("CARGO_HOME", self.cargo_home.clone()),
            ("RUSTUP_HOME", rustup_home),
        ]
    }

    /// Every unit builds `--offline` from the fetched sources.
    fn units_install_online(&self) -> bool {
        false
    }
}
