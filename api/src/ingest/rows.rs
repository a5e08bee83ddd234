//! Multi-row `INSERT` statements over fixed column lists, written out
//! directly, for `calltrail reprocess` (ingestion has its own statements in
//! `postgres.rs` and `sqlite.rs`): building them through SeaORM's
//! `ActiveModel`s and `InsertMany` cost more CPU than the database's own
//! work (docs/PERFORMANCE.md, "Where the time goes"). The text depends only
//! on the table and the row count, so each shape is prepared once per
//! connection.

use std::fmt::Write;

use sea_orm::{DatabaseBackend, Statement, Value};

/// Most values bound to one statement (SQLite's default limit).
pub(super) const MAX_VALUES: usize = 32766;

/// Rows for one table: the values of each row, column by column.
pub(super) struct Rows {
    table: &'static str,
    columns: &'static [&'static str],
    values: Vec<Value>,
}

impl Rows {
    pub(super) fn new(table: &'static str, columns: &'static [&'static str], rows: usize) -> Self {
        Self {
            table,
            columns,
            values: Vec::with_capacity(rows * columns.len()),
        }
    }

    /// Add one row; `row` holds one value per column, in column order.
    pub(super) fn push<const N: usize>(&mut self, row: [Value; N]) {
        debug_assert_eq!(
            N,
            self.columns.len(),
            "one value per column of {}",
            self.table
        );
        self.values.extend(row);
    }

    /// How many rows.
    pub(super) fn len(&self) -> usize {
        self.values.len() / self.columns.len()
    }

    /// The rows as statements of at most [`MAX_VALUES`] bound values each
    /// (SQLite refuses more than 32766 per statement, PostgreSQL 65535).
    pub(super) fn statements(self, backend: DatabaseBackend, tail: &str) -> Vec<Statement> {
        let per = (MAX_VALUES / self.columns.len()).max(1) * self.columns.len();
        let (table, columns) = (self.table, self.columns);
        let mut values = self.values;
        let mut out = Vec::new();
        while !values.is_empty() {
            let rest = values.split_off(per.min(values.len()));
            out.push(
                Rows {
                    table,
                    columns,
                    values,
                }
                .statement(backend, tail),
            );
            values = rest;
        }
        out
    }

    /// `INSERT INTO table (columns) VALUES (…), (…) tail` for `backend`'s placeholders.
    pub(super) fn statement(self, backend: DatabaseBackend, tail: &str) -> Statement {
        let (width, rows) = (self.columns.len(), self.len());
        let mut sql = format!(
            "INSERT INTO \"{}\" (\"{}\") VALUES ",
            self.table,
            self.columns.join("\", \"")
        );
        let mut n = 0;
        for row in 0..rows {
            sql.push_str(if row == 0 { "(" } else { ", (" });
            for column in 0..width {
                if column > 0 {
                    sql.push_str(", ");
                }
                n += 1;
                match backend {
                    DatabaseBackend::Postgres => write!(sql, "${n}").expect("a String accepts"),
                    _ => sql.push('?'),
                }
            }
            sql.push(')');
        }
        if !tail.is_empty() {
            sql.push(' ');
            sql.push_str(tail);
        }
        Statement::from_sql_and_values(backend, sql, self.values)
    }
}

/// `ON CONFLICT (key) DO UPDATE SET c = excluded.c, …` for `columns`.
pub(super) fn upsert(key: &[&str], columns: &[&str]) -> String {
    let set: Vec<String> = columns
        .iter()
        .map(|c| format!("\"{c}\" = excluded.\"{c}\""))
        .collect();
    format!(
        "ON CONFLICT (\"{}\") DO UPDATE SET {}",
        key.join("\", \""),
        set.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_become_one_statement_with_the_backends_placeholders() {
        let mut rows = Rows::new("t", &["a", "b"], 2);
        rows.push([1.into(), "x".into()]);
        rows.push([2.into(), "y".into()]);
        let tail = upsert(&["a"], &["b"]);
        let sqlite = rows.statement(DatabaseBackend::Sqlite, &tail);
        assert_eq!(
            sqlite.sql,
            "INSERT INTO \"t\" (\"a\", \"b\") VALUES (?, ?), (?, ?) \
             ON CONFLICT (\"a\") DO UPDATE SET \"b\" = excluded.\"b\""
        );
        assert_eq!(sqlite.values.map(|v| v.0.len()), Some(4));
        let mut rows = Rows::new("t", &["a", "b"], 1);
        rows.push([1.into(), "x".into()]);
        let postgres = rows.statement(DatabaseBackend::Postgres, "");
        assert_eq!(
            postgres.sql,
            "INSERT INTO \"t\" (\"a\", \"b\") VALUES ($1, $2)"
        );
    }
}
