//! Refusing expensive queries before they run: a depth and a complexity
//! limit with errors that say which limit and by how much (`QUERY_TOO_DEEP`,
//! `QUERY_TOO_COMPLEX`), and codes on parse and validation errors
//! (`GRAPHQL_PARSE_FAILED`, `GRAPHQL_VALIDATION_FAILED`).
//!
//! Complexity counts fields, multiplied by the page size for connections
//! and by `first` for `Call.events` and `Attempt.events`, so it estimates
//! the rows a query can return. A page of 100 calls with every nested field
//! and 100 events per call fits; 100 calls with 1000 events each of three
//! fields or more does not (of two: 1 + 100 × (2 + 1000 × 2) = 200,201,
//! under the limit).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextValidation,
};
use async_graphql::parser::types::{DocumentOperations, ExecutableDocument, Selection};
use async_graphql::{ServerError, ServerResult, ValidationResult, Variables};

pub const MAX_DEPTH: usize = 12;
pub const MAX_COMPLEXITY: usize = 250_000;

pub const TOO_DEEP: &str = "QUERY_TOO_DEEP";
pub const TOO_COMPLEX: &str = "QUERY_TOO_COMPLEX";
pub const PARSE_FAILED: &str = "GRAPHQL_PARSE_FAILED";
pub const VALIDATION_FAILED: &str = "GRAPHQL_VALIDATION_FAILED";

/// The extension factory the schema is built with.
pub struct Limits;

impl ExtensionFactory for Limits {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(LimitsOfRequest::default())
    }
}

#[derive(Default)]
struct LimitsOfRequest {
    /// Only `__schema`/`__type` at the top: GraphiQL's introspection query,
    /// whose depth is fixed by the schema, not by the client.
    introspection: AtomicBool,
}

fn with_code(mut error: ServerError, code: &str) -> ServerError {
    error
        .extensions
        .get_or_insert_with(Default::default)
        .set("code", code);
    error
}

fn only_introspection(doc: &ExecutableDocument) -> bool {
    let ops: Vec<_> = match &doc.operations {
        DocumentOperations::Single(op) => vec![op],
        DocumentOperations::Multiple(ops) => ops.values().collect(),
    };
    ops.iter().all(|op| {
        op.node
            .selection_set
            .node
            .items
            .iter()
            .all(|s| matches!(&s.node, Selection::Field(f) if f.node.name.node.starts_with("__")))
    })
}

#[async_graphql::async_trait::async_trait]
impl Extension for LimitsOfRequest {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let doc = next
            .run(ctx, query, variables)
            .await
            .map_err(|e| with_code(e, PARSE_FAILED))?;
        self.introspection
            .store(only_introspection(&doc), Ordering::Relaxed);
        Ok(doc)
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let result = next.run(ctx).await.map_err(|errors| {
            errors
                .into_iter()
                .map(|e| with_code(e, VALIDATION_FAILED))
                .collect::<Vec<_>>()
        })?;
        if result.depth > MAX_DEPTH && !self.introspection.load(Ordering::Relaxed) {
            let message = format!(
                "the query is nested {} levels deep; the limit is {MAX_DEPTH}",
                result.depth
            );
            return Err(vec![with_code(ServerError::new(message, None), TOO_DEEP)]);
        }
        if result.complexity > MAX_COMPLEXITY {
            let message = format!(
                "the query's complexity is {}; the limit is {MAX_COMPLEXITY} (ask for fewer items per page or fewer nested events)",
                result.complexity
            );
            return Err(vec![with_code(
                ServerError::new(message, None),
                TOO_COMPLEX,
            )]);
        }
        Ok(result)
    }
}
