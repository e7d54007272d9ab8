//! The ten discovery types and the common fields' limits, as data.
//!
//! They live in `host/discovery-types.toml`, embedded at build time and
//! parsed once, because three things must agree on them byte for byte: the
//! Discord forms (labels and placeholders users know from the old bot), the
//! validation every report goes through, and the conformance corpus that
//! `host/conformance/generate.py` makes from the same file. A Rust table
//! with a regex-scraped copy beside it drifted; one data file cannot.
//!
//! The file is checked when parsed ([`Catalog::parse`]): ten distinct types
//! are not assumed but verified, as are the five fields of each, Discord's
//! limits on labels, placeholders and input lengths, and that no column
//! belongs to two types (that is how a record mixing types is caught).

use std::collections::HashSet;
use std::fmt;
use std::sync::LazyLock;

use serde::Deserialize;

use super::validate::COMMON_KEYS;

/// The data file, as built into the binary.
const SOURCE: &str = include_str!("../../discovery-types.toml");

/// Parsed on first use. The file is part of the source: the unit test
/// `the_embedded_data_file_is_valid` parses it, so a build whose tests pass
/// cannot reach the panic; one made from an edited file without running them
/// stops at its first report with the file's own error, not later with a
/// wrong form.
static CATALOG: LazyLock<Catalog> = LazyLock::new(|| Catalog::parse(SOURCE).unwrap_or_else(|error| panic!("{error}")));

/// Discord's limit on a text input's label.
pub const DISCORD_LABEL_MAX: usize = 45;
/// Discord's limit on a text input's placeholder.
pub const DISCORD_PLACEHOLDER_MAX: usize = 100;
/// Discord's limit on a text input's length.
pub const DISCORD_INPUT_MAX: usize = 4000;
/// Discord's limit on a modal's title (`EMOJI NAME`).
pub const DISCORD_TITLE_MAX: usize = 45;

/// Emoji presentation selector. Keyboards and clients add or drop it at will,
/// so lookups ignore it while storage keeps the table's canonical spelling.
const VARIATION_SELECTOR_16: char = '\u{FE0F}';

/// How a form field is rendered in the Discord modal.
///
/// It matters beyond rendering: only a paragraph (multi-line) input can
/// legitimately contain line breaks and tabs, so the style decides which
/// control characters a value may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldStyle {
    /// A one-line text input.
    Short,
    /// A multi-line text input.
    Paragraph,
}

impl FieldStyle {
    /// Whether `\n` and `\t` are accepted: a multi-line box produces them,
    /// a one-line input never does, so there they can only come from a broken
    /// or hostile client.
    pub const fn allows_line_breaks(self) -> bool {
        matches!(self, FieldStyle::Paragraph)
    }
}

/// One input of a discovery type's modal.
///
/// `column` is the VH-Database column name; in keeper.db the type-specific
/// values live under the same name inside the `metadata` JSON object.
///
/// The texts are `&'static str`, leaked once when the file is parsed: the
/// table lives as long as the process, and errors and forms borrow from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldSpec {
    /// VH-Database column name, also the key in a JSON record and in `metadata`.
    pub column: &'static str,
    /// The label users know from the old bot (Discord: at most 45 characters).
    pub label: &'static str,
    /// The placeholder users know from the old bot (Discord: at most 100 characters).
    pub placeholder: &'static str,
    /// Maximum length in characters, as the form enforces it.
    pub max_chars: usize,
    /// Whether the form requires a value.
    pub required: bool,
    /// One-line or multi-line input.
    pub style: FieldStyle,
}

/// One of the ten kinds of discovery, identified by its emoji (which is what
/// both databases store in `discoveries.discovery_type`).
#[derive(Debug, PartialEq, Eq)]
pub struct DiscoveryType {
    /// The emoji, exactly as stored (some carry a U+FE0F variation selector).
    pub emoji: &'static str,
    /// A one-word English name, accepted wherever the emoji is: emoji are
    /// hard to type in a Windows console or a shell script.
    pub short: &'static str,
    /// The human name shown beside the emoji.
    pub name: &'static str,
    /// The five modal inputs: `fields[0]` is the required description, the
    /// other four are the optional type-specific fields. Five because Discord
    /// allows at most five inputs per modal.
    pub fields: [FieldSpec; 5],
}

impl DiscoveryType {
    /// The description input (always `fields[0]`; its label differs for 📖).
    pub fn description(&self) -> &FieldSpec {
        &self.fields[0]
    }

    /// The four optional type-specific inputs.
    pub fn type_specific_fields(&self) -> &[FieldSpec] {
        &self.fields[1..]
    }

    /// The input named `column`, description included.
    pub fn field(&self, column: &str) -> Option<&FieldSpec> {
        self.fields.iter().find(|f| f.column == column)
    }
}

impl fmt::Display for DiscoveryType {
    /// `💎 (Minerals & Resources)`: how error messages name a type.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.emoji, self.name)
    }
}

/// Limits of the fields every report has, in characters (the data file's
/// `[common]` table says why each is what it is).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// `system_name`.
    pub system_name: usize,
    /// `username`.
    pub username: usize,
    /// `user_id`, `guild_id` (ASCII digits).
    pub discord_id: usize,
    /// `coordinates`, `condition`, `time_period`, `significance`.
    pub text: usize,
    /// `evidence_url`.
    pub evidence_url: usize,
    /// At most this many tags per report.
    pub tags: usize,
    /// At most this many characters per tag.
    pub tag_chars: usize,
    /// `discovery_name`.
    pub discovery_name: usize,
    /// The NAME in `planet:NAME`, `moon:NAME`, `space:NAME`.
    pub location_name: usize,
}

impl Limits {
    /// Each limit with its key in the data file, for checks and messages.
    fn named(&self) -> [(&'static str, usize); 9] {
        [
            ("system_name", self.system_name),
            ("username", self.username),
            ("discord_id", self.discord_id),
            ("text", self.text),
            ("evidence_url", self.evidence_url),
            ("tags", self.tags),
            ("tag_chars", self.tag_chars),
            ("discovery_name", self.discovery_name),
            ("location_name", self.location_name),
        ]
    }
}

/// The whole data file.
#[derive(Debug, PartialEq, Eq)]
pub struct Catalog {
    /// The common fields' limits.
    pub common: Limits,
    /// The discovery types, in the file's order (that of the choice list and
    /// of VH-Database's type-specific columns).
    pub types: Vec<DiscoveryType>,
}

/// What is wrong with a discovery-types data file. Each message names the
/// type and field, so whoever edited the file knows where to look.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    /// Not TOML, or not the expected shape (a missing or unknown key, a
    /// style other than short or paragraph).
    #[error("discovery-types.toml: {0}")]
    Syntax(String),
    /// No types at all.
    #[error("discovery-types.toml: no [[types]]")]
    NoTypes,
    /// A common limit of 0 would refuse every value.
    #[error("discovery-types.toml: common.{key} is 0; every limit must be at least 1")]
    ZeroLimit {
        /// The key in `[common]`.
        key: &'static str,
    },
    /// An emoji, short name, name or column given twice.
    #[error("discovery-types.toml: {what} {value:?} is given twice")]
    Duplicate {
        /// `emoji`, `short`, `name` or `column`.
        what: &'static str,
        /// The repeated value.
        value: String,
    },
    /// An emoji, short name or name that cannot be used.
    #[error("discovery-types.toml: type {emoji:?}: {problem}")]
    BadType {
        /// The type's emoji as written.
        emoji: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// A field that breaks a rule.
    #[error("discovery-types.toml: type {emoji:?}, field {column:?}: {problem}")]
    BadField {
        /// The type's emoji.
        emoji: String,
        /// The field's column.
        column: String,
        /// What is wrong.
        problem: String,
    },
}

impl Catalog {
    /// Parses and checks a data file.
    pub fn parse(text: &str) -> Result<Catalog, CatalogError> {
        let file: CatalogInFile = toml::from_str(text).map_err(|e| CatalogError::Syntax(e.to_string()))?;
        let catalog = Catalog {
            common: file.common,
            types: file
                .types
                .into_iter()
                .map(DiscoveryType::try_from)
                .collect::<Result<_, _>>()?,
        };
        catalog.check()?;
        Ok(catalog)
    }

    fn check(&self) -> Result<(), CatalogError> {
        if let Some((key, _)) = self.common.named().into_iter().find(|&(_, max)| max == 0) {
            return Err(CatalogError::ZeroLimit { key });
        }
        if self.types.is_empty() {
            return Err(CatalogError::NoTypes);
        }
        let mut seen: HashSet<(&str, String)> = HashSet::new();
        let mut once = |what: &'static str, value: String| {
            if seen.insert((what, value.clone())) {
                Ok(())
            } else {
                Err(CatalogError::Duplicate { what, value })
            }
        };
        for t in &self.types {
            let bad_type = |problem| CatalogError::BadType {
                emoji: t.emoji.to_owned(),
                problem,
            };
            if t.emoji.chars().all(|c| c == VARIATION_SELECTOR_16 || c.is_whitespace()) {
                return Err(bad_type("the emoji is empty"));
            }
            if t.short.is_empty() || !t.short.bytes().all(|b| b.is_ascii_lowercase()) {
                return Err(bad_type("`short` must be lowercase ASCII letters"));
            }
            if t.name.trim().is_empty() {
                return Err(bad_type("the name is empty"));
            }
            if format!("{} {}", t.emoji, t.name).chars().count() > DISCORD_TITLE_MAX {
                return Err(bad_type("\"EMOJI NAME\" is longer than a Discord modal title (45)"));
            }
            // Lookups ignore the variation selector, so two emoji that differ
            // only by it would be one type.
            once("emoji", t.emoji.replace(VARIATION_SELECTOR_16, ""))?;
            once("short", t.short.to_owned())?;
            once("name", t.name.to_owned())?;
            for (i, f) in t.fields.iter().enumerate() {
                let bad = |problem: String| CatalogError::BadField {
                    emoji: t.emoji.to_owned(),
                    column: f.column.to_owned(),
                    problem,
                };
                let is_description = f.column == "description";
                if (i == 0) != is_description {
                    return Err(bad("the first field, and only it, must be `description`".to_owned()));
                }
                if f.required != is_description {
                    return Err(bad(
                        "only the description is required (the type-specific fields are optional)".to_owned(),
                    ));
                }
                if !is_description {
                    if f.column.is_empty() || !f.column.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                        return Err(bad("a column is lowercase ASCII letters and `_`".to_owned()));
                    }
                    if COMMON_KEYS.contains(&f.column) || ["location_type", "location_name"].contains(&f.column) {
                        return Err(bad("the column is a common field's name".to_owned()));
                    }
                    once("column", f.column.to_owned())?;
                }
                if !(1..=DISCORD_INPUT_MAX).contains(&f.max_chars) {
                    return Err(bad(format!(
                        "max_chars is {}; it must be 1 to {DISCORD_INPUT_MAX} (Discord's limit)",
                        f.max_chars
                    )));
                }
                let label = f.label.chars().count();
                if !(1..=DISCORD_LABEL_MAX).contains(&label) {
                    return Err(bad(format!(
                        "the label has {label} characters; Discord takes 1 to {DISCORD_LABEL_MAX}"
                    )));
                }
                let placeholder = f.placeholder.chars().count();
                if !(1..=DISCORD_PLACEHOLDER_MAX).contains(&placeholder) {
                    return Err(bad(format!(
                        "the placeholder has {placeholder} characters; Discord takes 1 to \
                         {DISCORD_PLACEHOLDER_MAX}"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// A [`FieldSpec`] as written in the file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldInFile {
    column: String,
    label: String,
    placeholder: String,
    max_chars: usize,
    required: bool,
    style: FieldStyle,
}

impl From<FieldInFile> for FieldSpec {
    fn from(f: FieldInFile) -> FieldSpec {
        FieldSpec {
            column: leaked(f.column),
            label: leaked(f.label),
            placeholder: leaked(f.placeholder),
            max_chars: f.max_chars,
            required: f.required,
            style: f.style,
        }
    }
}

/// A [`DiscoveryType`] as written in the file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TypeInFile {
    emoji: String,
    short: String,
    name: String,
    fields: Vec<FieldInFile>,
}

impl TryFrom<TypeInFile> for DiscoveryType {
    type Error = CatalogError;

    /// Five fields exactly: TOML arrays have no fixed length.
    fn try_from(t: TypeInFile) -> Result<DiscoveryType, CatalogError> {
        let fields: Vec<FieldSpec> = t.fields.into_iter().map(FieldSpec::from).collect();
        let fields = <[FieldSpec; 5]>::try_from(fields).map_err(|_| CatalogError::BadType {
            emoji: t.emoji.clone(),
            problem: "a type has exactly five fields (Discord's modal takes five inputs)",
        })?;
        Ok(DiscoveryType {
            emoji: leaked(t.emoji),
            short: leaked(t.short),
            name: leaked(t.name),
            fields,
        })
    }
}

/// The [`Catalog`] as written in the file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogInFile {
    common: Limits,
    types: Vec<TypeInFile>,
}

/// A string of the data file, kept for the life of the process (see
/// [`FieldSpec`]).
fn leaked(text: String) -> &'static str {
    Box::leak(text.into_boxed_str())
}

/// The built-in data file, parsed.
pub fn catalog() -> &'static Catalog {
    &CATALOG
}

/// The discovery types, in the data file's order.
pub fn discovery_types() -> &'static [DiscoveryType] {
    &catalog().types
}

/// The common fields' limits.
pub fn limits() -> &'static Limits {
    &catalog().common
}

/// The discovery type for `value`: its emoji, with or without U+FE0F
/// variation selectors (`"🏛"` finds `"🏛️"`: clients differ in whether they
/// send it, and a report must not be refused over an invisible character),
/// or its short name in any case (`ruins`, `Ruins`).
pub fn discovery_type(value: &str) -> Option<&'static DiscoveryType> {
    let bare = |s: &'static str| s.chars().filter(|&c| c != VARIATION_SELECTOR_16);
    discovery_types().iter().find(|t| {
        t.short.eq_ignore_ascii_case(value) || bare(t.emoji).eq(value.chars().filter(|&c| c != VARIATION_SELECTOR_16))
    })
}

/// The type-specific columns (everything but `description`), in table order.
pub fn type_specific_columns() -> impl Iterator<Item = &'static str> {
    discovery_types()
        .iter()
        .flat_map(|t| t.type_specific_fields().iter().map(|f| f.column))
}

/// The discovery type that owns the type-specific `column`, if any. Each
/// column belongs to exactly one type, which is how a record that mixes
/// types is caught.
pub fn discovery_type_of_column(column: &str) -> Option<&'static DiscoveryType> {
    discovery_types()
        .iter()
        .find(|t| t.type_specific_fields().iter().any(|f| f.column == column))
}

/// The types as `🦴 fossil, 📜 log, …`, for the `discovery_type` error
/// and `keeper submit --help`.
pub struct TypeList;

impl fmt::Display for TypeList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, t) in discovery_types().iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{} {}", t.emoji, t.short)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::FieldStyle::{Paragraph, Short};
    use super::*;

    fn ty(emoji: &str) -> &'static DiscoveryType {
        discovery_type(emoji).expect("known type")
    }

    #[test]
    fn ten_types_of_five_fields_with_description_first_and_required() {
        assert_eq!(discovery_types().len(), 10);
        for t in discovery_types() {
            assert_eq!(t.fields.len(), 5, "{t}");
            let d = t.description();
            assert_eq!(d.column, "description", "{t}");
            assert!(d.required, "{t}");
            assert_eq!(d.style, FieldStyle::Paragraph, "{t}");
            assert_eq!(d.max_chars, 1000, "{t}");
            for f in t.type_specific_fields() {
                assert!(!f.required, "{t} {}", f.column);
                assert!(f.max_chars == 200 || f.max_chars == 500, "{}", f.column);
                // The 500-character fields are exactly the paragraph ones.
                assert_eq!(f.max_chars == 500, f.style == FieldStyle::Paragraph);
            }
        }
        let paragraphs: Vec<_> = type_specific_columns()
            .filter(|c| discovery_type_of_column(c).and_then(|t| t.field(c)).map(|f| f.style) == Some(Paragraph))
            .collect();
        assert_eq!(paragraphs, ["key_excerpt", "first_impressions"]);
    }

    #[test]
    fn forty_distinct_type_specific_columns() {
        let columns: Vec<_> = type_specific_columns().collect();
        assert_eq!(columns.len(), 40);
        let distinct: BTreeSet<_> = columns.iter().collect();
        assert_eq!(distinct.len(), 40);
        for c in &columns {
            assert!(!COMMON_KEYS.contains(c), "{c} collides with a common key");
            assert!(!["location_type", "location_name"].contains(c));
            assert!(c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{c}");
        }
        assert_eq!(columns[0], "species_type");
        assert_eq!(columns[39], "collaborative_work");
    }

    #[test]
    fn labels_and_placeholders_fit_discord_limits() {
        for t in discovery_types() {
            for f in &t.fields {
                let label = f.label.chars().count();
                let placeholder = f.placeholder.chars().count();
                assert!((1..=DISCORD_LABEL_MAX).contains(&label), "{}: {label}", f.label);
                assert!(
                    (1..=DISCORD_PLACEHOLDER_MAX).contains(&placeholder),
                    "{}: {placeholder}",
                    f.placeholder
                );
            }
        }
    }

    #[test]
    fn transcription_is_byte_exact() {
        let emojis: Vec<_> = discovery_types().iter().map(|t| t.emoji).collect();
        assert_eq!(
            emojis,
            [
                "\u{1F9B4}",
                "\u{1F4DC}",
                "\u{1F3DB}\u{FE0F}",
                "\u{2699}\u{FE0F}",
                "\u{1F997}",
                "\u{1F48E}",
                "\u{1F680}",
                "\u{26A1}",
                "\u{1F195}",
                "\u{1F4D6}",
            ]
        );
        let names: Vec<_> = discovery_types().iter().map(|t| t.name).collect();
        assert_eq!(
            names,
            [
                "Ancient Bones & Fossils",
                "Text Logs & Documents",
                "Ruins & Structures",
                "Alien Technology & Artifacts",
                "Flora & Fauna",
                "Minerals & Resources",
                "Crashed Ships & Wrecks",
                "Environmental Hazards",
                "NMS Update Content",
                "Player-Created Lore",
            ]
        );
        let bones = ty("🦴");
        assert_eq!(
            bones.fields[3],
            FieldSpec {
                column: "preservation_quality",
                label: "\u{2697}\u{FE0F} Preservation Quality",
                placeholder: "e.g., Excellent, Good, Fragmented, Petrified, Fossilized",
                max_chars: 200,
                required: false,
                style: Short,
            }
        );
        let lore = ty("📖");
        assert_eq!(lore.description().label, "\u{1F4DD} Lore Entry/Story");
        assert_eq!(
            lore.description().placeholder,
            "Share your creative lore, theory, or story about this location"
        );
        let ruins = ty("🏛️");
        assert_eq!(
            ruins.field("architectural_style").map(|f| f.placeholder),
            Some("e.g., Gek, Korvax, Vy'keen, Ancient, Unknown Civilization")
        );
        let logs = ty("📜");
        assert_eq!(
            logs.fields[1],
            FieldSpec {
                column: "key_excerpt",
                label: "\u{1F4D6} Key Excerpt/Quote",
                placeholder: "Copy any interesting text from the log (if readable)",
                max_chars: 500,
                required: false,
                style: Paragraph,
            }
        );
        assert_eq!(logs.fields[2].label, "\u{1F5E3}\u{FE0F} Language/Decryption Status");
        let update = ty("🆕");
        assert_eq!(update.fields[4].column, "first_impressions");
        assert_eq!(update.fields[4].max_chars, 500);
        assert_eq!(update.fields[4].style, Paragraph);
    }

    #[test]
    fn discovery_type_lookup_ignores_variation_selector() {
        assert_eq!(discovery_type("\u{1F3DB}").map(|t| t.emoji), Some("🏛️"));
        assert_eq!(discovery_type("\u{2699}").map(|t| t.emoji), Some("⚙️"));
        assert_eq!(
            discovery_type("⚙️").map(|t| t.name),
            Some("Alien Technology & Artifacts")
        );
        assert_eq!(discovery_type("💎\u{FE0F}").map(|t| t.emoji), Some("💎"));
        assert_eq!(discovery_type("💎").map(|t| t.name), Some("Minerals & Resources"));
        assert!(discovery_type("").is_none());
        assert!(discovery_type("\u{FE0F}").is_none());
        assert!(discovery_type("X").is_none());
        assert!(discovery_type("💎💎").is_none());
        assert_eq!(discovery_type_of_column("resource_type").map(|t| t.emoji), Some("💎"));
        assert!(discovery_type_of_column("description").is_none());
    }

    #[test]
    fn each_type_has_one_short_name_in_any_case() {
        let mut seen = std::collections::HashSet::new();
        for t in discovery_types() {
            assert!(t.short.chars().all(|c| c.is_ascii_lowercase()), "{}", t.short);
            assert!(seen.insert(t.short), "{} twice", t.short);
            assert_eq!(discovery_type(t.short).map(|k| k.emoji), Some(t.emoji));
            assert_eq!(discovery_type(&t.short.to_uppercase()).map(|k| k.emoji), Some(t.emoji));
        }
        assert_eq!(discovery_type("ruins").map(|t| t.emoji), Some("🏛️"));
        assert_eq!(discovery_type("Fossil").map(|t| t.emoji), Some("🦴"));
        assert!(discovery_type("fossils").is_none());
        assert!(discovery_type(" fossil").is_none());
    }

    // ---- the data file ----

    /// The design notes' table of the types (a copy in tests/fixtures), the
    /// spec the data file was transcribed from: every type, field, label,
    /// placeholder, limit, requiredness and style must be as it says.
    #[test]
    fn the_data_file_says_what_the_spec_says() {
        let spec = include_str!("../../../tests/fixtures/DISCOVERY_TYPES.md");
        let mut types = Vec::new();
        for section in spec.split("\n## ").skip(1) {
            let (heading, body) = section.split_once('\n').unwrap_or((section, ""));
            let Some((emoji, name)) = heading.split_once(" — ") else {
                continue;
            };
            let fields: Vec<FieldSpec> = body
                .lines()
                .filter(|l| l.starts_with("| `"))
                .map(|row| {
                    let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
                    FieldSpec {
                        column: cells[0].trim_matches('`'),
                        label: cells[1],
                        placeholder: cells[2],
                        max_chars: cells[3].parse().expect("a number"),
                        required: cells[4] == "yes",
                        style: if cells[5] == "paragraph" { Paragraph } else { Short },
                    }
                })
                .collect();
            types.push((emoji.trim(), name.trim(), fields));
        }
        assert_eq!(types.len(), 10, "the spec's ten sections");
        for (t, (emoji, name, fields)) in discovery_types().iter().zip(&types) {
            assert_eq!((t.emoji, t.name), (*emoji, *name));
            assert_eq!(&t.fields[..], &fields[..], "{t}");
        }
    }

    #[test]
    fn the_embedded_data_file_is_valid() {
        let catalog = Catalog::parse(SOURCE).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&catalog, super::catalog());
        assert_eq!(
            catalog.common,
            Limits {
                system_name: 100,
                username: 100,
                discord_id: 32,
                text: 200,
                evidence_url: 2000,
                tags: 20,
                tag_chars: 50,
                discovery_name: 200,
                location_name: 200,
            }
        );
    }

    /// The embedded file with `from` replaced by `to` (once; it must be there).
    fn edited(from: &str, to: &str) -> Result<Catalog, CatalogError> {
        assert!(SOURCE.contains(from), "{from:?} is not in the data file");
        Catalog::parse(&SOURCE.replacen(from, to, 1))
    }

    fn problem(from: &str, to: &str) -> String {
        match edited(from, to) {
            Ok(_) => panic!("accepted with {from:?} → {to:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn duplicates_are_refused() {
        assert_eq!(
            edited("emoji = \"📜\"", "emoji = \"🦴\""),
            Err(CatalogError::Duplicate {
                what: "emoji",
                value: "🦴".into()
            })
        );
        // Lookups ignore U+FE0F, so an emoji differing only by it is the same one.
        assert_eq!(
            edited("emoji = \"⚙️\"", "emoji = \"🏛\""),
            Err(CatalogError::Duplicate {
                what: "emoji",
                value: "🏛".into()
            })
        );
        assert_eq!(
            edited("short = \"log\"", "short = \"fossil\""),
            Err(CatalogError::Duplicate {
                what: "short",
                value: "fossil".into()
            })
        );
        assert_eq!(
            edited("name = \"Text Logs & Documents\"", "name = \"Ancient Bones & Fossils\""),
            Err(CatalogError::Duplicate {
                what: "name",
                value: "Ancient Bones & Fossils".into()
            })
        );
        // A column of one type given to another.
        assert_eq!(
            edited("column = \"key_excerpt\"", "column = \"species_type\""),
            Err(CatalogError::Duplicate {
                what: "column",
                value: "species_type".into()
            })
        );
    }

    #[test]
    fn invalid_limits_are_refused() {
        let msg = problem("max_chars = 1000", "max_chars = 0");
        assert!(msg.contains("\"🦴\", field \"description\": max_chars is 0"), "{msg}");
        let msg = problem("max_chars = 200", "max_chars = 4001");
        assert!(msg.contains("\"species_type\": max_chars is 4001"), "{msg}");
        assert_eq!(
            edited("tags = 20", "tags = 0"),
            Err(CatalogError::ZeroLimit { key: "tags" })
        );
        let msg = problem("max_chars = 200", "max_chars = -1");
        assert!(msg.starts_with("discovery-types.toml: "), "{msg}");
        let msg = problem("system_name = 100", "system_name = \"100\"");
        assert!(msg.contains("system_name"), "{msg}");
    }

    #[test]
    fn fields_that_break_discord_or_report_rules_are_refused() {
        let long_label = format!("label = \"{}\"", "L".repeat(46));
        let msg = problem("label = \"🦖 Species/Creature Type\"", &long_label);
        assert!(msg.contains("the label has 46 characters"), "{msg}");
        let msg = problem("label = \"🦖 Species/Creature Type\"", "label = \"\"");
        assert!(msg.contains("the label has 0 characters"), "{msg}");
        let long_placeholder = format!("placeholder = \"{}\"", "P".repeat(101));
        let msg = problem(
            "placeholder = \"e.g., Large Predator, Flying Creature, Aquatic Life, Unknown\"",
            &long_placeholder,
        );
        assert!(msg.contains("the placeholder has 101 characters"), "{msg}");
        let msg = problem("column = \"species_type\"", "column = \"username\"");
        assert!(msg.contains("a common field's name"), "{msg}");
        let msg = problem("column = \"species_type\"", "column = \"Species-Type\"");
        assert!(msg.contains("lowercase ASCII letters and `_`"), "{msg}");
        let msg = problem("column = \"species_type\"", "column = \"description\"");
        assert!(msg.contains("must be `description`"), "{msg}");
        let msg = problem("max_chars = 200\nrequired = false", "max_chars = 200\nrequired = true");
        assert!(msg.contains("only the description is required"), "{msg}");
        let msg = problem("style = \"short\"", "style = \"tall\"");
        assert!(msg.contains("tall"), "{msg}");
        let msg = problem("short = \"fossil\"", "short = \"Fossil\"");
        assert!(msg.contains("lowercase ASCII"), "{msg}");
        let long_name = format!("name = \"{}\"", "N".repeat(44));
        let msg = problem("name = \"Ancient Bones & Fossils\"", &long_name);
        assert!(msg.contains("modal title"), "{msg}");
    }

    #[test]
    fn shapes_other_than_five_fields_or_known_keys_are_refused() {
        // A sixth field for 📖 (the last type): Discord allows five inputs.
        let sixth = format!(
            "{SOURCE}\n[[types.fields]]\ncolumn = \"sixth\"\nlabel = \"Six\"\nplaceholder = \"6\"\n\
             max_chars = 10\nrequired = false\nstyle = \"short\"\n"
        );
        assert_eq!(
            Catalog::parse(&sixth),
            Err(CatalogError::BadType {
                emoji: "📖".into(),
                problem: "a type has exactly five fields (Discord's modal takes five inputs)"
            })
        );
        let unknown = problem("[common]\n", "[common]\ncolour = 1\n");
        assert!(unknown.contains("colour"), "{unknown}");
        assert!(matches!(Catalog::parse("common = 1"), Err(CatalogError::Syntax(_))));
        let common = SOURCE.split("\n[[types]]").next().unwrap_or_default();
        let no_types = format!("types = []\n{common}");
        assert_eq!(Catalog::parse(&no_types), Err(CatalogError::NoTypes));
    }
}
