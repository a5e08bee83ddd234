//! `callStats(filter)`: figures for dashboards, each computed by SQL
//! aggregates and only when asked for (the call-level figures share one
//! statement).

use async_graphql::{Context, ErrorExtensions, Object, Result, SimpleObject};
use tokio::sync::OnceCell;

use crate::graphql::inputs::{CallFilter, StatsBucket};
use crate::graphql::scalars::DateTime;
use crate::graphql::types::CallStatus;
use crate::graphql::{db, stale_cutoff};
use crate::service::{ServiceError, calls, stats};

#[derive(Default)]
pub struct StatsQuery;

#[Object]
impl StatsQuery {
    /// Figures over the calls a filter selects (all calls when omitted).
    async fn call_stats(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Which calls to count; all when omitted.")] filter: Option<CallFilter>,
    ) -> Result<CallStats> {
        Ok(CallStats {
            filter: filter.unwrap_or_default().into_service(stale_cutoff(ctx)?),
            summary: OnceCell::new(),
            connects: OnceCell::new(),
        })
    }
}

pub struct CallStats {
    filter: calls::CallFilter,
    summary: OnceCell<stats::Summary>,
    connects: OnceCell<stats::Connects>,
}

/// Calls in one status.
#[derive(SimpleObject)]
pub struct StatusCount {
    /// The status.
    pub status: CallStatus,
    /// Calls in it.
    pub count: i64,
}

/// Actions of one kind.
#[derive(SimpleObject)]
pub struct KindCount {
    /// The action kind (`create_order`, …).
    pub kind: String,
    /// Actions of that kind.
    pub count: i64,
}

/// One bucket of a chart series.
#[derive(SimpleObject)]
pub struct StatsPoint {
    /// Start of the bucket (UTC).
    pub start: DateTime,
    /// Calls created in the bucket.
    pub total: i64,
    /// Of those, calls whose status is COMPLETED.
    pub completed: i64,
    /// Of those, calls whose status is TIMEOUT, FAILED, VALIDATION_FAILED, BUSY, NO_ANSWER, SKIP or ABORTED (RESCHEDULED and VOICEMAIL count as neither).
    pub failed: i64,
    /// Credits used by those calls.
    pub credits_used: f64,
}

fn ratio(part: i64, whole: i64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

fn extend(e: ServiceError) -> async_graphql::Error {
    e.extend()
}

impl CallStats {
    async fn summary(&self, ctx: &Context<'_>) -> Result<&stats::Summary> {
        let db = db(ctx)?;
        self.summary
            .get_or_try_init(|| stats::summary(db, &self.filter))
            .await
            .map_err(extend)
    }

    async fn connects(&self, ctx: &Context<'_>) -> Result<&stats::Connects> {
        let db = db(ctx)?;
        self.connects
            .get_or_try_init(|| stats::connects(db, &self.filter))
            .await
            .map_err(extend)
    }
}

/// Figures over a selection of calls, for dashboards. Each is computed
/// by SQL aggregates when asked for.
#[Object]
impl CallStats {
    /// Calls selected.
    async fn total(&self, ctx: &Context<'_>) -> Result<i64> {
        Ok(self.summary(ctx).await?.total)
    }

    /// Calls per status, in the order of the CallStatus enum; statuses without calls are left out.
    async fn by_status(&self, ctx: &Context<'_>) -> Result<Vec<StatusCount>> {
        let counts = stats::by_status(db(ctx)?, &self.filter)
            .await
            .map_err(extend)?;
        Ok(counts
            .into_iter()
            .map(|(status, count)| StatusCount {
                status: status.into(),
                count,
            })
            .collect())
    }

    /// Among calls that have an analysis, the fraction (0..1) whose latest analysis says `success: true`; null when none has one.
    async fn success_rate(&self, ctx: &Context<'_>) -> Result<Option<f64>> {
        let s = self.summary(ctx).await?;
        Ok(ratio(s.successful, s.analysed))
    }

    /// Connected attempts / all attempts of the selected calls (connected: reached IN_PROGRESS or later); null without attempts.
    async fn connect_rate(&self, ctx: &Context<'_>) -> Result<Option<f64>> {
        let c = self.connects(ctx).await?;
        Ok(ratio(c.connected, c.attempts))
    }

    /// Attempts / calls; null without calls.
    async fn attempts_per_call(&self, ctx: &Context<'_>) -> Result<Option<f64>> {
        let s = self.summary(ctx).await?;
        Ok(ratio(s.attempts, s.total))
    }

    /// Average duration in seconds over the calls that have one; null when none has.
    async fn average_duration_seconds(&self, ctx: &Context<'_>) -> Result<Option<f64>> {
        Ok(self.summary(ctx).await?.average_duration)
    }

    /// Credits used by all analyses of the selected calls.
    async fn credits_used(&self, ctx: &Context<'_>) -> Result<f64> {
        Ok(self.summary(ctx).await?.credits_used.unwrap_or(0.0))
    }

    /// Actions of the selected calls per kind, most frequent first (actions that name no call are not counted).
    async fn actions_by_kind(&self, ctx: &Context<'_>) -> Result<Vec<KindCount>> {
        let counts = stats::actions_by_kind(db(ctx)?, &self.filter)
            .await
            .map_err(extend)?;
        Ok(counts
            .into_iter()
            .map(|(kind, count)| KindCount { kind, count })
            .collect())
    }

    /// The selected calls per bucket of their `createdAt` (UTC-aligned), oldest first; empty buckets are left out.
    async fn series(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Bucket width: HOUR or DAY.")] bucket: StatsBucket,
    ) -> Result<Vec<StatsPoint>> {
        let points = stats::series(db(ctx)?, &self.filter, bucket.into())
            .await
            .map_err(extend)?;
        Ok(points
            .into_iter()
            .map(|p| StatsPoint {
                start: p.start.into(),
                total: p.total,
                completed: p.completed,
                failed: p.failed,
                credits_used: p.credits_used,
            })
            .collect())
    }
}
