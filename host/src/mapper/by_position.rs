//! Rows by position: the `mapper-by-position` world (keeper:mapper@1.3.0).
//!
//! A plugin of that world says once, when it is loaded, which VH-Database
//! columns it may write (`output-columns`), and is told once per instance,
//! and again only when they change, which keeper.db columns the rows have
//! (`input-columns`). Each row then crosses the boundary as its values
//! alone (`map-values`) and comes back as cells that index the output
//! columns. The names are what a row costs most to copy in and out: a
//! keeper.db row names a dozen columns and its VH row two dozen, each a
//! string allocated on the other side.
//!
//! The host calls `map-values` wherever a plugin has it; `map` is there for
//! hosts before 1.3.0, and the conformance check holds a plugin to giving
//! the same row both ways.

use std::sync::Arc;

use wasmtime::Store;
use wasmtime::component::{Component, ComponentExportIndex, TypedFunc};

use super::{HostState, MapError, Mapped, PluginError, from_wit, one_line, to_wit, wit};
use crate::row::{ColumnName, Row};

const OUTPUT_COLUMNS_EXPORT: &str = "output-columns";
const INPUT_COLUMNS_EXPORT: &str = "input-columns";
const MAP_VALUES_EXPORT: &str = "map-values";

/// A by-position plugin, as the host knows it once it is loaded.
#[derive(Debug)]
pub(super) struct ByPosition {
    input_columns: ComponentExportIndex,
    map_values: ComponentExportIndex,
    /// Its `output-columns`: the names its cells index, shared by every
    /// row it maps.
    output_columns: Vec<ColumnName>,
}

/// The exports of the world, found in a component.
pub(super) struct Exports {
    output_columns: ComponentExportIndex,
    input_columns: ComponentExportIndex,
    map_values: ComponentExportIndex,
}

type MapValues = TypedFunc<(Vec<wit::Value>,), (Result<wit::MappedCells, wit::MappingError>,)>;
type InputColumns = TypedFunc<(Vec<String>,), ()>;

impl Exports {
    /// The component's by-position exports: `None` for a plugin of the
    /// plain `mapper` world, an error for one that has some of them only.
    pub(super) fn find(component: &Component) -> Result<Option<Exports>, PluginError> {
        let find = |name| component.get_export_index(None, name);
        match (
            find(OUTPUT_COLUMNS_EXPORT),
            find(INPUT_COLUMNS_EXPORT),
            find(MAP_VALUES_EXPORT),
        ) {
            (None, None, None) => Ok(None),
            (Some(output_columns), Some(input_columns), Some(map_values)) => Ok(Some(Exports {
                output_columns,
                input_columns,
                map_values,
            })),
            _ => Err(PluginError::WrongWorld(format!(
                "exports some of {OUTPUT_COLUMNS_EXPORT}, {INPUT_COLUMNS_EXPORT} and {MAP_VALUES_EXPORT} but not \
                 all: a plugin of the world mapper-by-position exports the three"
            ))),
        }
    }

    /// Asks the plugin for its output columns (in `store`, a fresh
    /// instance's) and checks them.
    pub(super) fn load(
        self,
        store: &mut Store<HostState>,
        instance: wasmtime::component::Instance,
    ) -> Result<ByPosition, PluginError> {
        let wrong = |e: wasmtime::Error| PluginError::WrongWorld(one_line(&format!("{e:#}")));
        // The signatures are checked here too, so that a plugin whose
        // exports have the wrong types is refused when it is loaded, not
        // item by item.
        let _: InputColumns = instance
            .get_typed_func(&mut *store, self.input_columns)
            .map_err(wrong)?;
        let _: MapValues = instance.get_typed_func(&mut *store, self.map_values).map_err(wrong)?;
        let (output_columns,) = instance
            .get_typed_func::<(), (Vec<String>,)>(&mut *store, self.output_columns)
            .map_err(wrong)?
            .call(&mut *store, ())
            .map_err(|e| PluginError::Start(format!("{OUTPUT_COLUMNS_EXPORT}: {}", one_line(&format!("{e:#}")))))?;
        check_output_columns(&output_columns)?;
        Ok(ByPosition {
            input_columns: self.input_columns,
            map_values: self.map_values,
            output_columns: output_columns
                .iter()
                .map(|name| ColumnName::from(name.as_str()))
                .collect(),
        })
    }
}

/// Refuses output columns a cell could not name unambiguously.
fn check_output_columns(columns: &[String]) -> Result<(), PluginError> {
    let refuse = |why: String| Err(PluginError::Start(format!("{OUTPUT_COLUMNS_EXPORT}: {why}")));
    if columns.is_empty() {
        return refuse("names no column: a plugin must be able to write at least one".to_owned());
    }
    if u32::try_from(columns.len()).is_err() {
        return refuse(format!("names {} columns, more than a cell can index", columns.len()));
    }
    let mut seen = std::collections::HashSet::new();
    for name in columns {
        if name.trim().is_empty() {
            return refuse("names a column with an empty name".to_owned());
        }
        if !seen.insert(name.as_str()) {
            return refuse(format!("names the column {name} twice"));
        }
    }
    Ok(())
}

/// One instance's by-position calls, and what it was last told.
pub(super) struct Calls {
    plugin: Arc<ByPosition>,
    input_columns: InputColumns,
    map_values: MapValues,
    /// The input columns the instance has: those of the last row it mapped.
    told: Option<Vec<ColumnName>>,
}

/// What a call returned, before the host checks its size.
pub(super) type Outcome = Result<Result<Mapped, MapError>, wasmtime::Error>;

impl Calls {
    pub(super) fn new(
        plugin: Arc<ByPosition>,
        store: &mut Store<HostState>,
        instance: wasmtime::component::Instance,
    ) -> wasmtime::Result<Calls> {
        Ok(Calls {
            input_columns: instance.get_typed_func(&mut *store, plugin.input_columns)?,
            map_values: instance.get_typed_func(&mut *store, plugin.map_values)?,
            plugin,
            told: None,
        })
    }

    /// Maps `row`: tells the instance its columns first if they are not
    /// the last row's, then passes its values.
    pub(super) fn map(&mut self, store: &mut Store<HostState>, row: std::borrow::Cow<'_, Row>) -> Outcome {
        let columns = &row.0;
        // Rows read together share their names (`row::ColumnNames`): the
        // pointers are compared first, the texts only where they differ.
        let told = self.told.as_ref().is_some_and(|names| {
            names.len() == columns.len()
                && names
                    .iter()
                    .zip(columns)
                    .all(|(told, (name, _))| ColumnName::ptr_eq(told, name) || told == name)
        });
        if !told {
            let names: Vec<ColumnName> = columns.iter().map(|(name, _)| name.clone()).collect();
            // Forgotten first: should the call trap, the instance is gone.
            self.told = None;
            let texts = names.iter().map(ToString::to_string).collect();
            self.input_columns.call(&mut *store, (texts,))?;
            self.told = Some(names);
        }
        let values: Vec<wit::Value> = match row {
            std::borrow::Cow::Owned(row) => row.0.into_iter().map(|(_, value)| to_wit(value)).collect(),
            std::borrow::Cow::Borrowed(row) => row.0.iter().map(|(_, value)| to_wit(value.clone())).collect(),
        };
        let (result,) = self.map_values.call(&mut *store, (values,))?;
        Ok(match result {
            Ok(mapped) => self.named(mapped),
            Err(e) => Err(e.into()),
        })
    }

    /// The cells as a row of named columns.
    fn named(&self, mapped: wit::MappedCells) -> Result<Mapped, MapError> {
        let names = &self.plugin.output_columns;
        let mut row = Vec::with_capacity(mapped.cells.len());
        for cell in mapped.cells {
            let Some(name) = usize::try_from(cell.column).ok().and_then(|i| names.get(i)) else {
                return Err(MapError::BrokeContract(format!(
                    "a cell of column {}, but {OUTPUT_COLUMNS_EXPORT} names {} (0 to {})",
                    cell.column,
                    names.len(),
                    names.len().saturating_sub(1)
                )));
            };
            row.push((name.clone(), from_wit(cell.value)));
        }
        Ok(Mapped {
            row: Row(row),
            warnings: mapped.warnings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|&name| name.to_owned()).collect()
    }

    #[test]
    fn output_columns_must_name_each_column_once() {
        assert!(check_output_columns(&names(&["discovery_type", "description"])).is_ok());
        for (columns, why) in [
            (names(&[]), "names no column"),
            (names(&["description", " "]), "an empty name"),
            (
                names(&["description", "tags", "description"]),
                "names the column description twice",
            ),
        ] {
            let error = check_output_columns(&columns).expect_err("refused").to_string();
            assert!(
                error.contains("output-columns") && error.contains(why),
                "{columns:?}: {error}"
            );
        }
    }
}
