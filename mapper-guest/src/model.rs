//! Plain Rust mirrors of the WIT types.
//!
//! The mapping logic works on these instead of the wit-bindgen types so that
//! it can be unit tested natively with a fake [`Lookup`], without a wasm
//! runtime or a host.

use crate::mapping::Column;

/// A SQLite-typed value, as stored in both databases.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
}

/// A planet or moon found in a system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body {
    /// `planets.id` or `moons.id`.
    pub id: i64,
    /// The planet itself for a planet; the parent planet for a moon.
    pub planet_id: i64,
    /// The name as stored in VH-Database.
    pub name: String,
}

/// Read-only queries on VH-Database's lookup tables.
///
/// In the component this is the host's `lookup` import; in tests, a fake.
pub trait Lookup {
    /// `systems.id` of the system with this name.
    fn find_system(&self, name: &str) -> Option<String>;
    /// The planet of this name in the system.
    fn find_planet(&self, system_id: &str, name: &str) -> Option<Body>;
    /// The moon of this name orbiting any planet of the system.
    fn find_moon(&self, system_id: &str, name: &str) -> Option<Body>;
}

/// A successful mapping: the VH row (only the columns that have a value, in
/// VH-Database's column order) and warnings that do not stop the item.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    /// Columns of [`crate::OUTPUT_COLUMNS`]: the mapping only ever emits
    /// the VH-Database columns it knows, never a name taken from the input.
    pub row: Vec<(Column, Value)>,
    pub warnings: Vec<String>,
}

impl Mapped {
    /// The row with its columns' names.
    pub fn named_row(&self) -> Vec<(&'static str, Value)> {
        self.row
            .iter()
            .map(|(column, value)| (column.name(), value.clone()))
            .collect()
    }
}

/// Why a row cannot be mapped; the same input always fails the same way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingError {
    /// The keeper.db column, or `metadata.<key>`, at fault.
    pub field: Option<String>,
    /// What is wrong, in words an operator can act on.
    pub message: String,
}

impl MappingError {
    pub(crate) fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        MappingError {
            field: Some(field.into()),
            message: message.into(),
        }
    }
}

impl Value {
    /// Used in error messages, so an operator sees what was stored instead
    /// of what was expected.
    pub(crate) fn describe(&self) -> &'static str {
        match self {
            Value::Null => "NULL",
            Value::Integer(_) => "an integer",
            Value::Real(_) => "a real",
            Value::Text(_) => "text",
        }
    }
}
