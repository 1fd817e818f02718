//! The Node project of the builds benchmark: a TypeScript package with real dev dependencies from
//! the npm registry — `typescript` (`npm run build` is `tsc`), `mocha` for the tests, and their type
//! packages, some 75 packages and 33 MB in `node_modules` — one module per unit, each with a test
//! file of its own that the unit leaves alone.
//!
//! The lockfile is made once (`npm install --package-lock-only`, into the template the repositories
//! are copied from, so it is committed); every install after that is `npm ci` from it, from the
//! registry: the floor's once, the missions' baselines once each, and each unit's with `cache = "off"`.

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::{shell, Project};

const PACKAGE_JSON: &str = r#"{
  "name": "warm",
  "version": "0.1.0",
  "private": true,
  "scripts": {
    "build": "tsc -p .",
    "test": "mocha dist/*.test.js"
  },
  "devDependencies": {
    "@types/mocha": "^10.0.0",
    "@types/node": "^20.0.0",
    "mocha": "^10.0.0",
    "typescript": "^5.0.0"
  }
}
"#;

const TSCONFIG: &str = r#"{
  "compilerOptions": {
    "target": "es2022",
    "module": "commonjs",
    "strict": true,
    "outDir": "dist",
    "rootDir": "src",
    "types": ["node", "mocha"]
  },
  "include": ["src"]
}
"#;

pub struct Package {
    scratch: PathBuf,
}

impl Package {
    /// A package whose npm caches are under `scratch`.
    pub fn new(scratch: &Path) -> Package {
        Package {
            scratch: scratch.to_path_buf(),
        }
    }

    /// npm's settings for the bench's own installs, as verification sets them for a mission's
    /// (see `install_env` in crates/core/src/verify.rs), with the cache in `cache`.
    fn npm_env(cache: PathBuf) -> Vec<(&'static str, PathBuf)> {
        vec![
            ("npm_config_cache", cache),
            ("npm_config_update_notifier", "false".into()),
            ("npm_config_audit", "false".into()),
            ("npm_config_fund", "false".into()),
        ]
    }
}

impl Project for Package {
    fn describe(&self) -> String {
        "Node package: TypeScript with typescript, mocha, @types/node and @types/mocha from the npm registry, \
         `npm ci`, `npm run build` (tsc), `npm test` (mocha)"
            .into()
    }

    fn prepare(&self, dir: &Path, units: usize) -> Result<()> {
        std::fs::create_dir_all(dir.join("src"))?;
        std::fs::write(dir.join("package.json"), PACKAGE_JSON)?;
        std::fs::write(dir.join("tsconfig.json"), TSCONFIG)?;
        std::fs::write(dir.join(".gitignore"), "node_modules/\ndist/\n")?;
        std::fs::write(
            dir.join("src/part.ts"),
            "export interface Part {\n  n: number;\n}\n",
        )?;
        for i in 1..=units {
            let (path, content) = self.module(i, 0);
            std::fs::write(dir.join(path), content)?;
            std::fs::write(dir.join(format!("src/p{i}.test.ts")), test_file(i))?;
        }
        // A cache of its own: the floor's install after it starts from an empty one, as every
        // install in a mission does.
        let env = Self::npm_env(self.scratch.join("npm-cache-lock"));
        shell(dir, "npm install --package-lock-only", &env)?;
        Ok(())
    }

    /// Module `i` as version `v` of it. Single quotes only: the content travels in a plan.
    fn module(&self, i: usize, v: usize) -> (String, String) {
        let content = format!(
            "import type {{ Part }} from './part';\n\nexport function part(): Part {{\n  return {{ n: {} }};\n}}\n",
            i * 100 + v
        );
        (format!("src/p{i}.ts"), content)
    }

    fn install(&self) -> Option<&'static str> {
        Some("npm ci")
    }

    fn build(&self) -> &'static str {
        "npm run build"
    }

    fn test(&self) -> &'static str {
        "npm test"
    }

    fn floor_env(&self) -> Vec<(&'static str, PathBuf)> {
        Self::npm_env(self.scratch.join("npm-cache-floor"))
    }

    /// Nothing: verification gives each install its own npm cache in its sandbox's temp folder.
    fn mission_env(&self) -> Vec<(&'static str, PathBuf)> {
        Vec::new()
    }

    /// `npm ci` downloads what the lockfile names.
    fn units_install_online(&self) -> bool {
        true
    }
}

/// Module `i`'s test, through JSON and back.
fn test_file(i: usize) -> String {
    format!(
        "import {{ strict as assert }} from 'node:assert';\nimport {{ part }} from './p{i}';\n\n\
         describe('p{i}', () => {{\n  it('round-trips through JSON', () => {{\n    \
         assert.deepEqual(JSON.parse(JSON.stringify(part())), part());\n  }});\n}});\n"
    )
}
