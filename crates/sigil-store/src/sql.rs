//! A small builder for queries whose WHERE clause depends on the filters given.

use sqlx::AssertSqlSafe;
use sqlx::any::{Any, AnyArguments};
use sqlx::query::Query;

/// A value to bind, typed so PostgreSQL gets the parameter type it expects.
#[derive(Debug, Clone)]
pub enum Value {
    Text(String),
    OptText(Option<String>),
    Int(i64),
    OptInt(Option<i64>),
    Blob(Vec<u8>),
    OptBlob(Option<Vec<u8>>),
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Self::Text(s.to_owned())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Self::Text(s)
    }
}
impl From<Option<String>> for Value {
    fn from(s: Option<String>) -> Self {
        Self::OptText(s)
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Self::Int(v)
    }
}
impl From<Option<i64>> for Value {
    fn from(v: Option<i64>) -> Self {
        Self::OptInt(v)
    }
}
impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Self::Blob(v)
    }
}
impl From<Option<Vec<u8>>> for Value {
    fn from(v: Option<Vec<u8>>) -> Self {
        Self::OptBlob(v)
    }
}

/// How a statement's placeholders are written.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Placeholders {
    /// `$1, $2, …`: what PostgreSQL needs, and SQLite accepts.
    #[default]
    Numbered,
    /// `?` in order: SQLite only. sqlx binds each SQLite parameter after asking SQLite for its
    /// name, a walk of the statement's list of named parameters, so `$n` costs time quadratic
    /// in the parameter count; anonymous ones are in no list. For the writer's multi-row
    /// statements.
    Anonymous,
}

impl Placeholders {
    /// The cheapest style `conn`'s backend understands.
    pub fn for_connection(conn: &sqlx::AnyConnection) -> Self {
        if conn.backend_name().eq_ignore_ascii_case("sqlite") {
            Self::Anonymous
        } else {
            Self::Numbered
        }
    }
}

/// SQL text plus its bind values, in order of [`Sql::bind`] calls.
#[derive(Debug, Default)]
pub struct Sql {
    pub text: String,
    pub values: Vec<Value>,
    placeholders: Placeholders,
}

impl Sql {
    /// A statement with numbered placeholders, for any backend.
    pub fn new(text: &str) -> Self {
        Self::with(Placeholders::Numbered, text)
    }

    /// A statement for `conn`'s backend: see [`Placeholders::Anonymous`].
    pub fn on(conn: &sqlx::AnyConnection, text: &str) -> Self {
        Self::with(Placeholders::for_connection(conn), text)
    }

    pub fn with(placeholders: Placeholders, text: &str) -> Self {
        Self {
            text: text.to_owned(),
            values: Vec::new(),
            placeholders,
        }
    }

    /// Appends SQL text.
    pub fn push(&mut self, s: &str) -> &mut Self {
        self.text.push_str(s);
        self
    }

    /// Appends the next placeholder and records its value.
    pub fn bind(&mut self, v: impl Into<Value>) -> &mut Self {
        self.values.push(v.into());
        match self.placeholders {
            Placeholders::Numbered => {
                self.text.push('$');
                self.text.push_str(&self.values.len().to_string());
            }
            Placeholders::Anonymous => self.text.push('?'),
        }
        self
    }

    /// A query with its values bound, ready to execute.
    pub fn query(self) -> Query<'static, Any, AnyArguments> {
        bind_all(sqlx::query(AssertSqlSafe(self.text)), self.values)
    }
}

/// A fixed statement with positional values.
pub fn stmt(text: &'static str, values: Vec<Value>) -> Query<'static, Any, AnyArguments> {
    bind_all(sqlx::query(text), values)
}

fn bind_all(mut q: Query<'static, Any, AnyArguments>, values: Vec<Value>) -> Query<'static, Any, AnyArguments> {
    for v in values {
        q = match v {
            Value::Text(s) => q.bind(s),
            Value::OptText(s) => q.bind(s),
            Value::Int(i) => q.bind(i),
            Value::OptInt(i) => q.bind(i),
            Value::Blob(b) => q.bind(b),
            Value::OptBlob(b) => q.bind(b),
        };
    }
    q
}
