//! The Mutation root, merged from one object per area.

mod actions;

use async_graphql::MergedObject;

/// Change what calltrail keeps: acknowledge actions.
#[derive(MergedObject, Default)]
#[graphql(name = "Mutation")]
pub struct MutationRoot(actions::ActionsMutation);
