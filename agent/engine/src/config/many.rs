//! `[[treasury]]`: several treasuries in one file, one process. Each section is a whole
//! single-treasury config (chain with its endpoints, Safe, module, router, policies, quorum file,
//! root, keeper, journal, API) under a name; `[notify]` and `[pipeline]` at the top are the
//! defaults of the treasuries that do not set their own. Each treasury keeps its own journal (its
//! intents, cursor and lease), so no treasury ever waits on another's.

use super::*;

/// One `[[treasury]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TreasurySection {
    name: String,
    chain: ChainSection,
    safe: SafeSection,
    #[serde(default)]
    dex: Option<DexSection>,
    signing: SigningSection,
    #[serde(default)]
    journal: Option<JournalSection>,
    keeper: KeeperSection,
    #[serde(default)]
    api: Option<ApiSection>,
    #[serde(default)]
    notify: Option<NotifyConfig>,
    #[serde(default)]
    pipeline: Option<PipelineConfig>,
    #[serde(default)]
    policies: PoliciesConfig,
}

/// Checks every `[[treasury]]` of `file` (which has some) into its own [`Config`].
pub(super) fn check_all(file: ConfigFile, base_dir: &Path) -> Result<Vec<Config>, Vec<Problem>> {
    let mut p = Vec::new();
    let misplaced = [
        ("chain", file.chain.is_some()),
        ("safe", file.safe.is_some()),
        ("dex", file.dex.is_some()),
        ("signing", file.signing.is_some()),
        ("journal", file.journal.is_some()),
        ("keeper", file.keeper.is_some()),
        ("api", file.api.is_some()),
        ("policies", file.policies != PoliciesConfig::default()),
    ];
    for (key, present) in misplaced {
        if present {
            p.push(Problem::new(
                key,
                "with [[treasury]] sections, each treasury has its own: move it into them",
            ));
        }
    }
    let mut names = std::collections::BTreeSet::new();
    let mut configs = Vec::new();
    for (i, t) in file.treasuries.into_iter().enumerate() {
        let prefix = format!("treasury[{i}]");
        if !valid_name(&t.name) {
            p.push(Problem::new(format!("{prefix}.name"), "use 1-32 of a-z, 0-9, - and _"));
        } else if !names.insert(t.name.clone()) {
            p.push(Problem::new(format!("{prefix}.name"), format!("`{}` names two treasuries", t.name)));
        }
        let journal = t.journal.unwrap_or_else(|| JournalSection {
            url: format!("sqlite://{}.db", t.name),
            ..JournalSection::default()
        });
        let one = ConfigFile {
            chain: Some(t.chain),
            safe: Some(t.safe),
            dex: t.dex,
            signing: Some(t.signing),
            journal: Some(journal),
            keeper: Some(t.keeper),
            api: t.api,
            notify: t.notify.unwrap_or_else(|| file.notify.clone()),
            pipeline: t.pipeline.unwrap_or_else(|| file.pipeline.clone()),
            policies: t.policies,
            module: None,
            treasuries: Vec::new(),
        };
        match one.check(base_dir) {
            Ok(mut config) => {
                config.name = t.name;
                configs.push(config);
            }
            Err(problems) => {
                p.extend(problems.into_iter().map(|q| Problem::new(format!("{prefix}.{}", q.key), q.message)))
            }
        }
    }
    check_distinct(&mut p, &configs);
    if p.is_empty() { Ok(configs) } else { Err(p) }
}

/// Two treasuries never share a journal, a lease or an API address.
fn check_distinct(p: &mut Vec<Problem>, configs: &[Config]) {
    for (i, a) in configs.iter().enumerate() {
        for b in &configs[..i] {
            let key = format!("treasury[{i}]");
            if a.journal.url == b.journal.url {
                p.push(Problem::new(
                    format!("{key}.journal.url"),
                    format!("also the journal of `{}`", b.name),
                ));
            }
            if (a.chain.chain_id, a.safe.module) == (b.chain.chain_id, b.safe.module) {
                p.push(Problem::new(
                    format!("{key}.safe.module"),
                    format!("also the module of `{}` on this chain", b.name),
                ));
            }
            if let (Some(x), Some(y)) = (&a.api, &b.api)
                && x.listen == y.listen
                && x.listen.port() != 0
            {
                p.push(Problem::new(
                    format!("{key}.api.listen"),
                    format!("also the API address of `{}`", b.name),
                ));
            }
        }
    }
}

fn valid_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}
