//! Counting GraphQL operations by type for `/metrics`
//! (`calltrail_graphql_requests_total`, `calltrail_graphql_duration_seconds`).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery,
};
use async_graphql::parser::types::{DocumentOperations, ExecutableDocument, OperationType};
use async_graphql::{Response, ServerResult, Variables};

use super::subscription::OneEvent;
use crate::metrics::Metrics;

/// The extension factory: one counter per request, of the app's own registry.
pub struct Measure(pub Metrics);

impl ExtensionFactory for Measure {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(MeasureRequest {
            metrics: self.0.clone(),
            operation: Mutex::new(None),
        })
    }
}

struct MeasureRequest {
    metrics: Metrics,
    operation: Mutex<Option<&'static str>>,
}

fn operation_type(doc: &ExecutableDocument, name: Option<&str>) -> Option<&'static str> {
    let ty = match (&doc.operations, name) {
        (DocumentOperations::Single(op), _) => op.node.ty,
        (DocumentOperations::Multiple(ops), Some(name)) => ops.get(name)?.node.ty,
        (DocumentOperations::Multiple(ops), None) => ops.values().next()?.node.ty,
    };
    Some(match ty {
        OperationType::Query => "query",
        OperationType::Mutation => "mutation",
        OperationType::Subscription => "subscription",
    })
}

#[async_graphql::async_trait::async_trait]
impl Extension for MeasureRequest {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let doc = next.run(ctx, query, variables).await?;
        let operation = operation_type(&doc, None);
        if ctx.data_opt::<OneEvent>().is_some() {
            // One message of a subscription already counted.
        } else if operation == Some("subscription") {
            // A subscription runs as long as its socket: count it, don't time it.
            self.metrics.graphql("subscription", None);
        } else {
            *self.operation.lock().expect("not poisoned") = operation;
        }
        Ok(doc)
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        let started = Instant::now();
        let response = next.run(ctx, operation_name).await;
        if let Some(operation) = *self.operation.lock().expect("not poisoned") {
            self.metrics.graphql(operation, Some(started.elapsed()));
        }
        response
    }
}
