//! `callStats`: aggregates over the calls a filter selects, each one SQL
//! statement that returns a handful of numbers (rows never come to Rust).

use chrono::{DateTime, Utc};
use entity::{action, attempt, call};
use sea_orm::sea_query::{Expr, SelectStatement};
use sea_orm::{
    ColumnTrait, Condition, DatabaseBackend, DatabaseConnection, EntityTrait, FromQueryResult,
    Order, QueryFilter, QueryOrder, QuerySelect, QueryTrait,
};

use super::ServiceError;
use super::calls::CallFilter;
use crate::domain::CallStatus;

/// The call-level numbers of `callStats`.
#[derive(Clone, Debug, Default, PartialEq, FromQueryResult)]
pub struct Summary {
    pub total: i64,
    /// Sum of `attempt_count`: the number of attempts.
    pub attempts: i64,
    /// Calls with at least one analysis.
    pub analysed: i64,
    /// Calls whose latest analysis says `success: true`.
    pub successful: i64,
    /// Over calls with a duration; null when none has one.
    pub average_duration: Option<f64>,
    /// Null when no call has credits.
    pub credits_used: Option<f64>,
}

pub async fn summary(
    db: &DatabaseConnection,
    filter: &CallFilter,
) -> Result<Summary, ServiceError> {
    let condition = filter.condition(db.get_database_backend())?;
    let row = call::Entity::find()
        .select_only()
        .expr_as(Expr::cust("COUNT(*)"), "total")
        .expr_as(Expr::cust(r#"COALESCE(SUM("call"."attempt_count"), 0)"#), "attempts")
        .expr_as(
            Expr::cust(
                r#"COALESCE(SUM(CASE WHEN EXISTS (SELECT 1 FROM "analysis" WHERE "analysis"."call_id" = "call"."id") THEN 1 ELSE 0 END), 0)"#,
            ),
            "analysed",
        )
        .expr_as(
            Expr::cust(r#"COALESCE(SUM(CASE WHEN "call"."success" THEN 1 ELSE 0 END), 0)"#),
            "successful",
        )
        .expr_as(Expr::cust(r#"AVG("call"."duration_seconds")"#), "average_duration")
        .expr_as(Expr::cust(r#"SUM("call"."credits_used")"#), "credits_used")
        .filter(condition)
        .into_model::<Summary>()
        .one(db)
        .await?;
    Ok(row.unwrap_or_default())
}

/// Attempts of the selected calls, and how many of them connected.
#[derive(Clone, Debug, Default, PartialEq, FromQueryResult)]
pub struct Connects {
    pub attempts: i64,
    pub connected: i64,
}

pub async fn connects(
    db: &DatabaseConnection,
    filter: &CallFilter,
) -> Result<Connects, ServiceError> {
    let mut select = attempt::Entity::find()
        .select_only()
        .expr_as(Expr::cust("COUNT(*)"), "attempts")
        .expr_as(
            Expr::cust(r#"COALESCE(SUM(CASE WHEN "attempt"."connected" THEN 1 ELSE 0 END), 0)"#),
            "connected",
        );
    if !filter.is_empty() {
        select = select.filter(attempt::Column::CallId.in_subquery(selected_ids(db, filter)?));
    }
    Ok(select
        .into_model::<Connects>()
        .one(db)
        .await?
        .unwrap_or_default())
}

/// Calls per status, in the order of [`CallStatus::ALL`]; statuses without calls left out.
pub async fn by_status(
    db: &DatabaseConnection,
    filter: &CallFilter,
) -> Result<Vec<(CallStatus, i64)>, ServiceError> {
    let condition = filter.condition(db.get_database_backend())?;
    let rows: Vec<(String, i64)> = call::Entity::find()
        .select_only()
        .column(call::Column::Status)
        .expr_as(Expr::cust("COUNT(*)"), "n")
        .filter(condition)
        .group_by(call::Column::Status)
        .into_tuple()
        .all(db)
        .await?;
    let mut counts: Vec<(CallStatus, i64)> = rows
        .into_iter()
        .filter_map(|(status, n)| CallStatus::from_db(&status).map(|s| (s, n)))
        .collect();
    counts.sort_by_key(|(s, _)| CallStatus::ALL.iter().position(|a| a == s));
    Ok(counts)
}

/// Actions of the selected calls per kind, most frequent first (actions
/// without a call belong to no selection and are not counted).
pub async fn actions_by_kind(
    db: &DatabaseConnection,
    filter: &CallFilter,
) -> Result<Vec<(String, i64)>, ServiceError> {
    let of_calls = if filter.is_empty() {
        action::Column::CallId.is_not_null()
    } else {
        action::Column::CallId.in_subquery(selected_ids(db, filter)?)
    };
    let mut rows: Vec<(String, i64)> = action::Entity::find()
        .select_only()
        .column(action::Column::Kind)
        .expr_as(Expr::cust("COUNT(*)"), "n")
        .filter(of_calls)
        .group_by(action::Column::Kind)
        .into_tuple()
        .all(db)
        .await?;
    rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Ok(rows)
}

/// Chart buckets: UTC hours or days.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bucket {
    Hour,
    Day,
}

/// One bucket of the series.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    pub start: DateTime<Utc>,
    pub total: i64,
    pub completed: i64,
    pub failed: i64,
    pub credits_used: f64,
}

#[derive(FromQueryResult)]
struct PointRow {
    start: String,
    total: i64,
    completed: i64,
    failed: i64,
    credits_used: f64,
}

/// Calls per bucket of `created_at`, oldest first, empty buckets left out.
/// Grouped in SQL; the bucket's start comes back as RFC 3339 text from both backends.
pub async fn series(
    db: &DatabaseConnection,
    filter: &CallFilter,
    bucket: Bucket,
) -> Result<Vec<Point>, ServiceError> {
    let backend = db.get_database_backend();
    let condition = filter.condition(backend)?;
    let start = || Expr::cust(bucket_start(backend, bucket));
    let rows = call::Entity::find()
        .select_only()
        .expr_as(start(), "start")
        .expr_as(Expr::cust("COUNT(*)"), "total")
        .expr_as(
            Expr::cust(r#"COALESCE(SUM(CASE WHEN "call"."status" = 'COMPLETED' THEN 1 ELSE 0 END), 0)"#),
            "completed",
        )
        .expr_as(
            Expr::cust(
                r#"COALESCE(SUM(CASE WHEN "call"."status" IN ('TIMEOUT', 'FAILED', 'VALIDATION_FAILED', 'BUSY', 'NO_ANSWER', 'SKIP', 'ABORTED') THEN 1 ELSE 0 END), 0)"#,
            ),
            "failed",
        )
        .expr_as(
            Expr::cust(r#"COALESCE(SUM("call"."credits_used"), 0.0)"#),
            "credits_used",
        )
        .filter(condition)
        .group_by(start())
        .order_by(start(), Order::Asc)
        .into_model::<PointRow>()
        .all(db)
        .await?;
    rows.into_iter()
        .map(|r| {
            let start = DateTime::parse_from_rfc3339(&r.start)
                .map_err(|e| {
                    ServiceError::from(sea_orm::DbErr::Type(format!(
                        "bucket start {:?}: {e}",
                        r.start
                    )))
                })?
                .to_utc();
            Ok(Point {
                start,
                total: r.total,
                completed: r.completed,
                failed: r.failed,
                credits_used: r.credits_used,
            })
        })
        .collect()
}

/// SQL for the start of a call's bucket, as `YYYY-MM-DDTHH:00:00Z` text.
fn bucket_start(backend: DatabaseBackend, bucket: Bucket) -> &'static str {
    match (backend, bucket) {
        (DatabaseBackend::Postgres, Bucket::Hour) => {
            r#"to_char("call"."created_at" AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24":00:00Z"')"#
        }
        (DatabaseBackend::Postgres, Bucket::Day) => {
            r#"to_char("call"."created_at" AT TIME ZONE 'UTC', 'YYYY-MM-DD"T00:00:00Z"')"#
        }
        (_, Bucket::Hour) => r#"strftime('%Y-%m-%dT%H:00:00Z', "call"."created_at")"#,
        (_, Bucket::Day) => r#"strftime('%Y-%m-%dT00:00:00Z', "call"."created_at")"#,
    }
}

/// `SELECT id FROM call WHERE <filter>`, for statements over a selection's attempts or actions.
fn selected_ids(
    db: &DatabaseConnection,
    filter: &CallFilter,
) -> Result<SelectStatement, ServiceError> {
    let condition: Condition = filter.condition(db.get_database_backend())?;
    Ok(call::Entity::find()
        .select_only()
        .column(call::Column::Id)
        .filter(condition)
        .into_query())
}

#[cfg(test)]
mod tests {
    //! Buckets need calls that arrived hours apart: committed through the
    //! ingest writers' function with chosen arrival times (the integration
    //! tests cover the HTTP side, where arrival is the server's clock).

    use super::*;
    use crate::config::Config;
    use crate::db::Db;
    use crate::domain::parse;
    use crate::ingest::commit_batch;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    async fn arrive(db: &DatabaseConnection, time: &str, call: &str, types: &[&str]) {
        for event_type in types {
            let body = format!(
                r#"{{"event":{{"type":"{event_type}","data":{{"call":{{"id":"{call}"}},"credits":{{"used":1.5}}}}}}}}"#
            );
            let delivery = parse(body.as_bytes()).unwrap();
            commit_batch(db, &[(&delivery, at(time), true)])
                .await
                .unwrap();
        }
    }

    #[tokio::test]
    async fn series_buckets_by_utc_hour_and_day_oldest_first_and_skips_empty_ones() {
        let path =
            std::env::temp_dir().join(format!("calltrail-stats-{}.db", rand::random::<u64>()));
        let db = Db::connect(
            &Config::for_database(&format!("sqlite://{}?mode=rwc", path.display())),
            1,
        )
        .await
        .unwrap();
        db.migrate().await.unwrap();
        let w = &db.write;
        arrive(
            w,
            "2026-11-21T09:00:00Z",
            "d",
            &["call.initiate", "call.busy"],
        )
        .await;
        arrive(
            w,
            "2026-11-20T10:45:10.5Z",
            "b",
            &["call.initiate", "end-of-call"],
        )
        .await;
        arrive(
            w,
            "2026-11-20T10:15:00Z",
            "a",
            &["call.initiate", "call.completed"],
        )
        .await;
        arrive(
            w,
            "2026-11-20T13:05:00+02:00",
            "c",
            &["call.initiate", "call.no-answer"],
        )
        .await;

        let all = CallFilter::all(Utc::now());
        let hours = series(&db.read, &all, Bucket::Hour).await.unwrap();
        let point = |start: &str, total, completed, failed, credits_used| Point {
            start: at(start),
            total,
            completed,
            failed,
            credits_used,
        };
        assert_eq!(
            hours,
            [
                point("2026-11-20T10:00:00Z", 2, 2, 0, 1.5),
                point("2026-11-20T11:00:00Z", 1, 0, 1, 0.0),
                point("2026-11-21T09:00:00Z", 1, 0, 1, 0.0),
            ]
        );
        let days = series(&db.read, &all, Bucket::Day).await.unwrap();
        assert_eq!(
            days,
            [
                point("2026-11-20T00:00:00Z", 3, 2, 1, 1.5),
                point("2026-11-21T00:00:00Z", 1, 0, 1, 0.0),
            ]
        );
        drop(db);
        for suffix in ["", "-wal", "-shm"] {
            std::fs::remove_file(format!("{}{suffix}", path.display())).ok();
        }
    }
}
