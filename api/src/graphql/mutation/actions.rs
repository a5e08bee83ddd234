//! `acknowledgeAction`: a worker reports what it did with an action.

use async_graphql::{Context, ErrorExtensions, ID, Object, Result};

use crate::graphql::types::{Action, ActionStatus};
use crate::graphql::{db, now};
use crate::service::actions;

#[derive(Default)]
pub struct ActionsMutation;

#[Object]
impl ActionsMutation {
    /// Set an action's status and note. `handledAt` becomes now for HANDLED
    /// and FAILED, null for PENDING (re-opened). With `expectedStatus`, only
    /// while the action is still in that status: otherwise a CONFLICT error
    /// and nothing changes (of two workers claiming one action with
    /// `expectedStatus: PENDING`, exactly one succeeds). An unknown id is a
    /// NOT_FOUND error; an id that is not an action id, BAD_USER_INPUT.
    async fn acknowledge_action(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The action's id.")] id: ID,
        #[graphql(desc = "Its new status.")] status: ActionStatus,
        #[graphql(
            desc = "What the worker did, for people reading the inbox; replaces the previous note (null clears it)."
        )]
        note: Option<String>,
        #[graphql(
            desc = "Change it only if its status is still this one (PENDING: claim it); otherwise CONFLICT."
        )]
        expected_status: Option<ActionStatus>,
    ) -> Result<Action> {
        let id = actions::parse_id(&id).map_err(|e| e.extend())?;
        let updated = actions::acknowledge(
            db(ctx)?,
            id,
            status.into(),
            note,
            now(ctx),
            expected_status.map(Into::into),
        )
        .await
        .map_err(|e| e.extend())?;
        Action::try_from(updated)
    }
}
