//! Live subscriptions over real WebSockets: what a dashboard and an action
//! worker see, on SQLite and PostgreSQL, in one process and across two.

mod client;
mod processes;
mod v2;

use calltrail_tests::{TestApp, fixture_lines, on_each_backend, sample};
use client::{Client, LEGACY_WS, Received, TRANSPORT_WS, cursor_now};
use serde_json::{Value, json};

const CALL_EVENTS: &str = "subscription($callId: ID, $types: [String!], $after: String) {
  callEvents(callId: $callId, types: $types, after: $after) {
    event { id cursor type callId }
    call { id status attemptCount lifecycleEnded actions { kind } }
  }
}";

const CALL_EVENTS_LEAN: &str = "subscription($after: String) {
  callEvents(after: $after) { event { id cursor } }
}";

/// A delivery of call `call` of type `kind`, unique by `n`.
pub fn delivery(call: &str, kind: &str, n: usize) -> Vec<u8> {
    format!(r#"{{"metadata":{{"n":{n}}},"event":{{"type":"{kind}","data":{{"action":"create_order","call":{{"id":"{call}"}}}}}}}}"#)
        .into_bytes()
}

#[tokio::test]
async fn a_dashboard_sees_every_delivery_of_a_call_in_order_with_the_call_as_of_each() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn(backend).await;
        let mut dashboard = Client::connect(&app.address, None).await;
        let from = cursor_now(&app.address, None).await;
        dashboard
            .subscribe("1", CALL_EVENTS, json!({"after": from}))
            .await;
        let lines = fixture_lines("v1/happy-path.jsonl");
        let mut ids = Vec::new();
        for line in &lines {
            ids.push(app.post_webhook(line.clone()).await.event_id());
        }

        let mut seen = Vec::new();
        for _ in &lines {
            let m = dashboard.next_call_event().await;
            seen.push((
                m["event"]["id"].as_str().unwrap().to_owned(),
                m["event"]["type"].as_str().unwrap().to_owned(),
                m["call"]["status"].as_str().unwrap().to_owned(),
                m["call"]["lifecycleEnded"].as_bool().unwrap(),
            ));
        }
        let expected: Vec<_> = [
            ("call.initiate", "INITIATE", false),
            ("call.in-progress", "IN_PROGRESS", false),
            ("action", "IN_PROGRESS", false),
            ("call.ended", "ENDED", false),
            ("call.completed", "COMPLETED", false),
            ("end-of-call", "COMPLETED", false),
            ("call.lifecycle-ended", "COMPLETED", true),
        ]
        .into_iter()
        .zip(&ids)
        .map(|((t, s, l), id)| (id.clone(), t.to_owned(), s.to_owned(), l))
        .collect();
        assert_eq!(seen, expected, "{backend:?}");
    })
    .await;
}

#[tokio::test]
async fn filters_by_call_and_type_leave_only_what_was_asked_for() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn(backend).await;
        let mut watcher = Client::connect(&app.address, None).await;
        let types = json!(["call.completed", "call.ended"]);
        let from = cursor_now(&app.address, None).await;
        watcher
            .subscribe(
                "1",
                CALL_EVENTS,
                json!({"callId": "c_a", "types": types, "after": from}),
            )
            .await;
        let mut wanted = Vec::new();
        for (n, kind) in ["call.in-progress", "call.ended", "call.completed"]
            .iter()
            .enumerate()
        {
            for call in ["c_a", "c_b"] {
                let id = app.post_webhook(delivery(call, kind, n)).await.event_id();
                if call == "c_a" && *kind != "call.in-progress" {
                    wanted.push(id);
                }
            }
        }
        // A last matching delivery marks the end: everything before it that
        // matched has arrived by then, in order.
        wanted.push(
            app.post_webhook(delivery("c_a", "call.ended", 9))
                .await
                .event_id(),
        );
        let mut got = Vec::new();
        for _ in &wanted {
            let m = watcher.next_call_event().await;
            assert_eq!(m["event"]["callId"], "c_a", "{backend:?}");
            got.push(m["event"]["id"].as_str().unwrap().to_owned());
        }
        assert_eq!(got, wanted, "{backend:?}");
    })
    .await;
}

#[tokio::test]
async fn duplicates_and_refused_deliveries_send_nothing() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn(backend).await;
        let mut dashboard = Client::connect(&app.address, None).await;
        let from = cursor_now(&app.address, None).await;
        dashboard
            .subscribe("1", CALL_EVENTS_LEAN, json!({"after": from}))
            .await;
        let first = app
            .post_webhook(delivery("c_d", "call.in-progress", 1))
            .await
            .event_id();
        let again = app
            .post_webhook(delivery("c_d", "call.in-progress", 1))
            .await;
        assert_eq!(again.body["duplicate"], true);
        assert_eq!(app.post_webhook(&b"{not json"[..]).await.status, 400);
        let last = app
            .post_webhook(delivery("c_d", "call.ended", 2))
            .await
            .event_id();

        let a = dashboard.next_call_event().await;
        let b = dashboard.next_call_event().await;
        assert_eq!(
            (
                a["event"]["id"].as_str().unwrap(),
                b["event"]["id"].as_str().unwrap()
            ),
            (first.as_str(), last.as_str()),
            "{backend:?}: the duplicate and the refused delivery sent nothing in between"
        );
    })
    .await;
}

/// An `action` delivery asking for `kind` on call `call`.
fn action(call: &str, kind: &str) -> Vec<u8> {
    format!(
        r#"{{"event":{{"type":"action","data":{{"action":"{kind}","call":{{"id":"{call}"}}}}}}}}"#
    )
    .into_bytes()
}

/// The cursor of the newest action, as `actions` gives it.
async fn newest_action_cursor(app: &TestApp) -> String {
    let answer = app
        .graphql(
            "{ actions(first: 100) { nodes { cursor } edges { cursor } } }",
            json!({}),
        )
        .await;
    let actions = &answer.body["data"]["actions"];
    let nodes = actions["nodes"].as_array().expect("a page of actions");
    let cursor = nodes.last().expect("an action")["cursor"].clone();
    assert_eq!(
        actions["edges"][nodes.len() - 1]["cursor"],
        cursor,
        "Action.cursor is its edge's"
    );
    cursor.as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_worker_gets_each_new_action_of_the_kinds_it_handles() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn(backend).await;
        app.post_webhook(action("c_start", "create_order")).await.event_id();
        let from = newest_action_cursor(&app).await;
        let mut worker = Client::connect(&app.address, None).await;
        worker
            .subscribe(
                "1",
                "subscription($after: String) { actionCreated(kinds: [\"create_order\"], after: $after) { kind status callId call { id } } }",
                json!({"after": from}),
            )
            .await;
        app.post_webhook(action("c_w", "send_whatsapp")).await.event_id();
        app.post_webhook(delivery("c_w", "action", 1)).await.event_id();

        let m = worker.next_payload().await;
        assert_eq!(
            m["data"]["actionCreated"],
            json!({"kind": "create_order", "status": "PENDING", "callId": "c_w", "call": {"id": "c_w"}}),
            "{backend:?}"
        );
    })
    .await;
}

/// A worker that was away resumes after the last action it handled: the
/// actions created meanwhile come first, each once and in order, then the
/// new ones live; a kinds filter applies to both.
#[tokio::test]
async fn a_worker_resuming_after_its_last_action_misses_none_and_repeats_none() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn(backend).await;
        app.post_webhook(action("c_1", "create_order"))
            .await
            .event_id();
        let handled = newest_action_cursor(&app).await;
        // While no worker listens (and a delivery that is not an action).
        app.post_webhook(action("c_2", "send_whatsapp"))
            .await
            .event_id();
        app.post_webhook(delivery("c_2", "call.initiate", 0))
            .await
            .event_id();
        app.post_webhook(action("c_3", "create_order"))
            .await
            .event_id();

        const RESUME: &str = "subscription($after: String, $kinds: [String!]) {
          actionCreated(after: $after, kinds: $kinds) { callId kind cursor }
        }";
        let mut all = Client::connect(&app.address, None).await;
        all.subscribe("1", RESUME, json!({"after": handled})).await;
        let mut orders = Client::connect(&app.address, None).await;
        orders
            .subscribe(
                "1",
                RESUME,
                json!({"after": handled, "kinds": ["create_order"]}),
            )
            .await;
        let next = |m: Value| {
            let a = &m["data"]["actionCreated"];
            (
                a["callId"].as_str().unwrap().to_owned(),
                a["kind"].as_str().unwrap().to_owned(),
            )
        };
        let pair = |call: &str, kind: &str| (call.to_owned(), kind.to_owned());
        assert_eq!(
            next(all.next_payload().await),
            pair("c_2", "send_whatsapp"),
            "{backend:?}"
        );
        assert_eq!(
            next(all.next_payload().await),
            pair("c_3", "create_order"),
            "{backend:?}"
        );
        assert_eq!(
            next(orders.next_payload().await),
            pair("c_3", "create_order"),
            "{backend:?}"
        );

        // Live, after the replay.
        app.post_webhook(action("c_4", "mark_prepaid"))
            .await
            .event_id();
        app.post_webhook(action("c_5", "create_order"))
            .await
            .event_id();
        assert_eq!(
            next(all.next_payload().await),
            pair("c_4", "mark_prepaid"),
            "{backend:?}"
        );
        let last = all.next_payload().await;
        assert_eq!(
            next(last.clone()),
            pair("c_5", "create_order"),
            "{backend:?}"
        );
        assert_eq!(
            next(orders.next_payload().await),
            pair("c_5", "create_order"),
            "{backend:?}"
        );
        assert_eq!(
            last["data"]["actionCreated"]["cursor"].as_str().unwrap(),
            newest_action_cursor(&app).await
        );
        for client in [&mut all, &mut orders] {
            assert!(
                client
                    .receive_within(std::time::Duration::from_millis(300))
                    .await
                    .is_none(),
                "{backend:?}: nothing repeated"
            );
        }

        // A cursor of something else is refused by name.
        let events_cursor = cursor_now(&app.address, None).await;
        let mut wrong = Client::connect(&app.address, None).await;
        wrong
            .subscribe(
                "1",
                "subscription($after: String) { actionCreated(after: $after) { id } }",
                json!({"after": events_cursor}),
            )
            .await;
        let refused = format!("{:?}", wrong.receive().await);
        assert!(refused.contains("invalid cursor"), "{backend:?}: {refused}");

        // So is one past the newest action (from another database): the
        // actions to come here would be taken for already seen.
        use base64::Engine;
        let elsewhere = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"of":"action","id":999999}"#);
        let mut stranger = Client::connect(&app.address, None).await;
        stranger
            .subscribe(
                "1",
                "subscription($after: String) { actionCreated(after: $after) { id } }",
                json!({"after": elsewhere}),
            )
            .await;
        let refused = format!("{:?}", stranger.receive().await);
        assert!(
            refused.contains("no action 999999"),
            "{backend:?}: {refused}"
        );
    })
    .await;
}

#[tokio::test]
async fn with_a_token_connection_init_must_carry_it() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn_with(backend, |c| {
            c.api_token = Some(calltrail::config::Secret("s3cret".into()));
        })
        .await;
        // graphql-transport-ws: 4403 Forbidden.
        for token in [None, Some("wrong")] {
            let mut client = Client::open(&app.address, TRANSPORT_WS, None).await;
            client
                .send(json!({"type": "connection_init", "payload": token.map(|t| json!({"Authorization": format!("Bearer {t}")}))}))
                .await;
            match client.receive().await {
                Received::Close(Some(4403), reason) => assert!(reason.contains("Forbidden")),
                other => panic!("{backend:?}: expected close 4403, got {other:?}"),
            }
        }
        // graphql-transport-ws: subscribing before connection_init is 4401 Unauthorized.
        let mut early = Client::open(&app.address, TRANSPORT_WS, None).await;
        early.subscribe("1", CALL_EVENTS_LEAN, json!({})).await;
        match early.receive().await {
            Received::Close(Some(4401), _) => {}
            other => panic!("{backend:?}: expected close 4401, got {other:?}"),
        }
        // graphql-ws (legacy): connection_error, then the socket closes.
        let mut legacy = Client::open(&app.address, LEGACY_WS, None).await;
        assert_eq!(legacy.init(None).await["type"], "connection_error");
        assert!(matches!(legacy.receive().await, Received::Close(..) | Received::Ended));

        // With the token: acknowledged, and the subscription works (both protocols).
        for (n, protocol) in [TRANSPORT_WS, LEGACY_WS].into_iter().enumerate() {
            let mut client = Client::open(&app.address, protocol, None).await;
            assert_eq!(client.init(Some("s3cret")).await["type"], "connection_ack");
            let from = cursor_now(&app.address, Some("s3cret")).await;
            client.subscribe("1", CALL_EVENTS_LEAN, json!({"after": from})).await;
            let id = app.post_webhook(delivery("c_t", "call.ended", n)).await.event_id();
            assert_eq!(client.next_call_event().await["event"]["id"], id.as_str());
        }
    })
    .await;
}

#[tokio::test]
async fn resuming_after_a_cursor_misses_nothing_and_repeats_nothing() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn(backend).await;
        let mut dashboard = Client::connect(&app.address, None).await;
        let from = cursor_now(&app.address, None).await;
        dashboard
            .subscribe("1", CALL_EVENTS_LEAN, json!({"after": from}))
            .await;
        let mut posted = Vec::new();
        for n in 0..5 {
            posted.push(
                app.post_webhook(delivery(&format!("c_r{}", n % 3), "call.in-progress", n))
                    .await
                    .event_id(),
            );
        }
        let mut received = Vec::new();
        let mut cursor = String::new();
        for _ in 0..5 {
            let m = dashboard.next_call_event().await;
            received.push(m["event"]["id"].as_str().unwrap().to_owned());
            cursor = m["event"]["cursor"].as_str().unwrap().to_owned();
        }
        dashboard.close().await;

        // A burst while disconnected, and more still arriving during the replay.
        for n in 5..45 {
            posted.push(
                app.post_webhook(delivery(&format!("c_r{}", n % 7), "call.ended", n))
                    .await
                    .event_id(),
            );
        }
        let late = {
            let app_address = app.address.clone();
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut ids = Vec::new();
                for n in 45..85 {
                    let answer = calltrail_tests::Answer::from(
                        client
                            .post(format!("{app_address}/webhooks/call-events"))
                            .header("content-type", "application/json")
                            .body(delivery(&format!("c_r{}", n % 5), "call.completed", n))
                            .send()
                            .await
                            .unwrap(),
                    )
                    .await;
                    ids.push(answer.event_id());
                }
                ids
            })
        };
        let mut again = Client::connect(&app.address, None).await;
        again
            .subscribe("2", CALL_EVENTS_LEAN, json!({"after": cursor}))
            .await;
        let mut last_cursor = cursor;
        for _ in 5..85 {
            let m = again.next_call_event().await;
            let c = m["event"]["cursor"].as_str().unwrap().to_owned();
            assert_ne!(c, last_cursor, "{backend:?}: no repeat");
            last_cursor = c;
            received.push(m["event"]["id"].as_str().unwrap().to_owned());
        }
        posted.extend(late.await.unwrap());
        assert_eq!(
            received, posted,
            "{backend:?}: every event once, in commit order"
        );
    })
    .await;
}

#[tokio::test]
async fn a_stalled_subscriber_is_dropped_with_its_resume_cursor_while_another_keeps_receiving() {
    on_each_backend(|backend| async move {
        // Small enough that the stalled reader overflows it, large enough that a
        // burst of commits read at once does not overflow the healthy one.
        let app = TestApp::spawn_with(backend, |c| c.subscription_buffer = 32).await;
        let mut stalled = Client::open(&app.address, TRANSPORT_WS, Some(4096)).await;
        assert_eq!(stalled.init(None).await["type"], "connection_ack");
        let from = cursor_now(&app.address, None).await;
        stalled
            .subscribe(
                "1",
                "subscription($after: String) { callEvents(after: $after) { event { id cursor payload } } }",
                json!({"after": from}),
            )
            .await;
        let mut healthy = Client::connect(&app.address, None).await;
        healthy.subscribe("1", CALL_EVENTS_LEAN, json!({"after": from})).await;

        // Both feeds live before the stall: the first delivery received ends
        // the stalled feed's replay (a short page), so the second reaches it
        // live. A lag during a replay only replays again (bus/feed.rs); were
        // the burst to start while its replay still ran, the stalled client
        // would be sent everything from the log and never dropped.
        for n in 0..2 {
            let body = format!(
                r#"{{"event":{{"type":"call.ended","data":{{"call":{{"id":"c_w{n}"}}}}}}}}"#
            );
            let id = app.post_webhook(body).await.event_id();
            let m = stalled.next_payload().await;
            assert_eq!(m["data"]["callEvents"]["event"]["id"], id.as_str(), "{backend:?}");
            assert_eq!(healthy.next_call_event().await["event"]["id"], id.as_str(), "{backend:?}");
        }

        // Big deliveries, so that the stalled reader's socket buffers fill.
        let padding = "x".repeat(256 * 1024);
        let mut posted = Vec::new();
        for n in 0..80 {
            let body = format!(r#"{{"metadata":{{"pad":"{padding}"}},"event":{{"type":"call.ended","data":{{"call":{{"id":"c_s{n}"}}}}}}}}"#);
            let answer = app.post_webhook(body).await;
            posted.push(answer.event_id());
        }
        for id in &posted {
            assert_eq!(healthy.next_call_event().await["event"]["id"], id.as_str(), "{backend:?}");
        }

        // The stalled client reads again: what was already sent, then the error.
        let mut delivered = Vec::new();
        let (resume_after, last_cursor) = loop {
            let payload = stalled.next_payload().await;
            if let Some(errors) = payload.get("errors") {
                let ext = &errors[0]["extensions"];
                assert_eq!(ext["code"], "SUBSCRIPTION_TOO_SLOW", "{payload}");
                assert!(errors[0]["message"].as_str().unwrap().contains(ext["resumeAfter"].as_str().unwrap()));
                break (ext["resumeAfter"].as_str().unwrap().to_owned(), delivered.last().cloned());
            }
            let e = &payload["data"]["callEvents"]["event"];
            delivered.push(e["cursor"].as_str().unwrap().to_owned());
        };
        assert!(delivered.len() < posted.len(), "{backend:?}: it was dropped before the end");
        assert_eq!(Some(resume_after.clone()), last_cursor, "{backend:?}: resume after the last one it got");
        match stalled.receive().await {
            Received::Json(v) => assert_eq!(v["type"], "complete", "{v}"),
            other => panic!("expected complete, got {other:?}"),
        }
        // Resuming from the cursor brings exactly the rest.
        let mut resumed = Client::connect(&app.address, None).await;
        resumed.subscribe("2", CALL_EVENTS_LEAN, json!({"after": resume_after})).await;
        for id in &posted[delivered.len()..] {
            assert_eq!(resumed.next_call_event().await["event"]["id"], id.as_str(), "{backend:?}");
        }
    })
    .await;
}

/// The server's count of live subscriptions, once it equals `want` (None:
/// it did not within `wait`).
async fn subscriptions_become(app: &TestApp, want: f64, wait: std::time::Duration) -> Option<f64> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let now = sample(&app.metrics().await, "calltrail_subscriptions_active", &[]);
        if now == Some(want) || tokio::time::Instant::now() > deadline {
            return now.filter(|n| *n == want);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_client_that_stops_reading_loses_its_socket_after_the_write_timeout() {
    let app = TestApp::spawn_with(calltrail_tests::Backend::Sqlite, |c| {
        c.ws_write_timeout = std::time::Duration::from_secs(1);
    })
    .await;
    let mut stalled = Client::open(&app.address, TRANSPORT_WS, Some(4096)).await;
    assert_eq!(stalled.init(None).await["type"], "connection_ack");
    stalled
        .subscribe(
            "1",
            "subscription { callEvents { event { id payload } } }",
            json!({}),
        )
        .await;
    let wait = std::time::Duration::from_secs(15);
    assert_eq!(
        subscriptions_become(&app, 1.0, wait).await,
        Some(1.0),
        "subscribed"
    );

    // Big deliveries the client never reads: the server's writes to it stall.
    let padding = "x".repeat(256 * 1024);
    for n in 0..40 {
        let body = format!(
            r#"{{"metadata":{{"pad":"{padding}"}},"event":{{"type":"call.ended","data":{{"call":{{"id":"c_t{n}"}}}}}}}}"#
        );
        assert_eq!(app.post_webhook(body).await.status, 200);
    }
    assert_eq!(
        subscriptions_become(&app, 0.0, wait).await,
        Some(0.0),
        "the stalled socket is closed, and its subscription with it"
    );
    // What the client reads now ends with the connection, not more events.
    let mut read = 0;
    loop {
        match stalled
            .receive_within(std::time::Duration::from_secs(5))
            .await
        {
            Some(Received::Json(_)) => read += 1,
            Some(Received::Ended | Received::Close(..)) => break,
            None => panic!("the socket is still open after {read} messages"),
        }
    }
    assert!(read < 40, "closed before all 40 were sent: {read}");
}

/// The `data.callEvents.event.id`s of `n` messages.
pub async fn event_ids(client: &mut Client, n: usize) -> Vec<Value> {
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(client.next_call_event().await["event"]["id"].clone());
    }
    ids
}

#[tokio::test]
async fn subscriptions_of_one_document_share_each_message_and_each_gets_it() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn(backend).await;
        let from = cursor_now(&app.address, None).await;
        // Five subscriptions of one document on two sockets.
        let mut first = Client::connect(&app.address, None).await;
        let mut second = Client::connect(&app.address, None).await;
        for id in ["a", "b", "c"] {
            first
                .subscribe(id, CALL_EVENTS, json!({"after": from}))
                .await;
        }
        for id in ["d", "e"] {
            second
                .subscribe(id, CALL_EVENTS, json!({"after": from}))
                .await;
        }
        // Another document: its messages are its own.
        let mut lean = Client::connect(&app.address, None).await;
        lean.subscribe("f", CALL_EVENTS_LEAN, json!({"after": from}))
            .await;
        // All six hold their share before the first delivery renders: one
        // that joined later would render that message again.
        assert_eq!(
            subscriptions_become(&app, 6.0, std::time::Duration::from_secs(30)).await,
            Some(6.0),
            "{backend:?}: six subscriptions"
        );

        let mut posted = Vec::new();
        for (n, kind) in ["call.initiate", "call.in-progress", "call.ended"]
            .into_iter()
            .enumerate()
        {
            posted.push(
                app.post_webhook(delivery("c_share", kind, n))
                    .await
                    .event_id(),
            );
        }
        let mut seen: Vec<(String, String, Value)> = Vec::new();
        for client in [&mut first, &mut second] {
            let subscriptions = if seen.is_empty() { 3 } else { 2 };
            for _ in 0..subscriptions * posted.len() {
                match client.receive().await {
                    Received::Json(m) if m["type"] == "next" => seen.push((
                        m["id"].as_str().unwrap().to_owned(),
                        m["payload"]["data"]["callEvents"]["event"]["id"]
                            .as_str()
                            .unwrap()
                            .to_owned(),
                        m["payload"].clone(),
                    )),
                    other => panic!("{backend:?}: expected a message, got {other:?}"),
                }
            }
        }
        for sub in ["a", "b", "c", "d", "e"] {
            let got: Vec<&str> = seen
                .iter()
                .filter(|s| s.0 == sub)
                .map(|s| s.1.as_str())
                .collect();
            assert_eq!(
                got,
                posted.iter().map(String::as_str).collect::<Vec<_>>(),
                "{backend:?}: subscription {sub}"
            );
        }
        for (_, event, payload) in &seen {
            let first_seen = &seen.iter().find(|s| &s.1 == event).unwrap().2;
            assert_eq!(
                payload, first_seen,
                "{backend:?}: every subscriber gets the same message"
            );
            assert_eq!(payload["data"]["callEvents"]["call"]["id"], "c_share");
        }
        assert_eq!(
            event_ids(&mut lean, posted.len()).await,
            posted.iter().map(|p| json!(p)).collect::<Vec<_>>()
        );

        let text = app.metrics().await;
        assert_eq!(
            sample(&text, "calltrail_subscription_messages_sent_total", &[]),
            Some(18.0),
            "{backend:?}: 6 subscriptions × 3 deliveries\n{text}"
        );
        assert_eq!(
            sample(&text, "calltrail_subscription_messages_rendered_total", &[]),
            Some(6.0),
            "{backend:?}: one rendering per delivery and document\n{text}"
        );
    })
    .await;
}

#[tokio::test]
async fn protocol_violations_close_the_socket_with_the_protocol_s_codes() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn(backend).await;
        // A second subscription with a running id: 4409.
        let mut twice = Client::connect(&app.address, None).await;
        twice.subscribe("1", CALL_EVENTS_LEAN, json!({})).await;
        twice.subscribe("1", CALL_EVENTS_LEAN, json!({})).await;
        match twice.receive().await {
            Received::Close(Some(4409), reason) => assert!(reason.contains("1"), "{reason}"),
            other => panic!("{backend:?}: expected close 4409, got {other:?}"),
        }
        // Not a protocol message: 4400.
        let mut garbage = Client::connect(&app.address, None).await;
        garbage.send(json!({"type": "launch"})).await;
        match garbage.receive().await {
            Received::Close(Some(4400), _) => {}
            other => panic!("{backend:?}: expected close 4400, got {other:?}"),
        }
        // connection_init twice: 4429.
        let mut again = Client::connect(&app.address, None).await;
        again.send(json!({"type": "connection_init"})).await;
        match again.receive().await {
            Received::Close(Some(4429), _) => {}
            other => panic!("{backend:?}: expected close 4429, got {other:?}"),
        }
        // No connection_init within 3 s: 4408.
        let started = std::time::Instant::now();
        let mut silent = Client::open(&app.address, TRANSPORT_WS, None).await;
        match silent.receive().await {
            Received::Close(Some(4408), _) => {}
            other => panic!("{backend:?}: expected close 4408, got {other:?}"),
        }
        assert!(started.elapsed() >= std::time::Duration::from_secs(3));
        // The legacy protocol has the same deadline: a socket that never
        // authenticates does not stay open.
        let mut legacy = Client::open(&app.address, LEGACY_WS, None).await;
        match legacy.receive().await {
            Received::Close(Some(4408), _) => {}
            other => panic!("{backend:?}: expected close 4408 (graphql-ws), got {other:?}"),
        }
        // A message over 256 KiB, even before connection_init, ends the socket.
        let mut huge = Client::open(&app.address, TRANSPORT_WS, None).await;
        let padding = "x".repeat(300 * 1024);
        huge.send(json!({"type": "connection_init", "payload": {"pad": padding}}))
            .await;
        match huge.receive().await {
            Received::Close(_, _) | Received::Ended => {}
            other => panic!("{backend:?}: expected the socket to end, got {other:?}"),
        }
        // A ping is answered with a pong; a query over the socket answers once and completes.
        let mut client = Client::connect(&app.address, None).await;
        client.send(json!({"type": "ping"})).await;
        match client.receive().await {
            Received::Json(m) => assert_eq!(m["type"], "pong", "{m}"),
            other => panic!("{backend:?}: expected pong, got {other:?}"),
        }
        client
            .subscribe("q", "{ callStats { total } }", json!({}))
            .await;
        let payload = client.next_payload().await;
        assert!(
            payload["data"]["callStats"]["total"].is_number(),
            "{payload}"
        );
        match client.receive().await {
            Received::Json(m) => assert_eq!(
                (m["type"].as_str(), m["id"].as_str()),
                (Some("complete"), Some("q"))
            ),
            other => panic!("{backend:?}: expected complete, got {other:?}"),
        }
    })
    .await;
}

/// Fields of the call that depend on its earlier deliveries.
const AS_OF: &str = "subscription($after: String) {
  callEvents(after: $after) {
    event { id type }
    call { id status createdAt updatedAt attemptCount reAttemptCount lifecycleEnded metadata }
  }
}";

#[tokio::test]
async fn live_messages_equal_the_replay_of_the_same_deliveries() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn(backend).await;
        let from = cursor_now(&app.address, None).await;
        // Part of each call committed before anyone listens: the live reader
        // meets these calls halfway through their lifecycles.
        let happy = fixture_lines("v1/happy-path.jsonl");
        let retries = fixture_lines("v1/retry-no-answer-busy.jsonl");
        for line in happy[..3].iter().chain(&retries[..2]) {
            app.post_webhook(line.clone()).await;
        }
        let now = cursor_now(&app.address, None).await;
        let mut live = Client::connect(&app.address, None).await;
        live.subscribe("1", AS_OF, json!({"after": now})).await;
        // Once this one arrived the replay is over: the rest arrives live.
        let sentinel = app
            .post_webhook(delivery("c_sentinel", "call.initiate", 0))
            .await
            .event_id();
        assert_eq!(
            live.next_call_event().await["event"]["id"],
            sentinel.as_str()
        );
        let rest: Vec<_> = happy[3..].iter().chain(&retries[2..]).cloned().collect();
        for line in &rest {
            app.post_webhook(line.clone()).await;
        }
        let mut live_messages = Vec::new();
        for _ in &rest {
            live_messages.push(live.next_call_event().await);
        }
        // The same deliveries replayed from the log, on another socket, with
        // another document (the same one would share the live renderings).
        let mut replay = Client::connect(&app.address, None).await;
        let replay_document = AS_OF.replacen("subscription(", "subscription Replay(", 1);
        replay
            .subscribe("1", &replay_document, json!({"after": from}))
            .await;
        let mut replayed = Vec::new();
        // With the marker delivery of the second `cursor_now` and the sentinel.
        for _ in 0..happy.len() + retries.len() + 2 {
            replayed.push(replay.next_call_event().await);
        }
        let tail = &replayed[replayed.len() - rest.len()..];
        assert_eq!(
            live_messages, tail,
            "{backend:?}: live and replayed messages differ"
        );
        let statuses: Vec<&str> = live_messages
            .iter()
            .map(|m| m["call"]["status"].as_str().unwrap())
            .collect();
        assert!(statuses.contains(&"COMPLETED"), "{backend:?}: {statuses:?}");
    })
    .await;
}

/// The status of a WebSocket handshake to `/graphql/ws` sent with `origin`.
async fn handshake_status(base: &str, origin: Option<&str>) -> u16 {
    let origin: Vec<_> = origin.map(|o| ("origin", o)).into_iter().collect();
    handshake_with(base, &origin).await
}

/// The handshake's HTTP status, with these extra headers.
async fn handshake_with(base: &str, extra: &[(&'static str, &str)]) -> u16 {
    use tokio_tungstenite::tungstenite::Error;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::HeaderValue;
    let address = base.trim_start_matches("http://");
    let mut request = format!("ws://{address}/graphql/ws")
        .into_client_request()
        .expect("request");
    let headers = request.headers_mut();
    headers.insert(
        "sec-websocket-protocol",
        HeaderValue::from_static(TRANSPORT_WS),
    );
    for (name, value) in extra {
        headers.insert(*name, HeaderValue::from_str(value).expect("a header value"));
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((_, response)) => response.status().as_u16(),
        Err(Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("handshake failed: {other}"),
    }
}

#[tokio::test]
async fn pages_of_other_origins_cannot_open_a_socket_unless_allowed() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn(backend).await;
        // Not a browser (no Origin), and the dashboard's own origin: allowed.
        assert_eq!(
            handshake_status(&app.address, None).await,
            101,
            "{backend:?}"
        );
        assert_eq!(
            handshake_status(&app.address, Some(&app.address)).await,
            101,
            "{backend:?}"
        );
        // Any other page: refused before the upgrade.
        assert_eq!(
            handshake_status(&app.address, Some("https://evil.example")).await,
            403,
            "{backend:?}"
        );

        let allowed = TestApp::spawn_with(backend, |c| {
            c.cors_origins = vec!["https://app.example.com".into()];
        })
        .await;
        assert_eq!(
            handshake_status(&allowed.address, Some("https://app.example.com")).await,
            101
        );
        assert_eq!(
            handshake_status(&allowed.address, Some("https://evil.example")).await,
            403
        );
    })
    .await;
}

/// DNS rebinding: a page whose name resolves to the server's address, and
/// so passes the `Origin` check as the server's own origin, cannot open a
/// socket on a server without a token (`host.rs`); with a token it could
/// not start one anyway.
#[tokio::test]
async fn a_page_rebound_to_a_server_without_a_token_cannot_open_a_socket() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn_with(backend, |c| {
            c.allowed_hosts = vec!["calltrail.internal".into()];
        })
        .await;
        let port = app.address.rsplit(':').next().unwrap().to_owned();
        let rebound = format!("evil.example:{port}");
        let origin = format!("http://{rebound}");
        assert_eq!(
            handshake_with(&app.address, &[("host", &rebound), ("origin", &origin)]).await,
            403,
            "{backend:?}"
        );
        let listed = format!("calltrail.internal:{port}");
        let origin = format!("http://{listed}");
        assert_eq!(
            handshake_with(&app.address, &[("host", &listed), ("origin", &origin)]).await,
            101,
            "{backend:?}"
        );
        let local = format!("localhost:{port}");
        assert_eq!(handshake_with(&app.address, &[("host", &local)]).await, 101);
    })
    .await;
}

#[tokio::test]
async fn a_share_keeps_small_messages_for_later_subscribers_but_not_big_ones() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn(backend).await;
        const WITH_PAYLOAD: &str = "subscription($after: String) {
  callEvents(after: $after) { event { id payload } }
}";
        let from = cursor_now(&app.address, None).await;
        // Two subscribers of one document: its messages are worth keeping.
        let mut first = Client::connect(&app.address, None).await;
        first.subscribe("1", WITH_PAYLOAD, json!({"after": from})).await;
        first.subscribe("2", WITH_PAYLOAD, json!({"after": from})).await;
        // Both have started once both have this one.
        app.post_webhook(delivery("c_keep-sentinel", "call.initiate", 0)).await;
        for _ in 0..2 {
            first.next_call_event().await;
        }
        let small = app.post_webhook(delivery("c_keep", "call.initiate", 0)).await.event_id();
        let padding = "x".repeat(100 * 1024);
        let big = format!(r#"{{"metadata":{{"pad":"{padding}"}},"event":{{"type":"call.ended","data":{{"call":{{"id":"c_keep"}}}}}}}}"#);
        let big = app.post_webhook(big).await.event_id();
        for _ in 0..4 {
            first.next_call_event().await;
        }
        let rendered = |text: &str| sample(text, "calltrail_subscription_messages_rendered_total", &[]);
        let text = app.metrics().await;
        // The sentinel and the small one once each; the big one, kept for
        // nobody, twice unless the second subscriber asked while it rendered.
        let before = rendered(&text).expect("rendered");
        assert!((3.0..=4.0).contains(&before), "{backend:?}: {before} renderings");

        // A later subscriber of the same document replays both: the small
        // message comes from the share, the big one (over 64 KiB) is rendered again.
        let mut later = Client::connect(&app.address, None).await;
        later.subscribe("1", WITH_PAYLOAD, json!({"after": from})).await;
        let ids = event_ids(&mut later, 3).await;
        assert_eq!(ids[1..], [json!(small), json!(big)], "{backend:?}");
        let text = app.metrics().await;
        assert_eq!(rendered(&text), Some(before + 1.0), "{backend:?}: only the big one again");
    })
    .await;
}

/// A replayed message says what the live one said: the call's `stale` is
/// judged at the delivery's arrival ("the call as it was right after this
/// delivery"), not when the message is sent, however old the delivery.
#[tokio::test]
async fn a_replayed_message_of_an_old_delivery_shows_its_call_as_it_was_then() {
    use sea_orm::sea_query::Expr;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    on_each_backend(|backend| async move {
        let app = TestApp::spawn(backend).await;
        let from = cursor_now(&app.address, None).await;
        app.post_webhook(delivery("c_old", "call.in-progress", 1))
            .await
            .event_id();
        // It arrived two hours ago (the window is 40 minutes).
        let two_hours_ago = chrono::Utc::now() - chrono::Duration::hours(2);
        entity::webhook_event::Entity::update_many()
            .col_expr(
                entity::webhook_event::Column::ReceivedAt,
                Expr::value(two_hours_ago),
            )
            .filter(entity::webhook_event::Column::CallId.eq("c_old"))
            .exec(&app.db)
            .await
            .unwrap();
        let mut dashboard = Client::connect(&app.address, None).await;
        dashboard
            .subscribe(
                "1",
                "subscription($after: String) { callEvents(callId: \"c_old\", after: $after) { event { type } call { status stale } } }",
                json!({"after": from}),
            )
            .await;
        let m = dashboard.next_call_event().await;
        assert_eq!(
            m["call"],
            json!({"status": "IN_PROGRESS", "stale": false}),
            "{backend:?}: right after a delivery a call is not silent"
        );
    })
    .await;
}

/// `calltrail reprocess` remakes a lost action for an old delivery with the
/// largest id: a worker resuming after that action still gets the actions
/// of the deliveries after it (ids do not order them, positions do).
#[tokio::test]
async fn a_worker_resuming_after_an_action_reprocess_remade_gets_the_later_ones() {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    on_each_backend(|backend| async move {
        let app = TestApp::spawn(backend).await;
        for (call, kind) in [
            ("c_r1", "create_order"),
            ("c_r2", "send_whatsapp"),
            ("c_r3", "create_order"),
        ] {
            app.post_webhook(action(call, kind)).await.event_id();
        }
        entity::action::Entity::delete_many()
            .filter(entity::action::Column::CallId.eq("c_r1"))
            .exec(&app.db)
            .await
            .unwrap();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_calltrail-under-test"))
            .arg("reprocess")
            .env_clear()
            .env("DATABASE_URL", &app.database_url)
            .env("RUST_LOG", "warn")
            .output()
            .expect("runs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let remade = app
            .graphql(
                "{ actions(filter: {callId: \"c_r1\"}) { nodes { id cursor } } }",
                json!({}),
            )
            .await;
        let remade = &remade.body["data"]["actions"]["nodes"][0];
        assert_eq!(remade["id"], "4", "{backend:?}: remade with the largest id");

        let mut worker = Client::connect(&app.address, None).await;
        worker
            .subscribe(
                "1",
                "subscription($after: String) { actionCreated(after: $after) { callId } }",
                json!({"after": remade["cursor"]}),
            )
            .await;
        for call in ["c_r2", "c_r3"] {
            assert_eq!(
                worker.next_payload().await["data"]["actionCreated"]["callId"],
                call,
                "{backend:?}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn one_socket_runs_at_most_100_operations_at_once() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn(backend).await;
        let mut client = Client::connect(&app.address, None).await;
        for id in 1..=100 {
            client
                .subscribe(&id.to_string(), CALL_EVENTS_LEAN, json!({}))
                .await;
        }
        client.subscribe("101", CALL_EVENTS_LEAN, json!({})).await;
        match client.receive().await {
            Received::Json(m) => {
                assert_eq!(
                    (m["type"].as_str(), m["id"].as_str()),
                    (Some("error"), Some("101")),
                    "{m}"
                );
                assert_eq!(
                    m["payload"][0]["extensions"]["code"], "TOO_MANY_OPERATIONS",
                    "{m}"
                );
            }
            other => panic!("{backend:?}: expected an error for the 101st, got {other:?}"),
        }
        // Once one completes, another may start, and it receives deliveries.
        client.send(json!({"id": "1", "type": "complete"})).await;
        client.subscribe("101", CALL_EVENTS_LEAN, json!({})).await;
        let posted = app
            .post_webhook(delivery("c_cap", "call.initiate", 1))
            .await;
        assert_eq!(posted.status, 200);
        loop {
            match client.receive().await {
                Received::Json(m) if m["type"] == "error" => panic!("{backend:?}: {m}"),
                Received::Json(m) if m["id"] == "101" && m["type"] == "next" => {
                    assert_eq!(
                        m["payload"]["data"]["callEvents"]["event"]["id"],
                        posted.event_id(),
                        "{m}"
                    );
                    break;
                }
                Received::Json(_) => {}
                other => panic!("{backend:?}: {other:?}"),
            }
        }
    })
    .await;
}

#[tokio::test]
async fn the_subprotocol_announced_is_the_one_spoken() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::HeaderValue;
    on_each_backend(|backend| async move {
        let app = TestApp::spawn(backend).await;
        let address = app.address.trim_start_matches("http://");
        let mut request = format!("ws://{address}/graphql/ws")
            .into_client_request()
            .unwrap();
        // The legacy protocol first: the client prefers it.
        request.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_static("graphql-ws, graphql-transport-ws"),
        );
        let (mut ws, response) = tokio_tungstenite::connect_async(request).await.unwrap();
        assert_eq!(
            response.headers()["sec-websocket-protocol"],
            LEGACY_WS,
            "{backend:?}"
        );
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        ws.send(Message::text(r#"{"type":"connection_init"}"#))
            .await
            .unwrap();
        ws.send(Message::text(
            r#"{"id":"q","type":"start","payload":{"query":"{ callStats { total } }"}}"#,
        ))
        .await
        .unwrap();
        let mut types = Vec::new();
        while types.len() < 3 {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    let m: Value = serde_json::from_str(&text).unwrap();
                    if m["type"] != "ka" {
                        types.push(m["type"].as_str().unwrap().to_owned());
                    }
                }
                other => panic!("{backend:?}: {other:?}"),
            }
        }
        assert_eq!(
            types,
            ["connection_ack", "data", "complete"],
            "{backend:?}: graphql-ws messages"
        );
    })
    .await;
}
