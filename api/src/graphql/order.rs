//! Answers list fields in the order the query asks for them (GraphQL spec
//! §7.2.2). async-graphql resolves an object's fields concurrently and
//! keeps them in the order they finish, so `{ totalCount nodes }` could come
//! back as `{ nodes totalCount }`; this puts them back in query order.

use std::sync::{Arc, Mutex};

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery,
};
use async_graphql::indexmap::IndexMap;
use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, Selection, SelectionSet,
};
use async_graphql::{Name, Response, ServerResult, Value, Variables};

/// The extension factory the schema is built with.
pub struct QueryOrder;

impl ExtensionFactory for QueryOrder {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(QueryOrderOfRequest::default())
    }
}

#[derive(Default)]
struct QueryOrderOfRequest {
    document: Mutex<Option<ExecutableDocument>>,
}

#[async_graphql::async_trait::async_trait]
impl Extension for QueryOrderOfRequest {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        *self.document.lock().unwrap_or_else(|e| e.into_inner()) = Some(document.clone());
        Ok(document)
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        let mut response = next.run(ctx, operation_name).await;
        let document = self
            .document
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(doc) = document {
            let operation = match (&doc.operations, operation_name) {
                (DocumentOperations::Single(op), _) => Some(op),
                (DocumentOperations::Multiple(ops), Some(name)) => ops.get(name),
                (DocumentOperations::Multiple(ops), None) => ops.values().next(),
            };
            if let Some(op) = operation {
                let data = std::mem::take(&mut response.data);
                response.data = ordered(data, &op.node.selection_set.node, &doc);
            }
        }
        response
    }
}

/// `value` with every object's keys in the order `set` selects them.
fn ordered(value: Value, set: &SelectionSet, doc: &ExecutableDocument) -> Value {
    match value {
        Value::Object(mut fields) => {
            let mut out = IndexMap::with_capacity(fields.len());
            take_in_order(set, doc, &mut fields, &mut out);
            // Anything not matched (cannot happen for a valid query) keeps its place at the end.
            out.extend(fields);
            Value::Object(out)
        }
        Value::List(items) => {
            Value::List(items.into_iter().map(|v| ordered(v, set, doc)).collect())
        }
        other => other,
    }
}

fn take_in_order(
    set: &SelectionSet,
    doc: &ExecutableDocument,
    fields: &mut IndexMap<Name, Value>,
    out: &mut IndexMap<Name, Value>,
) {
    for item in &set.items {
        match &item.node {
            Selection::Field(field) => {
                let key = &field.node.response_key().node;
                if let Some(value) = fields.shift_remove(key) {
                    let value = ordered(value, &field.node.selection_set.node, doc);
                    out.insert(key.clone(), value);
                }
            }
            Selection::FragmentSpread(spread) => {
                if let Some(fragment) = doc.fragments.get(&spread.node.fragment_name.node) {
                    take_in_order(&fragment.node.selection_set.node, doc, fields, out);
                }
            }
            Selection::InlineFragment(inline) => {
                take_in_order(&inline.node.selection_set.node, doc, fields, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_graphql::parser::parse_query;
    use async_graphql::value;

    #[test]
    fn objects_follow_the_selection_order_through_lists_aliases_and_fragments() {
        let doc = parse_query(
            "{ calls { total: totalCount nodes { ...F status } } } fragment F on Call { id ... on Call { stale } }",
        )
        .unwrap();
        let DocumentOperations::Single(op) = &doc.operations else {
            unreachable!()
        };
        let data =
            value!({"calls": {"nodes": [{"status": "S", "stale": false, "id": "a"}], "total": 1}});
        let out = ordered(data, &op.node.selection_set.node, &doc);
        assert_eq!(
            serde_json::to_string(&out).unwrap(),
            r#"{"calls":{"total":1,"nodes":[{"id":"a","stale":false,"status":"S"}]}}"#
        );
    }
}
