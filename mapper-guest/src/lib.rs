//! The default keeper.db → VH-Database mapping plugin (MAPPING.md).
//!
//! The mapping itself lives in plain Rust modules that know nothing of the
//! component model, so it can be unit tested natively; `component` only
//! converts between the WIT types and those modules.

mod json;
mod names;
#[macro_use]
mod source;
mod location;
mod mapping;
mod model;

#[cfg(test)]
mod tests;

pub use mapping::{Column, OUTPUT_COLUMNS, TYPE_SPECIFIC_COLUMNS, map_row, map_values};
pub use model::{Body, Lookup, Mapped, MappingError, Value};
pub use source::InputPositions;

/// The name recorded as the provenance of every row this plugin writes.
pub const PLUGIN_NAME: &str = "keeper-default-mapper";

/// The generated bindings only make sense inside a component: natively the
/// imports have no host behind them. A plugin that reuses this crate as a
/// library disables the `component` feature and exports its own.
#[cfg(all(target_arch = "wasm32", feature = "component"))]
mod component {
    wit_bindgen::generate!({ path: "wit", world: "mapper-by-position" });

    use std::cell::RefCell;

    use keeper::mapper::lookup;
    use keeper::mapper::types;

    struct DefaultMapper;

    thread_local! {
        /// The keeper.db columns `map-values` is given values of (the last
        /// `input-columns`): how many, and where the mapping finds the
        /// ones it reads.
        static INPUT_COLUMNS: RefCell<(usize, crate::InputPositions)> = RefCell::default();
    }

    impl Guest for DefaultMapper {
        fn info() -> PluginInfo {
            PluginInfo {
                name: crate::PLUGIN_NAME.to_owned(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
            }
        }

        fn map(row: Row) -> Result<Mapped, MappingError> {
            let columns: Vec<(String, crate::Value)> = row
                .into_iter()
                .map(|column| (column.name, from_wit(column.value)))
                .collect();
            let mapped = crate::map_row(&columns, &HostLookup).map_err(to_wit_error)?;
            Ok(Mapped {
                row: mapped
                    .row
                    .into_iter()
                    .map(|(column, value)| types::Column {
                        name: column.name().to_owned(),
                        value: to_wit(value),
                    })
                    .collect(),
                warnings: mapped.warnings,
            })
        }

        fn output_columns() -> Vec<String> {
            crate::OUTPUT_COLUMNS.iter().map(|&name| name.to_owned()).collect()
        }

        fn input_columns(names: Vec<String>) {
            let positions = crate::InputPositions::of(names.iter().map(String::as_str));
            INPUT_COLUMNS.with_borrow_mut(|columns| *columns = (names.len(), positions));
        }

        fn map_values(values: Vec<types::Value>) -> Result<MappedCells, MappingError> {
            let values: Vec<crate::Value> = values.into_iter().map(from_wit).collect();
            let mapped = INPUT_COLUMNS.with_borrow(|(count, positions)| {
                if *count == values.len() {
                    crate::map_values(positions, values, &HostLookup).map_err(to_wit_error)
                } else {
                    Err(MappingError {
                        field: None,
                        message: format!(
                            "{} values given for {count} input columns: the host must call input-columns first",
                            values.len(),
                        ),
                    })
                }
            })?;
            Ok(MappedCells {
                cells: mapped
                    .row
                    .into_iter()
                    .map(|(column, value)| types::Cell {
                        column: column.index(),
                        value: to_wit(value),
                    })
                    .collect(),
                warnings: mapped.warnings,
            })
        }
    }

    /// The host's `lookup` import, behind the trait the mapping is written
    /// against.
    struct HostLookup;

    impl crate::Lookup for HostLookup {
        fn find_system(&self, name: &str) -> Option<String> {
            lookup::find_system(name)
        }

        fn find_planet(&self, system_id: &str, name: &str) -> Option<crate::Body> {
            lookup::find_planet(system_id, name).map(from_wit_body)
        }

        fn find_moon(&self, system_id: &str, name: &str) -> Option<crate::Body> {
            lookup::find_moon(system_id, name).map(from_wit_body)
        }
    }

    fn from_wit_body(body: lookup::Body) -> crate::Body {
        crate::Body {
            id: body.id,
            planet_id: body.planet_id,
            name: body.name,
        }
    }

    fn from_wit(value: types::Value) -> crate::Value {
        match value {
            types::Value::Null => crate::Value::Null,
            types::Value::Integer(number) => crate::Value::Integer(number),
            types::Value::Real(number) => crate::Value::Real(number),
            types::Value::Text(text) => crate::Value::Text(text),
        }
    }

    fn to_wit_error(error: crate::MappingError) -> MappingError {
        MappingError {
            field: error.field,
            message: error.message,
        }
    }

    fn to_wit(value: crate::Value) -> types::Value {
        match value {
            crate::Value::Null => types::Value::Null,
            crate::Value::Integer(number) => types::Value::Integer(number),
            crate::Value::Real(number) => types::Value::Real(number),
            crate::Value::Text(text) => types::Value::Text(text),
        }
    }

    export!(DefaultMapper);
}
