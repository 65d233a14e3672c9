//! Loading policies from config, and reloading changed scripts without losing a working one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{PoliciesConfig, PolicyEntry};
use crate::engine::{CompiledPolicy, PolicyEngine, Run};
use crate::error::{PolicyError, Result};
use crate::intent::{Action, Intent};
use crate::view::{Book, Payment, SnapshotView};

/// One loaded policy: its config entry, the compiled version in use and the source it came from.
#[derive(Debug)]
struct Loaded {
    entry: PolicyEntry,
    path: PathBuf,
    compiled: CompiledPolicy,
    source: String,
    /// The entry's fixtures, resolved against the config's directory.
    fixtures: Vec<PathBuf>,
}

/// The version of a script: the first 16 hex digits of the SHA-256 of its source.
pub fn version_of(source: &str) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(source.as_bytes())[..8])
}

/// Every configured policy, compiled, with the engine that runs them.
#[derive(Debug)]
pub struct PolicySet {
    engine: PolicyEngine,
    book: Arc<Book>,
    policies: BTreeMap<String, Loaded>,
    config: PoliciesConfig,
}

/// The result of one policy's evaluation in [`PolicySet::evaluate_all`].
#[derive(Debug)]
pub struct Outcome {
    /// Policy name.
    pub policy: String,
    /// Its intents, or why it failed (other policies are unaffected).
    pub result: Result<Vec<Intent>>,
}

/// What a reload changed.
#[derive(Debug, Default)]
pub struct ReloadReport {
    /// Policies whose new version is now in use.
    pub reloaded: Vec<String>,
    /// Policies whose new version failed; the previous version keeps running.
    pub kept_previous: Vec<PolicyError>,
}

impl ReloadReport {
    /// One alert intent per failed reload, for the same notification path as script alerts.
    pub fn alerts(&self) -> Vec<Intent> {
        self.kept_previous
            .iter()
            .map(|e| {
                let policy = e.policy().unwrap_or("?").to_owned();
                Intent {
                    key: format!("{policy}:reload-failed:{}", stable_hash(&e.to_string())),
                    policy,
                    memo: None,
                    action: Action::Alert {
                        message: format!("new version not loaded, previous one still runs: {e}"),
                    },
                }
            })
            .collect()
    }
}

/// A short stable hash (FNV-1a) so a repeated failure keeps the same alert key.
fn stable_hash(s: &str) -> String {
    let h =
        s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    format!("{h:016x}")
}

impl PolicySet {
    /// Compiles every policy of `cfg`, resolving script paths against `base_dir`.
    ///
    /// Fails on the first policy that does not load: at start there is no previous version to
    /// fall back to.
    pub fn load(cfg: &PoliciesConfig, base_dir: &Path) -> Result<Self> {
        cfg.validate()?;
        let engine = PolicyEngine::new(cfg.limits);
        let book = Arc::new(Book::from_config(cfg));
        let mut policies = BTreeMap::new();
        for entry in &cfg.policies {
            let path = base_dir.join(&entry.file);
            let source = read(&path)?;
            let compiled = engine.compile(&entry.name, &path, &source, entry.period, &book)?;
            let fixtures = entry.fixtures.iter().map(|f| base_dir.join(f)).collect();
            let loaded = Loaded { entry: entry.clone(), path, compiled, source, fixtures };
            passes_fixtures(&engine, &book, &loaded, &loaded.compiled)?;
            policies.insert(entry.name.clone(), loaded);
        }
        Ok(Self { engine, book, policies, config: cfg.clone() })
    }

    /// Compiles every policy of `cfg` from `sources` (policy name → script) instead of files.
    pub fn from_sources(cfg: &PoliciesConfig, sources: &BTreeMap<String, String>) -> Result<Self> {
        cfg.validate()?;
        let engine = PolicyEngine::new(cfg.limits);
        let book = Arc::new(Book::from_config(cfg));
        let mut policies = BTreeMap::new();
        for entry in &cfg.policies {
            let source = sources
                .get(&entry.name)
                .ok_or_else(|| PolicyError::Config(format!("policy `{}`: no script given", entry.name)))?
                .clone();
            let path = PathBuf::from(format!("{}.rhai", entry.name));
            let compiled = engine.compile(&entry.name, &path, &source, entry.period, &book)?;
            // A pinned set is replayed as pinned: its fixtures were checked where it was made.
            let loaded = Loaded { entry: entry.clone(), path, compiled, source, fixtures: Vec::new() };
            policies.insert(entry.name.clone(), loaded);
        }
        Ok(Self { engine, book, policies, config: cfg.clone() })
    }

    /// The version (source hash, [`version_of`]) of the script policy `name` runs now.
    pub fn version(&self, name: &str) -> Option<String> {
        self.policies.get(name).map(|l| version_of(&l.source))
    }

    /// Re-reads every script; a changed one that compiles replaces the old, one that does not is
    /// reported and the old version stays in use.
    pub fn reload(&mut self) -> ReloadReport {
        let mut report = ReloadReport::default();
        for (name, loaded) in &mut self.policies {
            let source = match read(&loaded.path) {
                Ok(s) if s == loaded.source => continue,
                Ok(s) => s,
                Err(e) => {
                    report.kept_previous.push(PolicyError::Config(format!("policy `{name}`: {e}")));
                    continue;
                }
            };
            let entry = &loaded.entry;
            let candidate = self
                .engine
                .compile(name, &loaded.path, &source, entry.period, &self.book)
                .and_then(|c| passes_fixtures(&self.engine, &self.book, loaded, &c).map(|()| c));
            match candidate {
                Ok(compiled) => {
                    tracing::info!(policy = %name, version = %version_of(&source), "policy reloaded");
                    loaded.compiled = compiled;
                    loaded.source = source;
                    report.reloaded.push(name.clone());
                }
                Err(e) => {
                    tracing::warn!(policy = %name, error = %e, "reload failed, keeping previous version");
                    report.kept_previous.push(e);
                }
            }
        }
        report
    }

    /// The source of every policy in use, by name (what a [`crate::replay::PolicyBundle`] pins).
    pub fn sources(&self) -> BTreeMap<String, String> {
        self.policies.iter().map(|(name, l)| (name.clone(), l.source.clone())).collect()
    }

    /// The policies section this set was loaded from.
    pub fn config(&self) -> &PoliciesConfig {
        &self.config
    }

    /// The engine, for building views and running ad-hoc scripts.
    pub fn engine(&self) -> &PolicyEngine {
        &self.engine
    }

    /// The config's names.
    pub fn book(&self) -> &Arc<Book> {
        &self.book
    }

    /// Configured policies, by name.
    pub fn entries(&self) -> impl Iterator<Item = &PolicyEntry> {
        self.policies.values().map(|l| &l.entry)
    }

    /// Runs one policy with its configured trigger kind as the trigger label.
    pub fn evaluate(&self, name: &str, view: &Arc<SnapshotView>, history: &[Payment]) -> Result<Vec<Intent>> {
        let loaded = self
            .policies
            .get(name)
            .ok_or_else(|| PolicyError::Config(format!("no policy named `{name}`")))?;
        let run = Run { trigger: loaded.entry.trigger.kind(), history };
        self.engine.evaluate(&loaded.compiled, view, run)
    }

    /// Runs every policy `fired` selects; each fails alone.
    pub fn evaluate_all(
        &self,
        view: &Arc<SnapshotView>,
        history: &[Payment],
        fired: impl Fn(&PolicyEntry) -> bool,
    ) -> Vec<Outcome> {
        self.policies
            .values()
            .filter(|l| fired(&l.entry))
            .map(|l| Outcome {
                policy: l.entry.name.clone(),
                result: self.evaluate(&l.entry.name, view, history),
            })
            .collect()
    }
}

/// Runs `compiled` (a version of `loaded`'s policy) on the policy's own fixtures; the first one it
/// fails is the error, naming the fixture and what differed.
fn passes_fixtures(
    engine: &PolicyEngine,
    book: &Arc<Book>,
    loaded: &Loaded,
    compiled: &CompiledPolicy,
) -> Result<()> {
    for fixture in &loaded.fixtures {
        let report =
            crate::fixture::check_fixture(engine, book, compiled, loaded.entry.trigger.kind(), fixture)?;
        if !report.passed {
            return Err(PolicyError::FixtureFailed {
                policy: loaded.entry.name.clone(),
                fixture: fixture.clone(),
                diff: report.diff.join("; "),
            });
        }
    }
    Ok(())
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| PolicyError::Io { path: path.into(), source })
}
