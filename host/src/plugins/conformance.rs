//! The conformance corpus and the one check every plugin must pass before it
//! may become active: at start-up, on hot reload and in `keeper plugin check`.
//!
//! The corpus (host/conformance/, embedded in the binary) is a set of
//! keeper.db `discoveries` rows as the store writes them — every discovery
//! type with every field, with only the required ones, and at the forms'
//! maximum lengths; unicode; locations the lookup cannot resolve; rows the old
//! bot wrote — and a fixed lookup snapshot taken from the sample
//! VH-Database. `generate.py` beside the corpus says how it was made.
//!
//! A plugin passes when it reports a name and a version, and for every case
//! returns a row that fits VH-Database's `discoveries` table
//! ([`TargetSchema::check`]) without trapping or exceeding a limit. Cases
//! marked `any` are rows a plugin may refuse with a mapping error (a blank
//! description, metadata that is not JSON); it must still not break on them.

use std::sync::{Arc, OnceLock};

use serde::Deserialize;

use crate::mapper::{LimitRefused, Lookup, MapError, Plugin, PluginError, PluginInfo};
use crate::row::{ColumnName, Row, Value};
use crate::sink::TargetSchema;

const CASES: &str = include_str!("../../conformance/cases.json");
const LOOKUP: &str = include_str!("../../conformance/lookup.json");

/// What a case demands of a plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    /// A valid report: the plugin must map it to a valid VH row.
    Map,
    /// A damaged legacy row: a mapping error is as good as a valid row.
    Any,
}

/// One keeper.db row of the corpus.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub expect: Expect,
    pub row: Row,
}

#[derive(Deserialize)]
struct RawCase {
    name: String,
    expect: Expect,
    row: serde_json::Map<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct RawLookup {
    systems: Vec<(String, String)>,
    planets: Vec<(i64, String, String)>,
    moons: Vec<(i64, i64, String)>,
}

/// The corpus with its lookup snapshot.
#[derive(Debug)]
pub struct Corpus {
    pub cases: Vec<Case>,
    pub lookup: Arc<Lookup>,
}

/// The embedded corpus does not parse: a build made from a broken checkout.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the conformance corpus built into this binary is broken ({0}); rebuild from a clean checkout")]
pub struct CorpusError(String);

impl Corpus {
    /// The corpus shipped in the binary, parsed once.
    pub fn shipped() -> Result<&'static Corpus, CorpusError> {
        static CORPUS: OnceLock<Result<Corpus, CorpusError>> = OnceLock::new();
        CORPUS
            .get_or_init(|| Corpus::parse(CASES, LOOKUP))
            .as_ref()
            .map_err(Clone::clone)
    }

    fn parse(cases: &str, lookup: &str) -> Result<Corpus, CorpusError> {
        let raw: Vec<RawCase> = serde_json::from_str(cases).map_err(|e| CorpusError(format!("cases.json: {e}")))?;
        let mut out = Vec::with_capacity(raw.len());
        for case in raw {
            let mut row = Vec::with_capacity(case.row.len());
            for (column, value) in case.row {
                let value: Value = serde_json::from_value(value)
                    .map_err(|e| CorpusError(format!("case {:?}, column {column}: {e}", case.name)))?;
                row.push((ColumnName::from(column), value));
            }
            out.push(Case {
                name: case.name,
                expect: case.expect,
                row: Row(row),
            });
        }
        let raw: RawLookup = serde_json::from_str(lookup).map_err(|e| CorpusError(format!("lookup.json: {e}")))?;
        Ok(Corpus {
            cases: out,
            lookup: Arc::new(Lookup::new(raw.systems, raw.planets, raw.moons)),
        })
    }
}

/// How one case went.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A valid VH row, with this many warnings.
    Mapped { warnings: usize },
    /// Refused with a mapping error, which this case allows.
    Refused(String),
    /// What disqualifies the plugin.
    Failed(String),
}

#[derive(Debug, Clone)]
pub struct CaseResult {
    pub name: String,
    pub outcome: Outcome,
    /// What the plugin returned, when it returned a row: for `keeper plugin
    /// check --json`, which side-by-side comparisons read.
    pub mapped: Option<crate::mapper::Mapped>,
}

/// Why a plugin may not become active. The message is what the registry,
/// the log and `keeper plugin check` show.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Rejection {
    #[error("{0}")]
    Load(String),
    #[error("{0}")]
    Corpus(#[from] CorpusError),
    /// It asks for more memory or time than this keeper allows.
    #[error("{0}")]
    Limits(#[from] LimitRefused),
    #[error("the plugin reports no name (info().name is empty)")]
    NoName,
    #[error("the plugin reports no version (info().version is empty)")]
    NoVersion,
    #[error("{failed} of {total} conformance case(s) failed; first, {case:?}: {reason}")]
    Cases {
        failed: usize,
        total: usize,
        case: String,
        reason: String,
    },
}

impl From<PluginError> for Rejection {
    fn from(e: PluginError) -> Rejection {
        Rejection::Load(e.to_string())
    }
}

/// The result of checking one plugin file.
pub struct Verdict {
    /// SHA-256 of the file.
    pub hash: String,
    /// The plugin, when it could be loaded at all.
    pub plugin: Option<Plugin>,
    pub cases: Vec<CaseResult>,
    pub rejection: Option<Rejection>,
    /// The compiled plugin came from the on-disk cache.
    pub cached: bool,
}

impl Verdict {
    /// Who the plugin says it is (empty strings if it never said).
    pub fn info(&self) -> PluginInfo {
        match &self.plugin {
            Some(p) => p.info().clone(),
            None => PluginInfo {
                name: String::new(),
                version: String::new(),
                hash: self.hash.clone(),
            },
        }
    }

    /// The plugin, if it passed.
    pub fn accepted(self) -> Result<Plugin, Rejection> {
        match (self.rejection, self.plugin) {
            (None, Some(plugin)) => Ok(plugin),
            (Some(rejection), _) => Err(rejection),
            (None, None) => Err(Rejection::Load("the plugin was not loaded".into())),
        }
    }

    /// A readable report for `keeper plugin check`.
    pub fn report(&self) -> String {
        let info = self.info();
        let mut out = String::new();
        if self.plugin.is_some() {
            out.push_str(&format!(
                "plugin   {} {}\n",
                or_unnamed(&info.name),
                or_unnamed(&info.version)
            ));
        }
        out.push_str(&format!("sha256   {}\n", self.hash));
        if let Some(plugin) = &self.plugin
            && plugin.refused_limits().is_none()
        {
            out.push_str(&format!("limits   {}\n", describe_limits(plugin)));
        }
        if let Some(plugin) = &self.plugin {
            out.push_str(if plugin.maps_by_position() {
                "calls    map-values, rows by position (world mapper-by-position; map gives the same rows)\n"
            } else {
                "calls    map, rows with their column names\n"
            });
        }
        if self.cached {
            out.push_str("compiled earlier: taken from the compiled-plugin cache\n");
        }
        if !self.cases.is_empty() {
            let failed = self.failed().count();
            out.push_str(&format!(
                "corpus   {} case(s): {} passed, {} failed\n",
                self.cases.len(),
                self.cases.len() - failed,
                failed
            ));
            for case in &self.cases {
                let line = match &case.outcome {
                    Outcome::Mapped { warnings: 0 } => format!("  ok    {}", case.name),
                    Outcome::Mapped { warnings } => format!("  ok    {} ({warnings} warning(s))", case.name),
                    Outcome::Refused(why) => format!("  ok    {} (refused, allowed: {why})", case.name),
                    Outcome::Failed(why) => format!("  FAIL  {}: {why}", case.name),
                };
                out.push_str(&line);
                out.push('\n');
            }
        }
        match &self.rejection {
            None => out.push_str("verdict  accepted: this plugin may become active\n"),
            Some(why) => out.push_str(&format!("verdict  rejected: {why}\n")),
        }
        out
    }

    /// The report as JSON for `keeper plugin check --json`: the verdict and,
    /// per case, its outcome with the row and warnings the plugin returned,
    /// so two plugins can be compared case by case.
    pub fn json(&self) -> serde_json::Value {
        let info = self.info();
        let cases: Vec<serde_json::Value> = self
            .cases
            .iter()
            .map(|case| {
                let (outcome, reason) = match &case.outcome {
                    Outcome::Mapped { .. } => ("mapped", None),
                    Outcome::Refused(why) => ("refused", Some(why)),
                    Outcome::Failed(why) => ("failed", Some(why)),
                };
                serde_json::json!({
                    "name": case.name,
                    "outcome": outcome,
                    "reason": reason,
                    "row": case.mapped.as_ref().map(|m| m.row.to_json()),
                    "warnings": case.mapped.as_ref().map(|m| &m.warnings),
                })
            })
            .collect();
        serde_json::json!({
            "plugin": self.plugin.as_ref().map(|_| serde_json::json!({"name": info.name, "version": info.version})),
            "limits": self.plugin.as_ref().map(|p| serde_json::json!({
                "requested": p.requested_limits(),
                "granted": p.refused_limits().is_none().then(|| serde_json::json!({
                    "memory_mib": p.limits().memory_bytes >> 20,
                    "timeout_ms": p.limits().deadline.as_millis(),
                })),
            })),
            "by_position": self.plugin.as_ref().map(Plugin::maps_by_position),
            "hash": self.hash,
            "accepted": self.rejection.is_none(),
            "reason": self.rejection.as_ref().map(ToString::to_string),
            "cases": cases,
        })
    }

    fn failed(&self) -> impl Iterator<Item = (&str, &str)> {
        self.cases.iter().filter_map(|c| match &c.outcome {
            Outcome::Failed(why) => Some((c.name.as_str(), why.as_str())),
            _ => None,
        })
    }
}

/// What the plugin runs under and where each figure comes from, e.g.
/// `memory 4 MiB (requested), 100 ms per call (the ceiling, KEEPER_PLUGIN_TIMEOUT_MS)`.
fn describe_limits(plugin: &Plugin) -> String {
    let (requested, granted) = (plugin.requested_limits(), plugin.limits());
    let from = |declared: bool, setting: &str| {
        if declared {
            "requested".to_owned()
        } else {
            format!("the ceiling, {setting}")
        }
    };
    format!(
        "memory {} MiB ({}), {} ms per call ({})",
        granted.memory_bytes >> 20,
        from(requested.memory_mib.is_some(), "KEEPER_PLUGIN_MEMORY_MIB"),
        granted.deadline.as_millis(),
        from(requested.timeout_ms.is_some(), "KEEPER_PLUGIN_TIMEOUT_MS"),
    )
}

fn or_unnamed(s: &str) -> &str {
    if s.is_empty() { "(empty)" } else { s }
}

/// Checks a plugin against the corpus. `loaded` is the outcome of loading
/// the file (compiled or taken from the cache) and `hash` its content hash.
/// Blocking: runs the plugin on the calling thread.
pub fn verify(hash: String, loaded: Result<Plugin, PluginError>, schema: &TargetSchema) -> Verdict {
    let plugin = match loaded {
        Ok(p) => p,
        Err(e) => {
            return Verdict {
                hash,
                plugin: None,
                cases: Vec::new(),
                rejection: Some(e.into()),
                cached: false,
            };
        }
    };
    // Asking for more than the operator allows: not run at all.
    if let Some(refused) = plugin.refused_limits().cloned() {
        return Verdict {
            hash,
            plugin: Some(plugin),
            cases: Vec::new(),
            rejection: Some(refused.into()),
            cached: false,
        };
    }
    let corpus = match Corpus::shipped() {
        Ok(c) => c,
        Err(e) => {
            return Verdict {
                hash,
                plugin: Some(plugin),
                cases: Vec::new(),
                rejection: Some(e.into()),
                cached: false,
            };
        }
    };
    let rows: Vec<Row> = corpus.cases.iter().map(|c| c.row.clone()).collect();
    let mut results = plugin.map_all(corpus.lookup.clone(), &rows);
    if crate::mapper::deadline_is_wall_clock() {
        retry_first_timeout(&plugin, &corpus.lookup, &rows, &mut results);
    }
    // A plugin that maps by position also has `map`, which hosts before
    // 1.3.0 call: it must give the same rows.
    let by_name = plugin
        .maps_by_position()
        .then(|| plugin.map_all_by_name(corpus.lookup.clone(), &rows));
    let cases: Vec<CaseResult> = corpus
        .cases
        .iter()
        .zip(results)
        .enumerate()
        .map(|(i, (case, result))| {
            let disagreement = by_name
                .as_ref()
                .and_then(|by_name| by_name.get(i))
                .and_then(|by_name| disagreement(&result, by_name));
            let mapped = result.as_ref().ok().cloned();
            let outcome = match (judge(case.expect, result, schema), disagreement) {
                (failed @ Outcome::Failed(_), _) => failed,
                (_, Some(why)) => Outcome::Failed(why),
                (outcome, None) => outcome,
            };
            CaseResult {
                name: case.name.clone(),
                mapped,
                outcome,
            }
        })
        .collect();
    let mut verdict = Verdict {
        hash,
        plugin: Some(plugin),
        cases,
        rejection: None,
        cached: false,
    };
    let info = verdict.info();
    verdict.rejection = if info.name.trim().is_empty() {
        Some(Rejection::NoName)
    } else if info.version.trim().is_empty() {
        Some(Rejection::NoVersion)
    } else {
        let failed = verdict.failed().count();
        verdict.failed().next().map(|(case, reason)| Rejection::Cases {
            failed,
            total: verdict.cases.len(),
            case: case.to_owned(),
            reason: reason.to_owned(),
        })
    };
    verdict
}

/// Where the deadline is wall-clock time (platforms without a thread CPU
/// clock, see `mapper`), a busy machine can stall a thread for longer than
/// 100 ms: a valid plugin must not be rejected for that. The
/// first case that timed out gets one more try on its own; if it times out
/// again the plugin really is slow, and the other timeouts stand unretried
/// (a plugin that loops would otherwise cost every case twice).
fn retry_first_timeout(
    plugin: &Plugin,
    lookup: &Arc<Lookup>,
    rows: &[Row],
    results: &mut [Result<crate::mapper::Mapped, MapError>],
) {
    for (i, result) in results.iter_mut().enumerate() {
        if !matches!(result, Err(MapError::TimedOut(_))) {
            continue;
        }
        let retried = plugin.map_all(lookup.clone(), &rows[i..=i]).pop();
        let again = matches!(retried, Some(Err(MapError::TimedOut(_))));
        if let Some(retried) = retried {
            *result = retried;
        }
        if again {
            return;
        }
    }
}

/// How a by-position plugin's `map-values` and `map` differ on one row, if
/// they do. Timing out is not a difference: a slow call says nothing of
/// what the other export returns.
fn disagreement(
    by_position: &Result<crate::mapper::Mapped, MapError>,
    by_name: &Result<crate::mapper::Mapped, MapError>,
) -> Option<String> {
    let lead = "map and map-values disagree";
    match (by_position, by_name) {
        (Err(MapError::TimedOut(_)), _) | (_, Err(MapError::TimedOut(_))) => None,
        (Ok(a), Ok(b)) if a.row != b.row => {
            let column = a
                .row
                .0
                .iter()
                .zip(&b.row.0)
                .find(|(a, b)| a != b)
                .map(|(a, _)| &*a.0)
                .or_else(|| a.row.0.get(b.row.0.len()).map(|c| &*c.0))
                .or_else(|| b.row.0.get(a.row.0.len()).map(|c| &*c.0))
                .unwrap_or("?");
            Some(format!(
                "{lead} from column {column} on: the two exports must return the same row"
            ))
        }
        (Ok(a), Ok(b)) if a.warnings != b.warnings => Some(format!(
            "{lead} on the warnings: map-values gives {:?}, map {:?}",
            a.warnings, b.warnings
        )),
        (Ok(_), Ok(_)) => None,
        (a, b) if a == b => None,
        (a, b) => Some(format!(
            "{lead}: map-values {}, map {}",
            outcome_words(a),
            outcome_words(b)
        )),
    }
}

fn outcome_words(result: &Result<crate::mapper::Mapped, MapError>) -> String {
    match result {
        Ok(_) => "maps the row".to_owned(),
        Err(e) => format!("fails it ({e})"),
    }
}

fn judge(expect: Expect, result: Result<crate::mapper::Mapped, MapError>, schema: &TargetSchema) -> Outcome {
    match result {
        Ok(mapped) => match schema.check(&mapped.row) {
            Ok(()) => Outcome::Mapped {
                warnings: mapped.warnings.len(),
            },
            Err(e) => Outcome::Failed(e.to_string()),
        },
        Err(e @ MapError::Rejected { .. }) if expect == Expect::Any => Outcome::Refused(e.to_string()),
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapper::{DEFAULT_PLUGIN, Limits, Runtime, content_hash};

    /// What the check says when `map` and `map-values` differ: the first
    /// column that differs, the warnings, or what each did; a timeout on
    /// either side is no difference.
    #[test]
    fn map_and_map_values_disagreeing_are_told_apart() {
        let mapped = |columns: &[(&str, &str)], warnings: &[&str]| -> Result<crate::mapper::Mapped, MapError> {
            Ok(crate::mapper::Mapped {
                row: Row(columns
                    .iter()
                    .map(|(name, text)| (ColumnName::from(*name), Value::Text((*text).to_owned())))
                    .collect()),
                warnings: warnings.iter().map(|w| (*w).to_owned()).collect(),
            })
        };
        let base = mapped(&[("discovery_type", "🦴"), ("description", "d")], &[]);
        assert_eq!(disagreement(&base, &base.clone()), None);
        let other_text = mapped(&[("discovery_type", "🦴"), ("description", "e")], &[]);
        let why = disagreement(&base, &other_text).expect("differs");
        assert!(why.contains("from column description on"), "{why}");
        let longer = mapped(&[("discovery_type", "🦴"), ("description", "d"), ("tags", "[]")], &[]);
        let why = disagreement(&base, &longer).expect("differs");
        assert!(why.contains("from column tags on"), "{why}");
        let warned = mapped(&[("discovery_type", "🦴"), ("description", "d")], &["w"]);
        let why = disagreement(&base, &warned).expect("differs");
        assert!(why.contains("on the warnings"), "{why}");
        let refused = Err(MapError::Rejected {
            field: None,
            message: "no".into(),
        });
        let why = disagreement(&base, &refused).expect("differs");
        assert!(
            why.contains("map-values maps the row, map fails it (mapping failed: no)"),
            "{why}"
        );
        let timed_out = Err(MapError::TimedOut(std::time::Duration::from_millis(100)));
        assert_eq!(disagreement(&base, &timed_out), None);
    }

    #[test]
    fn shipped_corpus_covers_what_the_contract_promises() {
        let corpus = Corpus::shipped().expect("corpus parses");
        for t in crate::report::discovery_types() {
            for kind in ["every field", "required fields only", "maximum lengths"] {
                let name = format!("{} {kind}", t.emoji);
                assert!(corpus.cases.iter().any(|c| c.name == name), "missing case {name}");
            }
        }
        for needle in ["unicode", "unresolvable system", "unresolvable planet", "legacy"] {
            assert!(corpus.cases.iter().any(|c| c.name.contains(needle)), "{needle}");
        }
        assert!(corpus.lookup.find_system("Ixiezh HV").is_some());
    }

    #[tokio::test]
    async fn the_built_in_plugin_passes() {
        let schema = TargetSchema::reference().await.expect("schema");
        let runtime = Runtime::new(Limits::default()).expect("runtime");
        let verdict = tokio::task::spawn_blocking(move || {
            verify(content_hash(DEFAULT_PLUGIN), runtime.load(DEFAULT_PLUGIN), &schema)
        })
        .await
        .expect("join");
        assert!(verdict.rejection.is_none(), "{}", verdict.report());
        assert!(verdict.report().contains("verdict  accepted"));
        assert!(verdict.report().contains("keeper-default-mapper"));
    }

    #[tokio::test]
    async fn bytes_that_are_not_wasm_are_rejected_with_the_reason() {
        let schema = TargetSchema::reference().await.expect("schema");
        let runtime = Runtime::new(Limits::default()).expect("runtime");
        let bytes = b"definitely not wasm";
        let verdict = verify(content_hash(bytes), runtime.load(bytes), &schema);
        let reason = verdict.accepted().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(reason.starts_with("not a WebAssembly component"), "{reason}");
    }
}
