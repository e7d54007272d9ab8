//! A database row as the plugin contract sees it: named columns holding
//! SQLite-typed values. Both databases are read and written through this one
//! representation, so the host never needs to know the columns a plugin maps.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sqlx::sqlite::SqliteRow;
use sqlx::{Column, Row as _, TypeInfo, ValueRef};

/// One SQLite value. BLOBs are not part of either schema; a BLOB that holds
/// UTF-8 is read as text, any other is refused (see [`read_row`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
}

impl Value {
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }

    /// Bytes this value costs in memory; used for the plugin output cap.
    pub fn size(&self) -> usize {
        match self {
            Value::Text(s) => s.len(),
            _ => 8,
        }
    }

    /// The value as JSON, for statements that take a batch as one JSON
    /// parameter. A non-finite real has no JSON form and becomes null: the
    /// sink's schema check refuses such values before they get here.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Integer(i) => (*i).into(),
            Value::Real(r) => serde_json::Number::from_f64(*r).map_or(serde_json::Value::Null, Into::into),
            Value::Text(s) => s.as_str().into(),
        }
    }

    /// This value as [`Value::to_json`] writes it, for serializing straight
    /// into a writer without building a `serde_json::Value`.
    pub fn as_json(&self) -> AsJson<'_> {
        AsJson(self)
    }

    /// The SQLite storage class, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Integer(_) => "integer",
            Value::Real(_) => "real",
            Value::Text(_) => "text",
        }
    }
}

/// A column's name. Shared: the rows of one read hold the same names
/// ([`ColumnNames`]), and so do the rows a plugin maps by position (its
/// output columns), so a batch of rows keeps one copy of each name instead
/// of one per row, and comparing two rows' columns is mostly comparing
/// pointers.
pub type ColumnName = Arc<str>;

/// Columns in table order (as read) or in plugin order (as mapped).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row(pub Vec<(ColumnName, Value)>);

/// The column names of rows read one after another: a row whose column
/// `i` is named as the last one's gets the same [`ColumnName`].
#[derive(Debug, Default)]
pub struct ColumnNames(Vec<ColumnName>);

impl ColumnNames {
    /// The name of column `i`, shared with the rows before if theirs was
    /// the same.
    pub fn name(&mut self, i: usize, name: &str) -> ColumnName {
        match self.0.get_mut(i) {
            Some(known) if &**known == name => known.clone(),
            Some(known) => {
                *known = Arc::from(name);
                known.clone()
            }
            None => {
                let new: ColumnName = Arc::from(name);
                self.0.push(new.clone());
                new
            }
        }
    }
}

impl Row {
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.iter().find(|(n, _)| &**n == name).map(|(_, v)| v)
    }

    pub fn text(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(Value::as_text)
    }

    pub fn integer(&self, name: &str) -> Option<i64> {
        match self.get(name) {
            Some(Value::Integer(i)) => Some(*i),
            _ => None,
        }
    }

    /// The row as a JSON object, column -> value: how the sync API exports
    /// keeper.db rows (`GET /sync/export`, `GET /sync/items/{id}`).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(self.0.iter().map(|(n, v)| (n.to_string(), v.to_json())).collect())
    }

    /// The inverse of [`Row::to_json`], for a remote puller: integers stay
    /// integers, other numbers become reals. Arrays and objects have no
    /// SQLite form and are refused, naming the column.
    pub fn from_json(value: &serde_json::Value) -> Result<Row, UnreadableColumn> {
        let serde_json::Value::Object(object) = value else {
            return Err(UnreadableColumn {
                column: String::new(),
                reason: format!("expected a JSON object of columns, got {value}"),
            });
        };
        let mut out = Vec::with_capacity(object.len());
        for (name, v) in object {
            let value = match v {
                serde_json::Value::Null => Value::Null,
                serde_json::Value::Bool(b) => Value::Integer(i64::from(*b)),
                serde_json::Value::Number(n) => match n.as_i64() {
                    Some(i) => Value::Integer(i),
                    None => Value::Real(n.as_f64().unwrap_or(f64::NAN)),
                },
                serde_json::Value::String(s) => Value::Text(s.clone()),
                other => {
                    return Err(UnreadableColumn {
                        column: name.clone(),
                        reason: format!(
                            "a JSON {} has no SQLite form",
                            if other.is_array() { "array" } else { "object" }
                        ),
                    });
                }
            };
            out.push((Arc::from(name.as_str()), value));
        }
        Ok(Row(out))
    }

    /// Approximate size in bytes, names included.
    pub fn size(&self) -> usize {
        self.0.iter().map(|(n, v)| n.len() + v.size()).sum()
    }
}

/// A column whose stored bytes cannot be given to a plugin.
#[derive(Debug, thiserror::Error)]
#[error("column {column}: {reason}")]
pub struct UnreadableColumn {
    pub column: String,
    pub reason: String,
}

/// Reads every column of a SQLite row with its actual storage class (SQLite
/// is dynamically typed: the declared type does not say what a legacy row holds).
pub fn read_row(row: &SqliteRow) -> Result<Row, UnreadableColumn> {
    read_row_sharing(row, &mut ColumnNames::default())
}

/// [`read_row`] for one of many rows of a query: its column names are
/// shared with the rows read before through `names`.
pub fn read_row_sharing(row: &SqliteRow, names: &mut ColumnNames) -> Result<Row, UnreadableColumn> {
    let mut out = Vec::with_capacity(row.columns().len());
    for (i, column) in row.columns().iter().enumerate() {
        let name = names.name(i, column.name());
        let unreadable = |reason: String| UnreadableColumn {
            column: name.to_string(),
            reason,
        };
        let raw = row.try_get_raw(i).map_err(|e| unreadable(e.to_string()))?;
        let value = if raw.is_null() {
            Value::Null
        } else {
            match raw.type_info().name() {
                "INTEGER" => Value::Integer(row.try_get(i).map_err(|e| unreadable(e.to_string()))?),
                "REAL" => Value::Real(row.try_get(i).map_err(|e| unreadable(e.to_string()))?),
                "TEXT" => Value::Text(
                    row.try_get(i)
                        .map_err(|_| unreadable("text is not valid UTF-8".into()))?,
                ),
                _ => {
                    let bytes: Vec<u8> = row.try_get(i).map_err(|e| unreadable(e.to_string()))?;
                    Value::Text(String::from_utf8(bytes).map_err(|_| unreadable("holds binary data, not text".into()))?)
                }
            }
        };
        out.push((name, value));
    }
    Ok(Row(out))
}

/// A [`Value`] serialized as [`Value::to_json`] builds it (a real that is not
/// finite is `null`).
pub struct AsJson<'v>(&'v Value);

impl serde::Serialize for AsJson<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Null => serializer.serialize_unit(),
            Value::Integer(i) => serializer.serialize_i64(*i),
            Value::Real(r) if r.is_finite() => serializer.serialize_f64(*r),
            Value::Real(_) => serializer.serialize_unit(),
            Value::Text(s) => serializer.serialize_str(s),
        }
    }
}

/// Rows serialized as a JSON array of arrays of their values, in column
/// order: what the sink's INSERT reads back with `json_each`.
pub struct ValuesAsJson<'r>(pub &'r [&'r Row]);

impl serde::Serialize for ValuesAsJson<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq as _;
        struct Values<'r>(&'r Row);
        impl serde::Serialize for Values<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_seq(self.0.0.iter().map(|(_, value)| value.as_json()))
            }
        }
        let mut rows = serializer.serialize_seq(Some(self.0.len()))?;
        for row in self.0 {
            rows.serialize_element(&Values(row))?;
        }
        rows.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows read one after another share each name their columns have in
    /// common; a column named otherwise, or one more, gets its own.
    #[test]
    fn rows_read_together_share_their_column_names() {
        let mut names = ColumnNames::default();
        let first = [names.name(0, "id"), names.name(1, "description")];
        let second = [names.name(0, "id"), names.name(1, "description"), names.name(2, "tags")];
        assert!(Arc::ptr_eq(&first[0], &second[0]) && Arc::ptr_eq(&first[1], &second[1]));
        let renamed = names.name(1, "metadata");
        assert_eq!(&*renamed, "metadata");
        assert!(!Arc::ptr_eq(&renamed, &first[1]));
        assert!(Arc::ptr_eq(&renamed, &names.name(1, "metadata")));
        assert_eq!(&*names.name(2, "tags"), "tags");
    }

    #[test]
    fn rows_serialized_as_json_are_what_to_json_builds() {
        let row = Row(vec![
            ("a".into(), Value::Null),
            ("b".into(), Value::Integer(-3)),
            ("c".into(), Value::Real(0.5)),
            ("d".into(), Value::Real(f64::INFINITY)),
            ("e".into(), Value::Text("\"quoted\" ✓\n\u{1}".into())),
        ]);
        let built = serde_json::Value::Array(vec![
            serde_json::Value::Array(
                row.0.iter().map(|(_, v)| v.to_json()).collect()
            );
            2
        ])
        .to_string();
        assert_eq!(serde_json::to_string(&ValuesAsJson(&[&row, &row])).unwrap(), built);
    }

    #[test]
    fn json_round_trip_keeps_sqlite_types() {
        let row = Row(vec![
            ("id".into(), Value::Integer(7)),
            ("name".into(), Value::Text("Getre Beta".into())),
            ("weight".into(), Value::Real(1.0)),
            ("note".into(), Value::Null),
        ]);
        let mut back = Row::from_json(&row.to_json()).expect("a row");
        back.0.sort_by(|a, b| a.0.cmp(&b.0));
        let mut expected = row;
        expected.0.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(back, expected);
    }

    #[test]
    fn json_without_a_sqlite_form_names_the_column() {
        let error = Row::from_json(&serde_json::json!({"tags": ["a"]})).expect_err("refused");
        assert_eq!(error.column, "tags");
        assert!(Row::from_json(&serde_json::json!([1])).is_err());
    }
}
