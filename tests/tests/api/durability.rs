//! A 2xx means committed: SIGKILL right after a burst of acknowledged
//! deliveries loses none of them.

use crate::process::start_server;
use calltrail_tests::{Answer, fresh_database, on_each_backend};
use entity::webhook_event;
use futures_util::{StreamExt, stream};
use sea_orm::{Database, EntityTrait, QuerySelect};

fn delivery(call: usize, step: usize) -> Vec<u8> {
    // No call.initiate: deliveries of a call race each other here, and only an
    // initiate could open a second attempt (changing what a resend dedupes against).
    let kind = [
        "call.in-progress",
        "action",
        "call.ended",
        "call.completed",
        "end-of-call",
        "action",
        "call.lifecycle-ended",
        "action",
        "action",
        "action",
    ][step];
    format!(r#"{{"metadata":{{"n":{step}}},"event":{{"type":"{kind}","data":{{"action":"create_order","payload":{{"step":{step}}},"call":{{"id":"c_kill-{call}"}}}}}}}}"#).into_bytes()
}

#[tokio::test]
async fn sigkill_during_a_burst_loses_no_acknowledged_delivery() {
    on_each_backend(|backend| async move {
        let database_url = fresh_database(backend).await;
        let (mut server, base) = start_server(&database_url).await;
        let client = reqwest::Client::new();
        let endpoint = format!("{base}/webhooks/call-events");
        let bodies: Vec<Vec<u8>> = (0..60)
            .flat_map(|call| (0..10).map(move |step| delivery(call, step)))
            .collect();

        // 600 deliveries, 32 in flight; SIGKILL as soon as 200 are acknowledged,
        // while the rest are still being sent.
        let mut in_flight = stream::iter(bodies.iter().cloned().map(|body| {
            let request = client
                .post(&endpoint)
                .header("content-type", "application/json")
                .body(body.clone());
            async move { (body, request.send().await) }
        }))
        .buffer_unordered(32);
        let mut acknowledged: Vec<(Vec<u8>, i64)> = Vec::new();
        while let Some((body, sent)) = in_flight.next().await {
            if let Ok(response) = sent {
                let answer = Answer::from(response).await;
                if answer.status == 200 {
                    acknowledged.push((body, answer.event_id().parse().unwrap()));
                }
            }
            if acknowledged.len() == 200 {
                server.start_kill().expect("SIGKILL");
                break;
            }
        }
        server.wait().await.expect("killed");
        drop(in_flight);
        assert_eq!(acknowledged.len(), 200, "{backend:?}");

        let (mut restarted, base) = start_server(&database_url).await;
        let db = Database::connect(&database_url).await.unwrap();
        let stored: Vec<i64> = webhook_event::Entity::find()
            .select_only()
            .column(webhook_event::Column::Id)
            .into_tuple()
            .all(&db)
            .await
            .unwrap();
        for (_, id) in &acknowledged {
            assert!(
                stored.contains(id),
                "{backend:?}: acknowledged event {id} survived the kill"
            );
        }
        // The restarted server knows them: a resend is a duplicate of the same event.
        for (body, id) in acknowledged.iter().step_by(20) {
            let again = Answer::from(
                client
                    .post(format!("{base}/webhooks/call-events"))
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            assert_eq!(
                (again.body["duplicate"].as_bool(), again.event_id()),
                (Some(true), id.to_string()),
                "{backend:?}"
            );
        }
        restarted.start_kill().ok();
    })
    .await;
}
