//! Several SQL statements sent to SQLite in one call.
//!
//! sqlx runs each SQLite connection on its own thread: every statement is a round trip to that
//! thread (a send and a wake-up each way), which costs far more than the statement itself on a
//! quiet machine. A [`Batch`] joins a transaction's statements into one string, so they run in
//! one round trip. Parameters are positional (`?`) across the whole batch: each placeholder takes
//! the next value added, so a statement is written, and its values added, in textual order (sqlx
//! counts `?NNN` gaps in later statements as positional, so numbered ones are not used).
use sqlx::sqlite::{Sqlite, SqliteArguments};
use sqlx::{Arguments, Encode, Executor, Type};

/// Statements and their parameters, executed in order in one call.
#[derive(Default)]
pub(crate) struct Batch {
    sql: String,
    args: SqliteArguments,
}

impl Batch {
    /// Adds the next parameter and returns its placeholder, `?`, to be written where the value
    /// goes (values are taken in the order they were added).
    pub(crate) fn arg<'t, T>(&mut self, value: T) -> Result<&'static str, sqlx::Error>
    where
        T: Encode<'t, Sqlite> + Type<Sqlite> + 't,
    {
        self.args.add(value).map_err(sqlx::Error::Encode)?;
        Ok("?")
    }

    /// Appends a statement (its parameters written with [`Batch::arg`]).
    pub(crate) fn push(&mut self, statement: &str) {
        self.sql.push_str(statement);
        self.sql.push_str(";\n");
    }

    /// Runs every statement in order; the first failing one stops the batch with its error.
    pub(crate) async fn execute<'c, E>(self, executor: E) -> Result<(), sqlx::Error>
    where
        E: Executor<'c, Database = Sqlite>,
    {
        sqlx::query_with(sqlx::AssertSqlSafe(self.sql), self.args).execute(executor).await?;
        Ok(())
    }
}
