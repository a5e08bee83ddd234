//! GraphQL inputs (filters and orders) and their translation into the
//! service layer's terms.

use async_graphql::{Enum, ID, InputObject, Json};
use chrono::Utc;
use serde_json::Value;

use super::scalars::DateTime;
use super::types::{ActionStatus, CallStatus};
use crate::service::{actions, calls, events};

/// Which calls to select. Every condition given must hold; an empty filter selects every call.
#[derive(InputObject, Clone, Debug, Default)]
pub struct CallFilter {
    /// Calls whose status is one of these (an empty list selects none).
    pub status: Option<Vec<CallStatus>>,
    /// Calls whose latest analysis has this `success`; calls without an analysis match neither value.
    pub success: Option<bool>,
    /// Calls whose lifecycle ended (`true`) or is still open (`false`).
    pub lifecycle_ended: Option<bool>,
    /// Calls that are stale (`true`: unfinished and silent past `CALLTRAIL_STALE_AFTER`) or not (`false`).
    pub stale: Option<bool>,
    /// Calls created at or after this instant.
    pub created_after: Option<DateTime>,
    /// Calls created before this instant.
    pub created_before: Option<DateTime>,
    /// Metadata matches; a call must satisfy all of them.
    pub metadata: Option<Vec<MetadataMatch>>,
}

/// A top-level key of a call's metadata and the JSON value it must equal
/// (`1` equals `1.0`, but not `"1"` or `true`).
#[derive(InputObject, Clone, Debug)]
pub struct MetadataMatch {
    /// The top-level key, e.g. `customer_id`.
    pub key: String,
    /// The value the key must hold, e.g. `"12345"`; any JSON but null.
    pub equals: Json<Value>,
}

impl CallFilter {
    /// The service filter; `stale_cutoff` is this request's "silent since" bound.
    pub fn into_service(self, stale_cutoff: chrono::DateTime<Utc>) -> calls::CallFilter {
        calls::CallFilter {
            status: self
                .status
                .map(|list| list.into_iter().map(Into::into).collect()),
            success: self.success,
            lifecycle_ended: self.lifecycle_ended,
            stale: self.stale,
            created_after: self.created_after.map(|t| t.0),
            created_before: self.created_before.map(|t| t.0),
            metadata: self
                .metadata
                .unwrap_or_default()
                .into_iter()
                .map(|m| (m.key, m.equals.0))
                .collect(),
            stale_cutoff,
        }
    }
}

/// How to order calls. Ties are broken by id in the same direction, so pages never overlap while
/// the calls keep their keys; a call whose key changes during a walk (`UPDATED_AT`, `DURATION`)
/// moves, and may show twice or not at all.
#[derive(InputObject, Clone, Copy, Debug)]
pub struct CallOrder {
    /// The key to order by.
    pub field: CallOrderField,
    /// Ascending or descending.
    pub direction: OrderDirection,
}

/// Keys calls can be ordered by.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallOrderField {
    /// Arrival of the call's first delivery.
    CreatedAt,
    /// The call's last change.
    UpdatedAt,
    /// The call's duration; calls without one come last in either direction.
    Duration,
}

/// Sort direction.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderDirection {
    /// Smallest (oldest) first.
    Asc,
    /// Largest (newest) first.
    Desc,
}

impl From<CallOrder> for calls::CallOrder {
    fn from(o: CallOrder) -> Self {
        Self {
            field: match o.field {
                CallOrderField::CreatedAt => calls::OrderField::CreatedAt,
                CallOrderField::UpdatedAt => calls::OrderField::UpdatedAt,
                CallOrderField::Duration => calls::OrderField::Duration,
            },
            descending: o.direction == OrderDirection::Desc,
        }
    }
}

/// Which actions to select. Every condition given must hold.
#[derive(InputObject, Clone, Debug, Default)]
pub struct ActionFilter {
    /// Actions of one of these kinds (`create_order`, …).
    pub kind: Option<Vec<String>>,
    /// Actions in one of these statuses (`[PENDING]`: the open inbox).
    pub status: Option<Vec<ActionStatus>>,
    /// Actions of this call.
    pub call_id: Option<ID>,
}

impl From<ActionFilter> for actions::ActionFilter {
    fn from(f: ActionFilter) -> Self {
        Self {
            kind: f.kind,
            status: f
                .status
                .map(|list| list.into_iter().map(Into::into).collect()),
            call_id: f.call_id.map(|id| id.0),
        }
    }
}

/// Which deliveries to select. Every condition given must hold.
#[derive(InputObject, Clone, Debug, Default)]
pub struct EventFilter {
    /// Deliveries naming this call.
    pub call_id: Option<ID>,
    /// Deliveries whose `event.type` is one of these.
    #[graphql(name = "type")]
    pub types: Option<Vec<String>>,
    /// Deliveries of a type calltrail knows (`true`) or does not (`false`).
    pub recognized: Option<bool>,
}

impl From<EventFilter> for events::EventFilter {
    fn from(f: EventFilter) -> Self {
        Self {
            call_id: f.call_id.map(|id| id.0),
            types: f.types,
            recognized: f.recognized,
        }
    }
}

/// The width of a `series` bucket; buckets are aligned to UTC.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
#[graphql(remote = "crate::service::stats::Bucket")]
pub enum StatsBucket {
    /// One point per UTC hour.
    Hour,
    /// One point per UTC day.
    Day,
}
