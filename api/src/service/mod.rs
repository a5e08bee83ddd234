//! The read side's database access: every SQL statement GraphQL runs lives
//! here, behind functions that take a connection and return entity rows or
//! plain values. Resolvers call these and never build queries themselves.
//!
//! Pages are keyset pages: a cursor names the last row seen by its order key
//! and id, so a walk stays correct while new rows arrive.

pub mod actions;
pub mod calls;
pub mod cursor;
pub mod events;
pub mod live;
pub mod stats;

use std::sync::Arc;

use sea_orm::DbErr;

/// What a read can fail with. Cheap to clone (DataLoader hands one error to
/// every waiting resolver).
#[derive(Clone, Debug, thiserror::Error)]
pub enum ServiceError {
    /// The client sent something unusable: a malformed id or cursor, a negative count.
    #[error("{0}")]
    BadInput(String),
    /// The thing asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A conditional change whose condition no longer holds (another worker
    /// got there first): nothing changed.
    #[error("{0}")]
    Conflict(String),
    /// The database failed; logged in full, shown to clients as a short message.
    #[error("database error: {0}")]
    Db(Arc<DbErr>),
}

impl From<DbErr> for ServiceError {
    fn from(err: DbErr) -> Self {
        Self::Db(Arc::new(err))
    }
}

impl ServiceError {
    pub fn bad_input(message: impl Into<String>) -> Self {
        Self::BadInput(message.into())
    }
}

/// Which part of an ordered list a page covers.
#[derive(Clone, Debug, PartialEq)]
pub enum Window {
    /// The first `first` rows after the cursor (or from the start).
    Forward { first: u64, after: Option<String> },
    /// The last `last` rows before the cursor (or up to the end).
    Backward { last: u64, before: Option<String> },
}

/// Page sizes of connections (CONTRACT §3): 20 unless asked, at most 100.
pub const DEFAULT_PAGE: u64 = 20;
pub const MAX_PAGE: u64 = 100;

impl Window {
    /// Relay arguments to a window: `first`/`after` walks forward,
    /// `last`/`before` backward; `first` defaults to 20; sizes over 100 are
    /// clamped to 100; mixing the two directions is refused.
    pub fn from_args(
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> Result<Self, ServiceError> {
        match (first, after, last, before) {
            (first, after, None, None) => Ok(Self::Forward {
                first: page_size(first, "first")?,
                after,
            }),
            (None, None, last, before) => Ok(Self::Backward {
                last: page_size(last.or(Some(DEFAULT_PAGE as i32)), "last")?,
                before,
            }),
            _ => Err(ServiceError::bad_input(
                "paginate with either first/after or last/before, not both",
            )),
        }
    }

    pub fn size(&self) -> u64 {
        match self {
            Self::Forward { first, .. } => *first,
            Self::Backward { last, .. } => *last,
        }
    }

    pub fn cursor(&self) -> Option<&str> {
        match self {
            Self::Forward { after, .. } => after.as_deref(),
            Self::Backward { before, .. } => before.as_deref(),
        }
    }

    pub fn is_backward(&self) -> bool {
        matches!(self, Self::Backward { .. })
    }
}

/// A requested page size: default 20, at most 100, never negative.
fn page_size(n: Option<i32>, name: &str) -> Result<u64, ServiceError> {
    match n {
        None => Ok(DEFAULT_PAGE),
        Some(n) if n < 0 => Err(ServiceError::bad_input(format!(
            "`{name}` must not be negative (got {n})"
        ))),
        Some(n) => Ok((n as u64).min(MAX_PAGE)),
    }
}

/// One page of rows, each with its cursor, in the order the client asked for.
#[derive(Clone, Debug)]
pub struct Page<T> {
    pub items: Vec<(String, T)>,
    pub has_next_page: bool,
    pub has_previous_page: bool,
}

impl<T> Page<T> {
    /// `rows` as fetched in scan order, `size + 1` at most: the extra row
    /// only says that more follow. Backward scans run in reverse order, so
    /// their rows are turned back into the asked-for order here.
    pub fn from_scan(mut rows: Vec<T>, window: &Window, cursor_of: impl Fn(&T) -> String) -> Self {
        let more = rows.len() as u64 > window.size();
        rows.truncate(window.size() as usize);
        if window.is_backward() {
            rows.reverse();
        }
        let had_cursor = window.cursor().is_some();
        let (has_next_page, has_previous_page) = if window.is_backward() {
            (had_cursor, more)
        } else {
            (more, had_cursor)
        };
        Self {
            items: rows.into_iter().map(|r| (cursor_of(&r), r)).collect(),
            has_next_page,
            has_previous_page,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_sizes_default_to_20_and_clamp_to_100() {
        let w = Window::from_args(None, None, None, None).unwrap();
        assert_eq!(
            w,
            Window::Forward {
                first: 20,
                after: None
            }
        );
        assert_eq!(
            Window::from_args(Some(500), None, None, None)
                .unwrap()
                .size(),
            100
        );
        assert_eq!(
            Window::from_args(None, None, Some(7), Some("c".into()))
                .unwrap()
                .size(),
            7
        );
        assert!(Window::from_args(Some(-1), None, None, None).is_err());
        assert!(Window::from_args(Some(1), None, Some(1), None).is_err());
    }

    #[test]
    fn a_backward_page_comes_back_in_order_with_its_flags() {
        let w = Window::Backward {
            last: 2,
            before: Some("x".into()),
        };
        let page = Page::from_scan(vec![5, 4, 3], &w, |n| n.to_string());
        let order: Vec<_> = page.items.iter().map(|(_, n)| *n).collect();
        assert_eq!(order, [4, 5]);
        assert!(page.has_previous_page && page.has_next_page);
    }
}
