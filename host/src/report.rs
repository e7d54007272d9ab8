//! Discovery reports: the ten discovery types with their Discord form fields,
//! and the validation of one report before it becomes a keeper.db
//! `discoveries` row.
//!
//! Why one module: the Discord modal, `POST /discoveries` and `keeper submit`
//! must accept exactly the same reports (DESIGN.md: "same validation as the
//! bot"), and the mapping plugin relies on what was accepted here. So the form
//! table (transcribed from the design notes' `DISCOVERY_TYPES.md`) and every
//! rule about a report live in one place, and nothing here touches a database.
//!
//! Rules that shape the code:
//! - Input is hostile until checked: every value is type-checked, trimmed,
//!   length-checked in characters (what Discord counts and users see, never
//!   bytes) and screened for control characters.
//! - Content is never truncated or altered beyond trimming surrounding white
//!   space: a value that does not fit is an error, not silent loss.
//! - Errors name the field and are deterministic: the same input always gives
//!   the same first error (see [`Report::from_json`] for the order).

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::str::FromStr;

use serde_json::{Map, Value};

use FieldStyle::{Paragraph, Short};

/// How a form field is rendered in the Discord modal.
///
/// It matters beyond rendering: only a paragraph (multi-line) input can
/// legitimately contain line breaks and tabs, so the style decides which
/// control characters a value may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

/// Emoji presentation selector. Keyboards and clients add or drop it at will,
/// so lookups ignore it while storage keeps the table's canonical spelling.
const VARIATION_SELECTOR_16: char = '\u{FE0F}';

const fn required(
    column: &'static str,
    label: &'static str,
    placeholder: &'static str,
    max_chars: usize,
    style: FieldStyle,
) -> FieldSpec {
    FieldSpec {
        column,
        label,
        placeholder,
        max_chars,
        required: true,
        style,
    }
}

const fn optional(
    column: &'static str,
    label: &'static str,
    placeholder: &'static str,
    max_chars: usize,
    style: FieldStyle,
) -> FieldSpec {
    FieldSpec {
        column,
        label,
        placeholder,
        max_chars,
        required: false,
        style,
    }
}

/// The ten discovery types and their modal inputs, transcribed byte for byte
/// from the design notes' `DISCOVERY_TYPES.md` (users know these labels and
/// placeholders from the old bot). Order is the document's, which is also the
/// order of the choice list and of the 40 type-specific columns.
pub static DISCOVERY_TYPES: [DiscoveryType; 10] = [
    DiscoveryType {
        emoji: "🦴",
        short: "fossil",
        name: "Ancient Bones & Fossils",
        fields: [
            required(
                "description",
                "📝 Discovery Description",
                "Describe the bones/fossils you found. What did they look like?",
                1000,
                Paragraph,
            ),
            optional(
                "species_type",
                "🦖 Species/Creature Type",
                "e.g., Large Predator, Flying Creature, Aquatic Life, Unknown",
                200,
                Short,
            ),
            optional(
                "size_scale",
                "📏 Size/Scale",
                "e.g., Small (cat-sized), Medium (human-sized), Large (building-sized)",
                200,
                Short,
            ),
            optional(
                "preservation_quality",
                "⚗️ Preservation Quality",
                "e.g., Excellent, Good, Fragmented, Petrified, Fossilized",
                200,
                Short,
            ),
            optional(
                "estimated_age",
                "⏰ Estimated Age/Era",
                "e.g., Ancient, Pre-Gek, Millions of years old, Unknown",
                200,
                Short,
            ),
        ],
    },
    DiscoveryType {
        emoji: "📜",
        short: "log",
        name: "Text Logs & Documents",
        fields: [
            required(
                "description",
                "📝 Discovery Description",
                "Describe the log/document. Where was it found?",
                1000,
                Paragraph,
            ),
            optional(
                "key_excerpt",
                "📖 Key Excerpt/Quote",
                "Copy any interesting text from the log (if readable)",
                500,
                Paragraph,
            ),
            optional(
                "language_status",
                "🗣️ Language/Decryption Status",
                "e.g., Gek Language, Encrypted, Partially Decoded, English, Korvax",
                200,
                Short,
            ),
            optional(
                "completeness",
                "📄 Completeness",
                "e.g., Complete Log, Fragmented (30%), Corrupted, Missing Pages",
                200,
                Short,
            ),
            optional(
                "author_origin",
                "✍️ Author/Origin (if known)",
                "e.g., Unknown Traveler, Gek Merchant, Atlas Entity, Artemis",
                200,
                Short,
            ),
        ],
    },
    DiscoveryType {
        emoji: "🏛️",
        short: "ruins",
        name: "Ruins & Structures",
        fields: [
            required(
                "description",
                "📝 Discovery Description",
                "Describe the ruins/structure. What makes it notable?",
                1000,
                Paragraph,
            ),
            optional(
                "structure_type",
                "🏗️ Structure Type",
                "e.g., Temple, Monument, Crashed Freighter, Settlement, Observatory",
                200,
                Short,
            ),
            optional(
                "architectural_style",
                "🎨 Architectural Style",
                "e.g., Gek, Korvax, Vy'keen, Ancient, Unknown Civilization",
                200,
                Short,
            ),
            optional(
                "structural_integrity",
                "🏚️ Structural Integrity",
                "e.g., Well-Preserved, Partially Collapsed, Heavily Damaged, Ruins",
                200,
                Short,
            ),
            optional(
                "purpose_function",
                "🎯 Purpose/Function (if known)",
                "e.g., Religious Site, Trading Post, Research Facility, Unknown",
                200,
                Short,
            ),
        ],
    },
    DiscoveryType {
        emoji: "⚙️",
        short: "tech",
        name: "Alien Technology & Artifacts",
        fields: [
            required(
                "description",
                "📝 Discovery Description",
                "Describe the technology/artifact. How does it work?",
                1000,
                Paragraph,
            ),
            optional(
                "tech_category",
                "🔧 Technology Category",
                "e.g., Weapon, Tool, Data Core, Power Source, Communication Device",
                200,
                Short,
            ),
            optional(
                "operational_status",
                "⚡ Operational Status",
                "e.g., Fully Functional, Partially Working, Inert, Emitting Signal",
                200,
                Short,
            ),
            optional(
                "power_source",
                "🔋 Power Source/Energy",
                "e.g., Unknown Energy, Solar, Biological, Nanite-Based, Depleted",
                200,
                Short,
            ),
            optional(
                "reverse_engineering",
                "🔬 Reverse Engineering Potential",
                "e.g., Blueprint Obtainable, Too Advanced, Partially Understood",
                200,
                Short,
            ),
        ],
    },
    DiscoveryType {
        emoji: "🦗",
        short: "species",
        name: "Flora & Fauna",
        fields: [
            required(
                "description",
                "📝 Discovery Description",
                "Describe the creature/plant. What makes it unique?",
                1000,
                Paragraph,
            ),
            optional(
                "species_name",
                "🏷️ Species Name (if scanned)",
                "e.g., Bipedal Carnivore, Glowing Flora, proc-gen name from scanner",
                200,
                Short,
            ),
            optional(
                "behavioral_notes",
                "👁️ Behavioral Observations",
                "e.g., Aggressive, Passive, Herd Behavior, Bioluminescent at Night",
                200,
                Short,
            ),
            optional(
                "habitat_biome",
                "🌍 Habitat/Biome",
                "e.g., Toxic Swamps, Frozen Tundra, Desert Plains, Underground Caves",
                200,
                Short,
            ),
            optional(
                "threat_level",
                "⚠️ Threat Level",
                "e.g., Harmless, Defensive, Aggressive, Apex Predator, Non-Hostile",
                200,
                Short,
            ),
        ],
    },
    DiscoveryType {
        emoji: "💎",
        short: "mineral",
        name: "Minerals & Resources",
        fields: [
            required(
                "description",
                "📝 Discovery Description",
                "Describe the mineral/resource deposit. Where is it located?",
                1000,
                Paragraph,
            ),
            optional(
                "resource_type",
                "⛏️ Resource Type",
                "e.g., Activated Indium, Gold, Cobalt, Rare Earth, Exotic Crystals",
                200,
                Short,
            ),
            optional(
                "deposit_richness",
                "💰 Deposit Size/Richness",
                "e.g., Small Vein, Large Deposit, S-Class Hotspot, Abundant Field",
                200,
                Short,
            ),
            optional(
                "extraction_method",
                "🔨 Extraction Method",
                "e.g., Mining Laser, Mineral Extractor, Terrain Manipulator Required",
                200,
                Short,
            ),
            optional(
                "economic_value",
                "💵 Economic Value/Market Demand",
                "e.g., High Value (+80%), Common, Rare Trade Good, Star System Specific",
                200,
                Short,
            ),
        ],
    },
    DiscoveryType {
        emoji: "🚀",
        short: "ship",
        name: "Crashed Ships & Wrecks",
        fields: [
            required(
                "description",
                "📝 Discovery Description",
                "Describe the crashed ship/wreck. How did you find it?",
                1000,
                Paragraph,
            ),
            optional(
                "ship_class",
                "🛸 Ship Class/Type",
                "e.g., Hauler, Fighter, Explorer, Exotic, Freighter Debris, Unknown",
                200,
                Short,
            ),
            optional(
                "hull_condition",
                "🔧 Hull Condition/Damage",
                "e.g., Heavily Damaged, Salvageable, Burnt Out, Mostly Intact",
                200,
                Short,
            ),
            optional(
                "salvageable_tech",
                "⚙️ Salvageable Tech/Cargo",
                "e.g., Upgrade Modules, Cargo Pods, Technology Blueprints, Empty",
                200,
                Short,
            ),
            optional(
                "pilot_status",
                "👤 Pilot Status/Evidence",
                "e.g., No Remains Found, Abandoned, Distress Signal Active, Unknown",
                200,
                Short,
            ),
        ],
    },
    DiscoveryType {
        emoji: "⚡",
        short: "hazard",
        name: "Environmental Hazards",
        fields: [
            required(
                "description",
                "📝 Discovery Description",
                "Describe the hazard. What makes it dangerous or unusual?",
                1000,
                Paragraph,
            ),
            optional(
                "hazard_type",
                "☢️ Hazard Type",
                "e.g., Extreme Heat, Freezing Cold, Toxic Atmosphere, Radiation Storm",
                200,
                Short,
            ),
            optional(
                "severity_level",
                "⚠️ Severity Level",
                "e.g., Moderate, High, Extreme, Deadly, Survivable with Protection",
                200,
                Short,
            ),
            optional(
                "duration_frequency",
                "⏱️ Duration/Frequency",
                "e.g., Constant, Every 5 Minutes, Random Storms, Day/Night Cycle",
                200,
                Short,
            ),
            optional(
                "protection_required",
                "🛡️ Protection Required",
                "e.g., Hazard Protection +3, Suit Upgrades, None (Death Zone), Oxygen",
                200,
                Short,
            ),
        ],
    },
    DiscoveryType {
        emoji: "🆕",
        short: "update",
        name: "NMS Update Content",
        fields: [
            required(
                "description",
                "📝 Discovery Description",
                "Describe the new content. What update added it?",
                1000,
                Paragraph,
            ),
            optional(
                "update_name",
                "📦 Update/Patch Name",
                "e.g., Worlds Part I, Echoes, Orbital, Interceptor, Unknown",
                200,
                Short,
            ),
            optional(
                "feature_category",
                "🎯 Feature Category",
                "e.g., New Building Type, Ship Class, Biome, Mechanic, Quest Line",
                200,
                Short,
            ),
            optional(
                "gameplay_impact",
                "🎮 Gameplay Impact",
                "e.g., Major Feature, Quality of Life, Visual Enhancement, Game-Changing",
                200,
                Short,
            ),
            optional(
                "first_impressions",
                "💭 First Impressions/Thoughts",
                "Your initial reaction and thoughts on this new content",
                500,
                Paragraph,
            ),
        ],
    },
    DiscoveryType {
        emoji: "📖",
        short: "lore",
        name: "Player-Created Lore",
        fields: [
            required(
                "description",
                "📝 Lore Entry/Story",
                "Share your creative lore, theory, or story about this location",
                1000,
                Paragraph,
            ),
            optional(
                "story_type",
                "📚 Story Type",
                "e.g., Journal Entry, Theory, Fiction, Historical Account, Roleplay",
                200,
                Short,
            ),
            optional(
                "lore_connections",
                "🔗 Lore Connections",
                "How does this connect to existing game lore or other discoveries?",
                200,
                Short,
            ),
            optional(
                "creative_elements",
                "✨ Creative Elements Used",
                "e.g., Base Building, Photos, Community Event, Coordinates Trail",
                200,
                Short,
            ),
            optional(
                "collaborative_work",
                "🤝 Collaborative Work?",
                "e.g., Solo Project, Community Collaboration, Open for Others, Ongoing",
                200,
                Short,
            ),
        ],
    },
];

/// The discovery type for `value`: its emoji, with or without U+FE0F
/// variation selectors (`"🏛"` finds `"🏛️"`: clients differ in whether they
/// send it, and a report must not be refused over an invisible character),
/// or its short name in any case (`ruins`, `Ruins`).
pub fn discovery_type(value: &str) -> Option<&'static DiscoveryType> {
    let bare = |s: &'static str| s.chars().filter(|&c| c != VARIATION_SELECTOR_16);
    DISCOVERY_TYPES.iter().find(|t| {
        t.short.eq_ignore_ascii_case(value) || bare(t.emoji).eq(value.chars().filter(|&c| c != VARIATION_SELECTOR_16))
    })
}

/// The 40 type-specific columns (everything but `description`), in table order.
pub fn type_specific_columns() -> impl Iterator<Item = &'static str> {
    DISCOVERY_TYPES
        .iter()
        .flat_map(|t| t.type_specific_fields().iter().map(|f| f.column))
}

/// The discovery type that owns the type-specific `column`, if any. Each
/// column belongs to exactly one type, which is how a record that mixes
/// types is caught.
pub fn discovery_type_of_column(column: &str) -> Option<&'static DiscoveryType> {
    DISCOVERY_TYPES
        .iter()
        .find(|t| t.type_specific_fields().iter().any(|f| f.column == column))
}

/// Limits of the common fields, in characters. keeper.db's TEXT columns have
/// no limits of their own, and an unbounded value would let one report bloat
/// both databases and Control Room's views; these are generous for real use.
pub const SYSTEM_NAME_MAX: usize = 100;
/// See [`SYSTEM_NAME_MAX`].
pub const USERNAME_MAX: usize = 100;
/// Discord snowflakes are at most 20 digits; 32 leaves room without letting
/// junk through (they must also be ASCII digits).
pub const DISCORD_ID_MAX: usize = 32;
/// `coordinates`, `condition`, `time_period`, `significance`.
pub const COMMON_TEXT_MAX: usize = 200;
/// Long enough for signed CDN links.
pub const EVIDENCE_URL_MAX: usize = 2000;
/// At most this many tags per report.
pub const TAGS_MAX: usize = 20;
/// At most this many characters per tag.
pub const TAG_MAX_CHARS: usize = 50;
/// `discovery_name`.
pub const DISCOVERY_NAME_MAX: usize = 200;
/// The NAME in `planet:NAME`, `moon:NAME`, `space:NAME`.
pub const LOCATION_NAME_MAX: usize = 200;
/// Discord's limit on a text input's label.
pub const DISCORD_LABEL_MAX: usize = 45;
/// Discord's limit on a text input's placeholder.
pub const DISCORD_PLACEHOLDER_MAX: usize = 100;

/// The keys a JSON record may have besides the 40 type-specific columns, in
/// the order they are checked (required ones first).
pub const COMMON_KEYS: [&str; 14] = [
    "discovery_type",
    "system_name",
    "location",
    "description",
    "username",
    "user_id",
    "guild_id",
    "coordinates",
    "condition",
    "time_period",
    "significance",
    "evidence_url",
    "tags",
    "discovery_name",
];

/// Where in the system a discovery was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LocationKind {
    /// On a planet.
    Planet,
    /// On a moon.
    Moon,
    /// In space (including space stations).
    Space,
}

impl LocationKind {
    /// The value of `location_type` in `metadata` and in VH-Database.
    pub const fn as_str(self) -> &'static str {
        match self {
            LocationKind::Planet => "planet",
            LocationKind::Moon => "moon",
            LocationKind::Space => "space",
        }
    }

    /// `planet`, `moon` or `space`, in any letter case (users type these).
    pub fn parse(s: &str) -> Option<LocationKind> {
        [LocationKind::Planet, LocationKind::Moon, LocationKind::Space]
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for LocationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The reporter's choice of location, written `planet:NAME`, `moon:NAME`,
/// `space:NAME` or `space:station:NAME` (the old bot's convention).
///
/// The kind is only what the reporter said: the mapping decides planet or
/// moon from VH-Database's tables (MAPPING.md, "Location").
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    /// What the reporter said it is.
    pub kind: LocationKind,
    /// The name, trimmed. For `space:station:NAME` it is `station:NAME`, so the
    /// station marker survives into `location_name` without a field of its own.
    pub name: String,
}

impl Location {
    /// Parses `KIND:NAME`. The kind is case-insensitive and may be surrounded
    /// by spaces; the name is trimmed, must not be empty, must hold at most
    /// [`LOCATION_NAME_MAX`] characters and no control character. A name may
    /// itself contain `:`; only the first one separates the kind.
    pub fn parse(s: &str) -> Result<Location, ReportError> {
        const FIELD: &str = "location";
        let (kind, rest) = s.trim().split_once(':').ok_or(ReportError::BadLocation)?;
        let kind = LocationKind::parse(kind.trim()).ok_or(ReportError::BadLocation)?;
        let name = rest.trim();
        if kind == LocationKind::Space
            && name
                .get(..STATION_PREFIX.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(STATION_PREFIX))
            && name[STATION_PREFIX.len()..].trim().is_empty()
        {
            return Err(ReportError::EmptyLocationName { kind: "space:station" });
        }
        if name.is_empty() {
            return Err(ReportError::EmptyLocationName { kind: kind.as_str() });
        }
        check_text(FIELD, name, LOCATION_NAME_MAX, Short)?;
        Ok(Location {
            kind,
            name: name.to_owned(),
        })
    }
}

/// The old bot's marker for a space station: `space:station:NAME`.
const STATION_PREFIX: &str = "station:";

impl FromStr for Location {
    type Err = ReportError;

    fn from_str(s: &str) -> Result<Location, ReportError> {
        Location::parse(s)
    }
}

impl fmt::Display for Location {
    /// `kind:name`, which [`Location::parse`] reads back unchanged.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.name)
    }
}

/// A validated report, ready to be stored as one keeper.db `discoveries` row.
///
/// Only [`Report::from_json`] checks the rules; the fields are public so the
/// store can read them without accessors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The canonical emoji from [`DISCOVERY_TYPES`].
    pub discovery_type: String,
    /// The star system's name as typed (resolved against VH-Database later).
    pub system_name: String,
    /// The reporter's location choice.
    pub location: Location,
    /// The required description.
    pub description: String,
    /// The reporter's display name.
    pub username: String,
    /// The reporter's Discord id; `""` when not given (the column is NOT NULL).
    pub user_id: String,
    /// The Discord guild id, when reported from a guild.
    pub guild_id: Option<String>,
    /// Glyphs or lat/long text.
    pub coordinates: Option<String>,
    /// Free text.
    pub condition: Option<String>,
    /// Free text.
    pub time_period: Option<String>,
    /// Free text.
    pub significance: Option<String>,
    /// An `http://` or `https://` link to the evidence.
    pub evidence_url: Option<String>,
    /// The discovery's own name, kept in `metadata.discovery_name`.
    pub discovery_name: Option<String>,
    /// Tags, trimmed, empty ones dropped, order kept.
    pub tags: Vec<String>,
    /// The type-specific columns that were given (non-empty after trimming),
    /// all belonging to `discovery_type`.
    pub fields: BTreeMap<String, String>,
}

impl Report {
    /// Validates a JSON record and builds the report.
    ///
    /// Keys: `discovery_type`, `system_name`, `location`, `description`,
    /// `username` (required); `user_id`, `guild_id`, `coordinates`,
    /// `condition`, `time_period`, `significance`, `evidence_url`, `tags`,
    /// `discovery_name` (optional); and the record's type-specific columns.
    /// `null` is the same as absent; an optional value empty after trimming is
    /// absent.
    ///
    /// When several problems exist, the first one in this order is reported,
    /// so the same input always gives the same error whatever the key order of
    /// the JSON text: the required keys in the order above; then the optional
    /// keys in the order above; then the 40 type-specific columns in table
    /// order (a column of another type is rejected unless its value is absent
    /// or empty); then unknown keys, the smallest first.
    pub fn from_json(value: &Value) -> Result<Report, ReportError> {
        let obj = value
            .as_object()
            .ok_or(ReportError::NotAnObject { got: json_kind(value) })?;
        let input = Input { obj };

        let raw_type = input.string("discovery_type")?.ok_or(ReportError::Required {
            field: "discovery_type",
        })?;
        let kind = discovery_type(raw_type).ok_or_else(|| ReportError::UnknownDiscoveryType {
            value: raw_type.to_owned(),
        })?;
        let system_name = input.required("system_name", SYSTEM_NAME_MAX, Short)?;
        let raw_location = input
            .string("location")?
            .ok_or(ReportError::Required { field: "location" })?;
        let location = Location::parse(raw_location)?;
        let description_spec = kind.description();
        let description = input.required(
            description_spec.column,
            description_spec.max_chars,
            description_spec.style,
        )?;
        let username = input.required("username", USERNAME_MAX, Short)?;

        let user_id = input.discord_id("user_id")?.unwrap_or_default();
        let guild_id = input.discord_id("guild_id")?;
        let coordinates = input.optional("coordinates", COMMON_TEXT_MAX, Short)?;
        let condition = input.optional("condition", COMMON_TEXT_MAX, Short)?;
        let time_period = input.optional("time_period", COMMON_TEXT_MAX, Short)?;
        let significance = input.optional("significance", COMMON_TEXT_MAX, Short)?;
        let evidence_url = input.optional("evidence_url", EVIDENCE_URL_MAX, Short)?;
        if let Some(url) = &evidence_url
            && !is_http_url(url)
        {
            return Err(ReportError::BadUrl { field: "evidence_url" });
        }
        let tags = input.tags()?;
        let discovery_name = input.optional("discovery_name", DISCOVERY_NAME_MAX, Short)?;

        let mut fields = BTreeMap::new();
        for owner in &DISCOVERY_TYPES {
            for spec in owner.type_specific_fields() {
                if std::ptr::eq(owner, kind) {
                    if let Some(v) = input.optional(spec.column, spec.max_chars, spec.style)? {
                        fields.insert(spec.column.to_owned(), v);
                    }
                } else if input.is_given(spec.column) {
                    return Err(ReportError::NotAFieldOfType {
                        field: spec.column,
                        emoji: kind.emoji,
                        name: kind.name,
                    });
                }
            }
        }

        if let Some(key) = obj.keys().filter(|k| !is_known_key(k)).min() {
            return Err(ReportError::UnknownField { key: key.clone() });
        }

        Ok(Report {
            discovery_type: kind.emoji.to_owned(),
            system_name,
            location,
            description,
            username,
            user_id,
            guild_id,
            coordinates,
            condition,
            time_period,
            significance,
            evidence_url,
            discovery_name,
            tags,
            fields,
        })
    }

    /// The report as a JSON record that [`Report::from_json`] reads back to an
    /// equal report (absent values are left out), e.g. for the pull API.
    pub fn to_json(&self) -> Value {
        let mut obj = Map::new();
        let mut put = |key: &str, value: &str| {
            obj.insert(key.to_owned(), Value::String(value.to_owned()));
        };
        put("discovery_type", &self.discovery_type);
        put("system_name", &self.system_name);
        put("location", &self.location.to_string());
        put("description", &self.description);
        put("username", &self.username);
        if !self.user_id.is_empty() {
            put("user_id", &self.user_id);
        }
        let optional = [
            ("guild_id", &self.guild_id),
            ("coordinates", &self.coordinates),
            ("condition", &self.condition),
            ("time_period", &self.time_period),
            ("significance", &self.significance),
            ("evidence_url", &self.evidence_url),
            ("discovery_name", &self.discovery_name),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                put(key, value);
            }
        }
        for (key, value) in &self.fields {
            put(key, value);
        }
        if !self.tags.is_empty() {
            let tags = self.tags.iter().cloned().map(Value::String).collect();
            obj.insert("tags".to_owned(), Value::Array(tags));
        }
        Value::Object(obj)
    }

    /// The discovery type's table entry.
    pub fn discovery(&self) -> Option<&'static DiscoveryType> {
        discovery_type(&self.discovery_type)
    }

    /// The keeper.db `metadata` JSON object text: the type-specific fields plus
    /// `location_type` and `location_name` (and `discovery_name` if given).
    ///
    /// Keys are sorted, so the text is the same whatever serde_json features
    /// another crate enables (`preserve_order`), which keeps content hashes
    /// and fixtures stable.
    pub fn metadata_json(&self) -> String {
        let mut entries: BTreeMap<&str, &str> = self.fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        entries.insert("location_type", self.location.kind.as_str());
        entries.insert("location_name", &self.location.name);
        if let Some(name) = &self.discovery_name {
            entries.insert("discovery_name", name);
        }
        let object: Map<String, Value> = entries
            .into_iter()
            .map(|(k, v)| (k.to_owned(), Value::String(v.to_owned())))
            .collect();
        Value::Object(object).to_string()
    }

    /// The keeper.db `tags` column: a JSON array text, `None` (NULL) when
    /// there are no tags, as the old bot stored it.
    pub fn tags_json(&self) -> Option<String> {
        if self.tags.is_empty() {
            return None;
        }
        let tags = self.tags.iter().cloned().map(Value::String).collect();
        Some(Value::Array(tags).to_string())
    }

    /// The keeper.db `location` column (NOT NULL): the location's name.
    pub fn location_column(&self) -> &str {
        &self.location.name
    }

    /// The keeper.db `planet_name` column: the name for a planet or a moon
    /// (the old bot kept both there), `None` for space.
    pub fn planet_name(&self) -> Option<&str> {
        match self.location.kind {
            LocationKind::Planet | LocationKind::Moon => Some(&self.location.name),
            LocationKind::Space => None,
        }
    }
}

/// Why a report was refused. Every message starts with the field it is
/// about, so a user or operator knows what to fix.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ReportError {
    /// The record is not a JSON object.
    #[error("a report must be a JSON object, got {got}")]
    NotAnObject {
        /// The JSON kind that was given.
        got: &'static str,
    },
    /// A required value is absent, null or empty after trimming.
    #[error("{field}: required")]
    Required {
        /// The field.
        field: &'static str,
    },
    /// A value of the wrong JSON type.
    #[error("{field}: expected {expected}, got {got}")]
    WrongType {
        /// The field.
        field: &'static str,
        /// What it must be.
        expected: &'static str,
        /// What was given.
        got: &'static str,
    },
    /// A value longer than its limit, in characters after trimming.
    #[error("{field}: {chars} characters, the limit is {max}")]
    TooLong {
        /// The field.
        field: &'static str,
        /// Its length in characters.
        chars: usize,
        /// The limit.
        max: usize,
    },
    /// A control character where none is allowed.
    #[error(
        "{field}: control character U+{:04X} at character {position} is not allowed",
        u32::from(*.character)
    )]
    ControlCharacter {
        /// The field.
        field: &'static str,
        /// The character.
        character: char,
        /// Its 1-based position in the trimmed value, in characters.
        position: usize,
    },
    /// A key that is neither a common field nor a type-specific column.
    #[error("unknown field {}", Quoted(.key))]
    UnknownField {
        /// The key as given.
        key: String,
    },
    /// A type-specific column of another discovery type.
    #[error("{field}: not a field of {emoji} ({name})")]
    NotAFieldOfType {
        /// The column.
        field: &'static str,
        /// The record's discovery type.
        emoji: &'static str,
        /// Its name.
        name: &'static str,
    },
    /// `discovery_type` is not one of the ten emojis or their short names.
    #[error("discovery_type: {} is not one of {}", Quoted(.value), TypeList)]
    UnknownDiscoveryType {
        /// The value as given (trimmed).
        value: String,
    },
    /// `location` is not `KIND:NAME` with a known kind.
    #[error("location: expected planet:NAME, moon:NAME or space:NAME")]
    BadLocation,
    /// `location` has a kind but no name.
    #[error("location: no name after \"{kind}:\"")]
    EmptyLocationName {
        /// `planet`, `moon`, `space` or `space:station`.
        kind: &'static str,
    },
    /// A Discord id that is not all ASCII digits.
    #[error("{field}: must be ASCII digits (a Discord id)")]
    NotDigits {
        /// The field.
        field: &'static str,
    },
    /// A link that is not `http://` or `https://`.
    #[error("{field}: must start with http:// or https://")]
    BadUrl {
        /// The field.
        field: &'static str,
    },
    /// More tags than allowed.
    #[error("tags: {count} tags, the limit is {max}")]
    TooManyTags {
        /// Non-empty tags given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A tag that is not a string.
    #[error("tags[{index}]: expected a string, got {got}")]
    TagNotAString {
        /// 0-based index in the array.
        index: usize,
        /// What was given.
        got: &'static str,
    },
    /// A tag longer than its limit.
    #[error("tags[{index}]: {chars} characters, the limit is {max}")]
    TagTooLong {
        /// 0-based index in the array.
        index: usize,
        /// Its length in characters.
        chars: usize,
        /// The limit.
        max: usize,
    },
    /// A tag with a control character.
    #[error(
        "tags[{index}]: control character U+{:04X} at character {position} is not allowed",
        u32::from(*.character)
    )]
    TagControlCharacter {
        /// 0-based index in the array.
        index: usize,
        /// The character.
        character: char,
        /// Its 1-based position in the trimmed tag, in characters.
        position: usize,
    },
}

impl ReportError {
    /// The field (JSON key) the error is about; `None` when it is about the
    /// record as a whole. Lets the API return it separately and the bot point
    /// at the right input.
    pub fn field(&self) -> Option<&str> {
        match self {
            ReportError::NotAnObject { .. } => None,
            ReportError::Required { field }
            | ReportError::WrongType { field, .. }
            | ReportError::TooLong { field, .. }
            | ReportError::ControlCharacter { field, .. }
            | ReportError::NotAFieldOfType { field, .. }
            | ReportError::NotDigits { field }
            | ReportError::BadUrl { field } => Some(field),
            ReportError::UnknownField { key } => Some(key),
            ReportError::UnknownDiscoveryType { .. } => Some("discovery_type"),
            ReportError::BadLocation | ReportError::EmptyLocationName { .. } => Some("location"),
            ReportError::TooManyTags { .. }
            | ReportError::TagNotAString { .. }
            | ReportError::TagTooLong { .. }
            | ReportError::TagControlCharacter { .. } => Some("tags"),
        }
    }
}

/// How many characters of a user-supplied string an error message quotes: a
/// hostile 10 MB key must not become a 10 MB log line.
const QUOTE_MAX_CHARS: usize = 40;

/// A user-supplied string in an error message: quoted, control characters,
/// quotes and backslashes escaped (so a message cannot forge log lines), and
/// shortened to [`QUOTE_MAX_CHARS`].
struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_char('"')?;
        for c in self.0.chars().take(QUOTE_MAX_CHARS) {
            if c.is_control() || c == '"' || c == '\\' {
                write!(f, "{}", c.escape_debug())?;
            } else {
                f.write_char(c)?;
            }
        }
        f.write_char('"')?;
        let more = self.0.chars().count().saturating_sub(QUOTE_MAX_CHARS);
        if more > 0 {
            write!(f, " (and {more} more characters)")?;
        }
        Ok(())
    }
}

/// The ten types as `🦴 fossil, 📜 log, …`, for the `discovery_type` error
/// and `keeper submit --help`.
pub struct TypeList;

impl fmt::Display for TypeList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, t) in DISCOVERY_TYPES.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{} {}", t.emoji, t.short)?;
        }
        Ok(())
    }
}

/// The JSON kind of a value, as error messages say it.
fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn is_known_key(key: &str) -> bool {
    COMMON_KEYS.contains(&key) || discovery_type_of_column(key).is_some()
}

/// `http://` or `https://` (scheme in any case, as URLs allow) followed by
/// something: other schemes (`javascript:`, `file:`) have no business in a
/// link that Control Room opens.
fn is_http_url(url: &str) -> bool {
    ["http://", "https://"].iter().any(|scheme| {
        url.get(..scheme.len()).is_some_and(|p| p.eq_ignore_ascii_case(scheme)) && url.len() > scheme.len()
    })
}

/// Checks a trimmed, non-empty value: length in characters, then control
/// characters (only `\n` and `\t`, and only in a paragraph).
fn check_text(field: &'static str, value: &str, max: usize, style: FieldStyle) -> Result<(), ReportError> {
    let chars = value.chars().count();
    if chars > max {
        return Err(ReportError::TooLong { field, chars, max });
    }
    match forbidden_control(value, style) {
        Some((position, character)) => Err(ReportError::ControlCharacter {
            field,
            character,
            position,
        }),
        None => Ok(()),
    }
}

/// The first control character `style` does not allow, with its 1-based
/// position in characters.
fn forbidden_control(value: &str, style: FieldStyle) -> Option<(usize, char)> {
    value
        .chars()
        .enumerate()
        .find(|&(_, c)| c.is_control() && !(style.allows_line_breaks() && matches!(c, '\n' | '\t')))
        .map(|(i, c)| (i + 1, c))
}

/// Typed access to the record's keys.
struct Input<'a> {
    obj: &'a Map<String, Value>,
}

impl<'a> Input<'a> {
    /// The trimmed string under `key`: `None` when absent, null or empty after
    /// trimming; an error when it is not a string.
    fn string(&self, key: &'static str) -> Result<Option<&'a str>, ReportError> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => {
                let s = s.trim();
                Ok((!s.is_empty()).then_some(s))
            }
            Some(other) => Err(ReportError::WrongType {
                field: key,
                expected: "a string",
                got: json_kind(other),
            }),
        }
    }

    /// Whether `key` holds anything but null or white space (of any type).
    fn is_given(&self, key: &str) -> bool {
        match self.obj.get(key) {
            None | Some(Value::Null) => false,
            Some(Value::String(s)) => !s.trim().is_empty(),
            Some(_) => true,
        }
    }

    fn required(&self, key: &'static str, max: usize, style: FieldStyle) -> Result<String, ReportError> {
        self.optional(key, max, style)?
            .ok_or(ReportError::Required { field: key })
    }

    fn optional(&self, key: &'static str, max: usize, style: FieldStyle) -> Result<Option<String>, ReportError> {
        match self.string(key)? {
            Some(value) => {
                check_text(key, value, max, style)?;
                Ok(Some(value.to_owned()))
            }
            None => Ok(None),
        }
    }

    /// A Discord id: digits only, because the store and the sync compare
    /// them as text and a stray letter would never match.
    fn discord_id(&self, key: &'static str) -> Result<Option<String>, ReportError> {
        let id = self.optional(key, DISCORD_ID_MAX, Short)?;
        if let Some(id) = &id
            && !id.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(ReportError::NotDigits { field: key });
        }
        Ok(id)
    }

    /// `tags`: an array of strings; each trimmed, empty ones dropped, each
    /// checked, then the count.
    fn tags(&self) -> Result<Vec<String>, ReportError> {
        let items = match self.obj.get("tags") {
            None | Some(Value::Null) => return Ok(Vec::new()),
            Some(Value::Array(items)) => items,
            Some(other) => {
                return Err(ReportError::WrongType {
                    field: "tags",
                    expected: "an array of strings",
                    got: json_kind(other),
                });
            }
        };
        let mut tags = Vec::new();
        for (index, item) in items.iter().enumerate() {
            let Value::String(tag) = item else {
                return Err(ReportError::TagNotAString {
                    index,
                    got: json_kind(item),
                });
            };
            let tag = tag.trim();
            if tag.is_empty() {
                continue;
            }
            let chars = tag.chars().count();
            if chars > TAG_MAX_CHARS {
                return Err(ReportError::TagTooLong {
                    index,
                    chars,
                    max: TAG_MAX_CHARS,
                });
            }
            if let Some((position, character)) = forbidden_control(tag, Short) {
                return Err(ReportError::TagControlCharacter {
                    index,
                    character,
                    position,
                });
            }
            tags.push(tag.to_owned());
        }
        if tags.len() > TAGS_MAX {
            return Err(ReportError::TooManyTags {
                count: tags.len(),
                max: TAGS_MAX,
            });
        }
        Ok(tags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeSet;

    fn record(emoji: &str) -> Value {
        json!({
            "discovery_type": emoji,
            "system_name": "Hilbert Dimension",
            "location": "planet:Getre Beta",
            "description": "Found something.",
            "username": "Explorer#1234",
        })
    }

    fn with(mut value: Value, key: &str, v: Value) -> Value {
        if let Some(obj) = value.as_object_mut() {
            obj.insert(key.to_owned(), v);
        }
        value
    }

    fn without(mut value: Value, key: &str) -> Value {
        if let Some(obj) = value.as_object_mut() {
            obj.remove(key);
        }
        value
    }

    fn ok(value: &Value) -> Report {
        match Report::from_json(value) {
            Ok(report) => report,
            Err(e) => panic!("rejected: {e}\n{value:#}"),
        }
    }

    fn err(value: &Value) -> ReportError {
        match Report::from_json(value) {
            Ok(report) => panic!("accepted: {report:?}"),
            Err(e) => e,
        }
    }

    fn msg(value: &Value) -> String {
        err(value).to_string()
    }

    fn ty(emoji: &str) -> &'static DiscoveryType {
        discovery_type(emoji).expect("known type")
    }

    // ---- the table ----

    #[test]
    fn ten_types_of_five_fields_with_description_first_and_required() {
        assert_eq!(DISCOVERY_TYPES.len(), 10);
        for t in &DISCOVERY_TYPES {
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
        for t in &DISCOVERY_TYPES {
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
        let emojis: Vec<_> = DISCOVERY_TYPES.iter().map(|t| t.emoji).collect();
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
        let names: Vec<_> = DISCOVERY_TYPES.iter().map(|t| t.name).collect();
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
        for t in &DISCOVERY_TYPES {
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

    // ---- valid records ----

    #[test]
    fn valid_record_round_trip_for_each_type() {
        for t in &DISCOVERY_TYPES {
            let mut value = json!({
                "discovery_type": t.emoji.replace('\u{FE0F}', ""),
                "system_name": "  Hilbert Dimension ",
                "location": "Moon: Getre Beta ",
                "description": "\n Line one\n\tLine two  ",
                "username": "Explorer",
                "user_id": "123456789012345678",
                "guild_id": "876543210987654321",
                "coordinates": "0123:4567:89AB:CDEF",
                "condition": "Pristine",
                "time_period": "Ancient",
                "significance": "High",
                "evidence_url": "https://cdn.example.com/a.png",
                "tags": ["fossil", "  ", " rare "],
                "discovery_name": "The Big One",
            });
            for (i, f) in t.type_specific_fields().iter().enumerate() {
                value = with(value, f.column, json!(format!(" value {i} of {} ", f.column)));
            }
            let report = ok(&value);
            assert_eq!(report.discovery_type, t.emoji, "canonical emoji");
            assert_eq!(report.system_name, "Hilbert Dimension");
            assert_eq!(
                report.location,
                Location {
                    kind: LocationKind::Moon,
                    name: "Getre Beta".into()
                }
            );
            assert_eq!(report.description, "Line one\n\tLine two");
            assert_eq!(report.user_id, "123456789012345678");
            assert_eq!(report.guild_id.as_deref(), Some("876543210987654321"));
            assert_eq!(report.tags, ["fossil", "rare"]);
            assert_eq!(report.discovery_name.as_deref(), Some("The Big One"));
            assert_eq!(report.fields.len(), 4);
            for (i, f) in t.type_specific_fields().iter().enumerate() {
                assert_eq!(
                    report.fields.get(f.column).map(String::as_str),
                    Some(format!("value {i} of {}", f.column).as_str())
                );
            }
            assert_eq!(report.discovery().map(|d| d.emoji), Some(t.emoji));
            assert_eq!(report.location_column(), "Getre Beta");
            assert_eq!(report.planet_name(), Some("Getre Beta"));
            assert_eq!(report.tags_json().as_deref(), Some(r#"["fossil","rare"]"#));

            let again = ok(&report.to_json());
            assert_eq!(again, report);

            let metadata: Value = serde_json::from_str(&report.metadata_json()).expect("json");
            let obj = metadata.as_object().expect("object");
            assert_eq!(obj.len(), 4 + 3);
            for f in t.type_specific_fields() {
                assert!(obj.contains_key(f.column));
            }
        }
    }

    #[test]
    fn minimal_record() {
        let report = ok(&record("🦴"));
        assert_eq!(report.user_id, "");
        assert_eq!(report.guild_id, None);
        assert_eq!(report.coordinates, None);
        assert!(report.tags.is_empty());
        assert_eq!(report.tags_json(), None);
        assert!(report.fields.is_empty());
        assert_eq!(ok(&report.to_json()), report);
    }

    #[test]
    fn null_and_blank_optionals_are_absent() {
        let mut value = record("💎");
        for key in [
            "user_id",
            "guild_id",
            "coordinates",
            "evidence_url",
            "tags",
            "discovery_name",
            "resource_type",
        ] {
            value = with(value, key, Value::Null);
        }
        value = with(value, "condition", json!(" \t\n "));
        value = with(value, "deposit_richness", json!("   "));
        value = with(value, "tags", json!(["", " "]));
        let report = ok(&value);
        assert_eq!(report, ok(&record("💎")));
    }

    #[test]
    fn columns_of_another_type_are_fine_when_absent_or_blank() {
        let value = with(record("💎"), "species_type", Value::Null);
        let value = with(value, "ship_class", json!("  "));
        assert!(ok(&value).fields.is_empty());
    }

    #[test]
    fn inner_content_is_kept_as_is() {
        let text = "a  b\t\tc\n\n\nd 'x' \"y\" \\ <script> ; DROP TABLE discoveries; --\u{2028}";
        let value = with(record("📜"), "description", json!(text));
        let value = with(value, "key_excerpt", json!(text));
        let report = ok(&value);
        assert_eq!(report.description, text.trim());
        assert_eq!(report.fields["key_excerpt"], text.trim());
    }

    // ---- rejections ----

    #[test]
    fn not_an_object() {
        assert_eq!(err(&json!([])), ReportError::NotAnObject { got: "an array" });
        assert_eq!(err(&json!("x")).field(), None);
        assert_eq!(msg(&Value::Null), "a report must be a JSON object, got null");
    }

    #[test]
    fn required_fields() {
        for key in ["discovery_type", "system_name", "location", "description", "username"] {
            for value in [
                without(record("🦴"), key),
                with(record("🦴"), key, Value::Null),
                with(record("🦴"), key, json!(" \n\t ")),
            ] {
                assert_eq!(err(&value), ReportError::Required { field: key });
                assert_eq!(msg(&value), format!("{key}: required"));
                assert_eq!(err(&value).field(), Some(key));
            }
        }
    }

    #[test]
    fn values_must_be_strings() {
        let e = err(&with(record("🦴"), "system_name", json!(5)));
        assert_eq!(e.to_string(), "system_name: expected a string, got a number");
        assert_eq!(e.field(), Some("system_name"));
        assert_eq!(
            msg(&with(record("🦴"), "description", json!(["a"]))),
            "description: expected a string, got an array"
        );
        assert_eq!(
            msg(&with(record("🦴"), "discovery_type", json!({"emoji": "🦴"}))),
            "discovery_type: expected a string, got an object"
        );
        assert_eq!(
            msg(&with(record("🦴"), "coordinates", json!(true))),
            "coordinates: expected a string, got a boolean"
        );
        assert_eq!(
            msg(&with(record("🦴"), "user_id", json!(123456))),
            "user_id: expected a string, got a number"
        );
        assert_eq!(
            msg(&with(record("🦴"), "species_type", json!(1.5))),
            "species_type: expected a string, got a number"
        );
        assert_eq!(
            msg(&with(record("🦴"), "tags", json!("a,b"))),
            "tags: expected an array of strings, got a string"
        );
        let e = err(&with(record("🦴"), "tags", json!(["a", 2])));
        assert_eq!(
            e,
            ReportError::TagNotAString {
                index: 1,
                got: "a number"
            }
        );
        assert_eq!(e.to_string(), "tags[1]: expected a string, got a number");
        assert_eq!(e.field(), Some("tags"));
        assert_eq!(
            msg(&with(record("🦴"), "tags", json!([null]))),
            "tags[0]: expected a string, got null"
        );
    }

    #[test]
    fn unknown_field() {
        let e = err(&with(record("🦴"), "foo", json!("bar")));
        assert_eq!(e.to_string(), "unknown field \"foo\"");
        assert_eq!(e.field(), Some("foo"));
        // Even null: the key itself is wrong (probably a typo).
        assert_eq!(
            msg(&with(record("🦴"), "descripton", Value::Null)),
            "unknown field \"descripton\""
        );
        for key in [
            "id",
            "metadata",
            "location_type",
            "planet_name",
            "submission_timestamp",
            "Description",
        ] {
            assert_eq!(err(&with(record("🦴"), key, json!("x"))).field(), Some(key));
        }
    }

    #[test]
    fn unknown_field_is_quoted_safely() {
        let e = err(&with(record("🦴"), "a\"b\nc", json!("x")));
        assert_eq!(e.to_string(), r#"unknown field "a\"b\nc""#);
        let long = "k".repeat(100);
        let e = err(&with(record("🦴"), &long, json!("x")));
        assert_eq!(
            e.to_string(),
            format!("unknown field \"{}\" (and 60 more characters)", "k".repeat(40))
        );
        assert_eq!(e.field(), Some(long.as_str()));
    }

    #[test]
    fn column_of_another_type() {
        let e = err(&with(record("💎"), "species_type", json!("Big")));
        assert_eq!(e.to_string(), "species_type: not a field of 💎 (Minerals & Resources)");
        assert_eq!(e.field(), Some("species_type"));
        // Whatever its type: the key is wrong for this record.
        assert_eq!(
            msg(&with(record("🦴"), "resource_type", json!(3))),
            "resource_type: not a field of 🦴 (Ancient Bones & Fossils)"
        );
    }

    #[test]
    fn unknown_discovery_type() {
        let e = err(&with(record("🦴"), "discovery_type", json!("X")));
        assert_eq!(
            e.to_string(),
            "discovery_type: \"X\" is not one of 🦴 fossil, 📜 log, 🏛️ ruins, ⚙️ tech, 🦗 species, 💎 mineral, 🚀 ship, ⚡ hazard, 🆕 update, 📖 lore"
        );
        assert_eq!(e.field(), Some("discovery_type"));
        assert_eq!(e, ReportError::UnknownDiscoveryType { value: "X".into() });
        // Long names are not accepted; short names are, and stored as the emoji.
        assert!(Report::from_json(&with(record("🦴"), "discovery_type", json!("Minerals & Resources"))).is_err());
        let by_name = Report::from_json(&with(record("🦴"), "discovery_type", json!("fossil"))).unwrap();
        assert_eq!(by_name.discovery_type, "🦴");
    }

    #[test]
    fn bad_location() {
        for bad in ["Getre Beta", "star:Sol", ":x", "planetGetre"] {
            let e = err(&with(record("🦴"), "location", json!(bad)));
            assert_eq!(e.to_string(), "location: expected planet:NAME, moon:NAME or space:NAME");
            assert_eq!(e.field(), Some("location"));
        }
        assert_eq!(
            msg(&with(record("🦴"), "location", json!("planet:  "))),
            "location: no name after \"planet:\""
        );
        assert_eq!(
            msg(&with(record("🦴"), "location", json!("space:station: "))),
            "location: no name after \"space:station:\""
        );
        assert_eq!(
            err(&with(record("🦴"), "location", json!("moon:a\u{1b}b"))),
            ReportError::ControlCharacter {
                field: "location",
                character: '\u{1b}',
                position: 2
            }
        );
    }

    #[test]
    fn location_parse() {
        let cases = [
            ("planet:Getre Beta", LocationKind::Planet, "Getre Beta"),
            ("PLANET:Getre", LocationKind::Planet, "Getre"),
            ("  Moon :  Luna Prime  ", LocationKind::Moon, "Luna Prime"),
            ("space:Anomaly", LocationKind::Space, "Anomaly"),
            ("space:station:Alpha", LocationKind::Space, "station:Alpha"),
            ("Space:Station:Alpha", LocationKind::Space, "Station:Alpha"),
            ("planet:Kepler:186f", LocationKind::Planet, "Kepler:186f"),
            ("planet:station:X", LocationKind::Planet, "station:X"),
            ("moon:月の裏側", LocationKind::Moon, "月の裏側"),
        ];
        for (input, kind, name) in cases {
            let loc = Location::parse(input).expect(input);
            assert_eq!((loc.kind, loc.name.as_str()), (kind, name), "{input}");
            assert_eq!(loc.to_string().parse::<Location>(), Ok(loc.clone()));
        }
        assert_eq!(LocationKind::Planet.as_str(), "planet");
        assert_eq!(LocationKind::Moon.as_str(), "moon");
        assert_eq!(LocationKind::Space.as_str(), "space");
        assert_eq!(
            Location::parse("space:"),
            Err(ReportError::EmptyLocationName { kind: "space" })
        );
        assert_eq!(Location::parse(""), Err(ReportError::BadLocation));
    }

    #[test]
    fn location_name_limit_in_chars() {
        let name = "ñ".repeat(LOCATION_NAME_MAX);
        assert_eq!(
            Location::parse(&format!("planet:{name}")).map(|l| l.name),
            Ok(name.clone())
        );
        assert_eq!(
            Location::parse(&format!("planet: {name}ñ ")),
            Err(ReportError::TooLong {
                field: "location",
                chars: 201,
                max: 200
            })
        );
    }

    #[test]
    fn type_specific_too_long() {
        let e = err(&with(record("🦴"), "species_type", json!("x".repeat(205))));
        assert_eq!(e.to_string(), "species_type: 205 characters, the limit is 200");
        assert_eq!(e.field(), Some("species_type"));
    }

    #[test]
    fn common_field_limits() {
        let cases: [(&str, usize); 9] = [
            ("system_name", 100),
            ("username", 100),
            ("coordinates", 200),
            ("condition", 200),
            ("time_period", 200),
            ("significance", 200),
            ("discovery_name", 200),
            ("description", 1000),
            ("user_id", 32),
        ];
        for (key, max) in cases {
            let fill = if key == "user_id" { "7" } else { "漢" };
            assert!(
                Report::from_json(&with(record("🦴"), key, json!(fill.repeat(max)))).is_ok(),
                "{key}"
            );
            assert_eq!(
                err(&with(record("🦴"), key, json!(fill.repeat(max + 1)))),
                ReportError::TooLong {
                    field: key,
                    chars: max + 1,
                    max
                },
                "{key}"
            );
        }
        let url = format!("https://e.com/{}", "a".repeat(2000 - 14));
        assert_eq!(url.chars().count(), 2000);
        assert!(Report::from_json(&with(record("🦴"), "evidence_url", json!(url))).is_ok());
        assert_eq!(
            msg(&with(record("🦴"), "evidence_url", json!(format!("{url}a")))),
            "evidence_url: 2001 characters, the limit is 2000"
        );
    }

    #[test]
    fn unicode_counted_as_chars_at_the_boundary() {
        // 4-byte emoji: 1000 of them are 4000 bytes, still 1000 characters.
        let at = "💎".repeat(1000);
        let report = ok(&with(record("💎"), "description", json!(format!("  {at}\n"))));
        assert_eq!(report.description, at);
        assert_eq!(
            err(&with(record("💎"), "description", json!(format!("{at}💎")))),
            ReportError::TooLong {
                field: "description",
                chars: 1001,
                max: 1000
            }
        );
        // CJK, 3 bytes each.
        let at = "漢".repeat(200);
        assert!(Report::from_json(&with(record("💎"), "resource_type", json!(at.clone()))).is_ok());
        assert_eq!(
            msg(&with(record("💎"), "resource_type", json!(format!("{at}字")))),
            "resource_type: 201 characters, the limit is 200"
        );
        let at = "字".repeat(500);
        assert!(Report::from_json(&with(record("📜"), "key_excerpt", json!(at.clone()))).is_ok());
        assert_eq!(
            msg(&with(record("📜"), "key_excerpt", json!(format!("{at}字")))),
            "key_excerpt: 501 characters, the limit is 500"
        );
        // A variation selector is a character of its own.
        let at = "⚙️".repeat(100);
        assert_eq!(at.chars().count(), 200);
        assert!(Report::from_json(&with(record("⚙️"), "tech_category", json!(at.clone()))).is_ok());
        assert!(Report::from_json(&with(record("⚙️"), "tech_category", json!(format!("{at}x")))).is_err());
        // Tags.
        let at = "日".repeat(50);
        assert_eq!(
            ok(&with(record("🦴"), "tags", json!([&at]))).tags,
            std::slice::from_ref(&at)
        );
        let e = err(&with(record("🦴"), "tags", json!(["ok", format!("{at}日")])));
        assert_eq!(
            e,
            ReportError::TagTooLong {
                index: 1,
                chars: 51,
                max: 50
            }
        );
        assert_eq!(e.to_string(), "tags[1]: 51 characters, the limit is 50");
    }

    #[test]
    fn discord_ids_are_digits() {
        for key in ["user_id", "guild_id"] {
            for bad in ["12a4", "-1", "1 2", "１２３", "0x10"] {
                let e = err(&with(record("🦴"), key, json!(bad)));
                assert_eq!(e, ReportError::NotDigits { field: key }, "{bad}");
                assert_eq!(e.to_string(), format!("{key}: must be ASCII digits (a Discord id)"));
            }
        }
        assert_eq!(ok(&with(record("🦴"), "user_id", json!(" 42 "))).user_id, "42");
    }

    #[test]
    fn evidence_url_scheme() {
        for bad in [
            "ftp://x.org/a",
            "javascript:alert(1)",
            "www.example.com",
            "https://",
            "http:/x",
            "file:///etc/passwd",
        ] {
            let e = err(&with(record("🦴"), "evidence_url", json!(bad)));
            assert_eq!(
                e.to_string(),
                "evidence_url: must start with http:// or https://",
                "{bad}"
            );
            assert_eq!(e.field(), Some("evidence_url"));
        }
        for good in ["http://x.org", "https://x.org/a?b=c", "HTTPS://X.ORG"] {
            assert_eq!(
                ok(&with(record("🦴"), "evidence_url", json!(good)))
                    .evidence_url
                    .as_deref(),
                Some(good)
            );
        }
    }

    #[test]
    fn tags_rules() {
        let tags: Vec<String> = (0..TAGS_MAX).map(|i| format!("t{i}")).collect();
        assert_eq!(ok(&with(record("🦴"), "tags", json!(tags))).tags.len(), 20);
        let mut too_many = tags.clone();
        too_many.push("one more".into());
        let e = err(&with(record("🦴"), "tags", json!(too_many)));
        assert_eq!(e.to_string(), "tags: 21 tags, the limit is 20");
        assert_eq!(e.field(), Some("tags"));
        // Blank entries do not count.
        let mut padded = tags;
        padded.extend(["".to_owned(), "  ".to_owned()]);
        assert!(Report::from_json(&with(record("🦴"), "tags", json!(padded))).is_ok());
        let e = err(&with(record("🦴"), "tags", json!(["a\u{0}b"])));
        assert_eq!(
            e,
            ReportError::TagControlCharacter {
                index: 0,
                character: '\0',
                position: 2
            }
        );
        assert_eq!(
            e.to_string(),
            "tags[0]: control character U+0000 at character 2 is not allowed"
        );
        assert!(Report::from_json(&with(record("🦴"), "tags", json!(["a\nb"]))).is_err());
        assert_eq!(ok(&with(record("🦴"), "tags", json!([]))).tags_json(), None);
    }

    #[test]
    fn control_characters() {
        // Allowed: \n and \t in the description and in paragraph fields.
        let report = ok(&with(record("📜"), "description", json!("a\nb\tc")));
        assert_eq!(report.description, "a\nb\tc");
        assert!(Report::from_json(&with(record("📜"), "key_excerpt", json!("a\n\tb"))).is_ok());
        assert!(Report::from_json(&with(record("🆕"), "first_impressions", json!("a\n\tb"))).is_ok());

        let e = err(&with(record("📜"), "username", json!("bad\u{7}name")));
        assert_eq!(
            e.to_string(),
            "username: control character U+0007 at character 4 is not allowed"
        );
        assert_eq!(e.field(), Some("username"));

        let rejected: [(&str, &str, &str); 10] = [
            ("📜", "description", "a\rb"),
            ("📜", "description", "a\u{0}b"),
            ("📜", "description", "a\u{85}b"),
            ("📜", "key_excerpt", "a\u{1b}[31mb"),
            ("📜", "language_status", "a\nb"),
            ("📜", "completeness", "a\tb"),
            ("📜", "system_name", "a\nb"),
            ("📜", "coordinates", "a\u{7f}b"),
            ("📜", "discovery_name", "a\u{9f}b"),
            ("📜", "significance", "a\u{8}b"),
        ];
        for (emoji, key, value) in rejected {
            let e = err(&with(record(emoji), key, json!(value)));
            assert!(
                matches!(e, ReportError::ControlCharacter { field, position: 2, .. } if field == key),
                "{key} {value:?}: {e}"
            );
        }
        // Leading and trailing white space (including line breaks) is trimmed, not refused.
        assert_eq!(
            ok(&with(record("📜"), "system_name", json!("\n Euclid \r\n"))).system_name,
            "Euclid"
        );
    }

    #[test]
    fn first_error_is_deterministic() {
        // Required fields come first, in their fixed order.
        assert_eq!(msg(&json!({})), "discovery_type: required");
        assert_eq!(msg(&json!({"zzz": 1, "username": 5})), "discovery_type: required");
        let value = with(without(record("🦴"), "description"), "foo", json!(1));
        let value = with(value, "username", json!("x".repeat(500)));
        assert_eq!(msg(&value), "description: required");
        let value = with(without(record("🦴"), "system_name"), "location", json!("nowhere"));
        assert_eq!(msg(&value), "system_name: required");
        // Then the optional keys, before the type-specific ones.
        let value = with(record("🦴"), "species_type", json!("x".repeat(201)));
        let value = with(value, "evidence_url", json!("ftp://a"));
        assert_eq!(err(&value).field(), Some("evidence_url"));
        let value = with(value, "coordinates", json!(1));
        assert_eq!(err(&value).field(), Some("coordinates"));
        // Then the type-specific columns in table order, before unknown keys.
        let value = with(record("🦴"), "estimated_age", json!("x".repeat(201)));
        let value = with(value, "size_scale", json!("x".repeat(201)));
        let value = with(value, "aaa", json!("x"));
        assert_eq!(err(&value).field(), Some("size_scale"));
        // Unknown keys: the smallest, whatever the order in the text.
        for text in [
            r#"{"discovery_type":"🦴","system_name":"S","location":"space:X","description":"D","username":"U","zeta":1,"alpha":2}"#,
            r#"{"alpha":2,"zeta":1,"discovery_type":"🦴","system_name":"S","location":"space:X","description":"D","username":"U"}"#,
        ] {
            let value: Value = serde_json::from_str(text).expect("json");
            assert_eq!(msg(&value), "unknown field \"alpha\"");
        }
    }

    // ---- keeper.db columns ----

    #[test]
    fn metadata_json_contents() {
        let value = json!({
            "discovery_type": "💎",
            "system_name": "Euclid",
            "location": "moon:Getre Beta",
            "description": "Shiny.",
            "username": "U",
            "resource_type": " Gold ",
            "economic_value": "High \"value\"",
            "discovery_name": "El Dorado",
            "coordinates": "not in metadata",
        });
        let report = ok(&value);
        assert_eq!(
            report.metadata_json(),
            r#"{"discovery_name":"El Dorado","economic_value":"High \"value\"","location_name":"Getre Beta","location_type":"moon","resource_type":"Gold"}"#
        );
        assert_eq!(report.location_column(), "Getre Beta");
        assert_eq!(report.planet_name(), Some("Getre Beta"));

        let report = ok(&with(record("🚀"), "location", json!("space:station:Alpha")));
        assert_eq!(
            report.metadata_json(),
            r#"{"location_name":"station:Alpha","location_type":"space"}"#
        );
        assert_eq!(report.location_column(), "station:Alpha");
        assert_eq!(report.planet_name(), None);

        // Paragraph text with line breaks and emoji survives the JSON round trip.
        let text = "Line 1\nLine 2\t🆕 字";
        let report = ok(&with(record("🆕"), "first_impressions", json!(text)));
        let metadata: Value = serde_json::from_str(&report.metadata_json()).expect("json");
        assert_eq!(metadata["first_impressions"], json!(text));
        assert_eq!(metadata["location_type"], json!("planet"));
        assert_eq!(metadata["location_name"], json!("Getre Beta"));
        assert!(metadata.get("discovery_name").is_none());
    }

    #[test]
    fn tags_json_text() {
        let report = ok(&with(record("🦴"), "tags", json!([" a ", "b \"c\"", "字"])));
        assert_eq!(report.tags_json().as_deref(), Some(r#"["a","b \"c\"","字"]"#));
    }
}
