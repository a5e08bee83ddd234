//! Group commit: what a batch does when it holds several deliveries. The
//! writer is stalled behind a transaction the test holds, so the deliveries
//! sent meanwhile queue up and are committed together.

use std::time::Duration;

use calltrail_tests::{Answer, Backend, TestApp, on_each_backend, sample};
use entity::{call, webhook_event};
use futures_util::future::join_all;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, SqliteTransactionMode, TransactionOptions, TransactionTrait,
};
use serde_json::json;

/// A stalled writer: the test holds the database's write lock (SQLite) or
/// the raw log (PostgreSQL), and the writer is blocked committing a first
/// "plug" delivery, so everything sent next waits in its queue.
struct Stall {
    txn: DatabaseTransaction,
    plug: tokio::task::JoinHandle<Answer>,
}

async fn stall_writer(app: &TestApp) -> Stall {
    let options = TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..Default::default()
    };
    let txn = match app.backend {
        Backend::Sqlite => app.db.begin_with_options(options).await.unwrap(),
        Backend::Postgres => {
            let txn = app.db.begin().await.unwrap();
            txn.execute_unprepared("LOCK TABLE webhook_event IN EXCLUSIVE MODE")
                .await
                .unwrap();
            txn
        }
    };
    let plug = post_in_background(app, initiate("c_plug"));
    match app.backend {
        // The plug's write waits for the test's lock.
        Backend::Postgres => {
            eventually(app, "the plug waits for the lock", |app| async move {
                let waiting = app
                    .db
                    .query_one_raw(sea_orm::Statement::from_string(
                        sea_orm::DatabaseBackend::Postgres,
                        "SELECT count(*) AS n FROM pg_stat_activity \
                         WHERE datname = current_database() AND wait_event_type = 'Lock'",
                    ))
                    .await
                    .unwrap()
                    .unwrap();
                waiting.try_get::<i64>("", "n").unwrap() > 0
            })
            .await
        }
        // SQLite's writer waits in its busy handler, which shows nowhere.
        Backend::Sqlite => tokio::time::sleep(Duration::from_millis(200)).await,
    }
    Stall { txn, plug }
}

/// Wait (at most 30 s) until `holds(app)`.
async fn eventually<'a, F, Fut>(app: &'a TestApp, what: &str, holds: F)
where
    F: Fn(&'a TestApp) -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !holds(app).await {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Wait until `n` deliveries wait in the writers' queues (behind the plug).
async fn queued(app: &TestApp, n: usize) {
    let what = format!("{n} deliveries queued");
    eventually(app, &what, |app| async move {
        let metrics = app.metrics().await;
        sample(&metrics, "calltrail_ingest_queue_depth", &[]).unwrap_or(0.0) >= n as f64
    })
    .await
}

impl Stall {
    async fn release(self) {
        self.txn.commit().await.unwrap();
        assert_eq!(self.plug.await.unwrap().status, 200);
    }
}

fn initiate(call_id: &str) -> Vec<u8> {
    serde_json::to_vec(
        &json!({"event": {"type": "call.initiate", "data": {"call": {"id": call_id}}}}),
    )
    .unwrap()
}

/// POST a delivery from a task of its own; its answer when joined.
fn post_in_background(app: &TestApp, body: Vec<u8>) -> tokio::task::JoinHandle<Answer> {
    let request = app
        .client
        .post(format!("{}/webhooks/call-events", app.address))
        .header("content-type", "application/json")
        .body(body);
    tokio::spawn(async move { Answer::from(request.send().await.unwrap()).await })
}

async fn refuse_call_in_database(app: &TestApp, call_id: &str) {
    let sql = match app.backend {
        Backend::Sqlite => format!(
            "CREATE TRIGGER poison BEFORE INSERT ON webhook_event WHEN NEW.call_id = '{call_id}' \
             BEGIN SELECT RAISE(ABORT, 'poisoned'); END"
        ),
        Backend::Postgres => format!(
            "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
             IF NEW.call_id = '{call_id}' THEN RAISE EXCEPTION 'poisoned'; END IF; RETURN NEW; END $$; \
             CREATE TRIGGER poison BEFORE INSERT ON webhook_event FOR EACH ROW EXECUTE FUNCTION poison()"
        ),
    };
    app.db.execute_unprepared(&sql).await.unwrap();
}

#[tokio::test]
async fn a_poisoned_delivery_fails_alone_and_its_batch_neighbours_are_stored() {
    on_each_backend(|backend| async move {
        // One writer: the poisoned delivery waits behind the plug with all
        // its neighbours, whatever writer its call would be routed to.
        let app = TestApp::spawn_with(backend, |c| {
            c.ingest_batch = 256;
            c.ingest_writers = Some(1);
        })
        .await;
        refuse_call_in_database(&app, "c_poison").await;
        let stall = stall_writer(&app).await;
        let mut bodies: Vec<Vec<u8>> = (0..30).map(|i| initiate(&format!("c_ok-{i}"))).collect();
        bodies.insert(15, initiate("c_poison"));
        let sending = tokio::spawn({
            let (client, url) = (
                app.client.clone(),
                format!("{}/webhooks/call-events", app.address),
            );
            async move {
                join_all(bodies.into_iter().map(|b| {
                    let request = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(b);
                    async move { Answer::from(request.send().await.unwrap()).await }
                }))
                .await
            }
        });
        queued(&app, 31).await;
        stall.release().await;
        let answers = sending.await.unwrap();

        assert_eq!(
            answers[15].status, 503,
            "{backend:?}: the poisoned delivery is refused"
        );
        let others: Vec<_> = answers
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 15)
            .map(|(_, a)| a.status)
            .collect();
        assert!(others.iter().all(|s| *s == 200), "{backend:?}: {others:?}");
        assert_eq!(
            app.count("webhook_event").await,
            31,
            "the plug and the 30 neighbours"
        );
        assert_eq!(app.count("call").await, 31);
        assert!(
            call::Entity::find_by_id("c_poison")
                .one(&app.db)
                .await
                .unwrap()
                .is_none()
        );
        let metrics = app.metrics().await;
        assert_eq!(
            sample(&metrics, "calltrail_ingest_batches_retried_total", &[]),
            Some(1.0),
            "{backend:?}: one batch failed and was retried: {metrics}"
        );
    })
    .await;
}

#[tokio::test]
async fn the_same_bytes_twice_in_one_batch_are_stored_once() {
    on_each_backend(|backend| async move {
        // One writer: the queue depth counts every delivery but the plug.
        let app = TestApp::spawn_with(backend, |c| {
            c.ingest_batch = 256;
            c.ingest_writers = Some(1);
        })
        .await;
        let stall = stall_writer(&app).await;
        let body = initiate("c_twice");
        // Both copies wait in the queue behind the plug, so one batch takes both.
        let ((a, b), ()) = tokio::join!(
            async {
                tokio::join!(
                    app.post_webhook(body.clone()),
                    app.post_webhook(body.clone())
                )
            },
            async {
                queued(&app, 2).await;
                stall.release().await;
            }
        );
        assert_eq!(a.event_id(), b.event_id(), "{backend:?}");
        let duplicates = [&a, &b]
            .iter()
            .filter(|x| x.body["duplicate"] == true)
            .count();
        assert_eq!(duplicates, 1, "{backend:?}");
        assert_eq!(app.count("webhook_event").await, 2, "the plug and one copy");
    })
    .await;
}

#[tokio::test]
async fn deliveries_of_one_call_keep_their_arrival_order_across_batch_boundaries() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn_with(backend, |c| {
            c.ingest_batch = 3;
            c.ingest_writers = Some(1);
        })
        .await;
        let stall = stall_writer(&app).await;
        let mut pending = Vec::new();
        for seq in 0..10 {
            let body = serde_json::to_vec(&json!({"metadata": {"seq": seq}, "event": {"type": "call.in-progress", "data": {"call": {"id": "c_order"}}}})).unwrap();
            pending.push(post_in_background(&app, body));
            // Each request reaches the writer's queue before the next is sent.
            queued(&app, seq + 1).await;
        }
        stall.release().await;
        for answer in join_all(pending).await {
            assert_eq!(answer.unwrap().status, 200);
        }
        let events = webhook_event::Entity::find().order_by_asc(webhook_event::Column::Id).all(&app.db).await.unwrap();
        let order: Vec<i64> = events.iter().filter(|e| e.call_id.as_deref() == Some("c_order")).map(|e| serde_json::from_str::<serde_json::Value>(&e.body).unwrap()["metadata"]["seq"].as_i64().unwrap()).collect();
        assert_eq!(order, (0..10).collect::<Vec<_>>(), "{backend:?}: committed in arrival order");
        let call = call::Entity::find_by_id("c_order").one(&app.db).await.unwrap().unwrap();
        assert_eq!(call.metadata, Some(json!({"seq": 9})), "{backend:?}: the last arrival wins");
    })
    .await;
}

/// Stored copies are looked up by call and key, so a delivery that names
/// no call must still find its earlier copy (through the call-less index).
#[tokio::test]
async fn a_delivery_without_a_call_sent_again_later_is_a_duplicate() {
    calltrail_tests::on_each_backend_and_batch(|backend, batch| async move {
        let app = TestApp::spawn_with(backend, |c| c.ingest_batch = batch).await;
        let body = calltrail_tests::fixture("edge/action-without-call.json");
        let first = app.post_webhook(body.clone()).await;
        assert_eq!(first.status, 200, "{backend:?}: {}", first.body);
        assert_eq!(first.body["duplicate"], false, "{backend:?}");
        // Another call's delivery between the two, so the copy is in a later batch.
        assert_eq!(app.post_webhook(initiate("c_between")).await.status, 200);
        let again = app.post_webhook(body).await;
        assert_eq!(again.status, 200, "{backend:?}: {}", again.body);
        assert_eq!(again.body["duplicate"], true, "{backend:?} batch {batch}");
        assert_eq!(again.event_id(), first.event_id());
        assert_eq!(app.count("webhook_event").await, 2, "{backend:?}");
        assert_eq!(app.count("action").await, 1, "{backend:?}");
    })
    .await;
}

/// Once a call's lifecycle ended, its deliveries repeat anywhere in the
/// call (CONTRACT §2): a whole lifecycle over three attempts sent again
/// stores nothing, each copy answered with the id of the first delivery
/// of those bytes (the three `call.initiate`s are the same bytes). On
/// PostgreSQL the writer knows the call by then: a copy it did not know of
/// would be written as new (under the current attempt, which no unique
/// index refuses), so this checks that it knows every delivery stored for
/// the call.
#[tokio::test]
async fn a_lifecycle_sent_again_after_it_ended_stores_nothing() {
    calltrail_tests::on_each_backend_and_batch(|backend, batch| async move {
        let app = TestApp::spawn_with(backend, |c| c.ingest_batch = batch).await;
        let lines = calltrail_tests::fixture_lines("v1/retry-no-answer-busy.jsonl");
        let mut ids = Vec::new();
        for line in &lines {
            let answer = app.post_webhook(line.clone()).await;
            assert_eq!(answer.status, 200, "{backend:?}: {}", answer.body);
            assert_eq!(answer.body["duplicate"], false, "{backend:?}");
            ids.push(answer.event_id());
        }
        for line in &lines {
            let first = lines.iter().position(|l| l == line).unwrap();
            let again = app.post_webhook(line.clone()).await;
            assert_eq!(again.status, 200, "{backend:?}: {}", again.body);
            assert_eq!(
                again.body["duplicate"],
                true,
                "{backend:?} batch {batch}: {}",
                String::from_utf8_lossy(line)
            );
            assert_eq!(again.event_id(), ids[first], "{backend:?}");
        }
        assert_eq!(
            app.count("webhook_event").await,
            lines.len() as i64,
            "{backend:?}"
        );
        assert_eq!(app.count("attempt").await, 3, "{backend:?}");
    })
    .await;
}

/// A row the database skips without an error (a trigger that drops it)
/// fails its delivery before the commit: a 503 stores nothing of it, and
/// the same delivery sent again once the database takes it is stored whole.
#[tokio::test]
async fn a_delivery_whose_row_the_database_skips_is_refused_and_stores_nothing() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn(backend).await;
        let skip = match backend {
            Backend::Sqlite => "CREATE TRIGGER skip BEFORE INSERT ON analysis BEGIN SELECT RAISE(IGNORE); END",
            Backend::Postgres => {
                "CREATE FUNCTION skip() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$; \
                 CREATE TRIGGER skip BEFORE INSERT ON analysis FOR EACH ROW EXECUTE FUNCTION skip()"
            }
        };
        app.db.execute_unprepared(skip).await.unwrap();
        let lines = calltrail_tests::fixture_lines("v1/happy-path.jsonl");
        let analysis_line = lines
            .iter()
            .position(|l| String::from_utf8_lossy(l).contains(r#""type":"end-of-call""#))
            .expect("the happy path has an analysis");
        let mut stored = 0;
        for (i, line) in lines.iter().enumerate() {
            let answer = app.post_webhook(line.clone()).await;
            if i == analysis_line {
                assert_eq!(answer.status, 503, "{backend:?}: {}", answer.body);
            } else {
                assert_eq!(answer.status, 200, "{backend:?} line {i}: {}", answer.body);
                stored += 1;
            }
        }
        assert_eq!(app.count("webhook_event").await, stored, "{backend:?}: nothing of the refused delivery");
        assert_eq!(app.count("analysis").await, 0);

        let drop = match backend {
            Backend::Sqlite => "DROP TRIGGER skip",
            Backend::Postgres => "DROP TRIGGER skip ON analysis",
        };
        app.db.execute_unprepared(drop).await.unwrap();
        let again = app.post_webhook(lines[analysis_line].clone()).await;
        assert_eq!(again.status, 200, "{}", again.body);
        assert_eq!(again.body["duplicate"], false, "{backend:?}: it was never stored");
        assert_eq!(app.count("analysis").await, 1, "{backend:?}");
    })
    .await;
}

/// `postgres://user@host:port/db` → (`host:port`, the same URL through `proxy`, unencrypted).
/// PostgreSQL (None without `TEST_DATABASE_URL`): a server with one writer
/// whose connections pass through a [`PgProxy`](calltrail_tests::pg_proxy::PgProxy),
/// one delivery already stored: the writer's statements are prepared (a
/// Parse would wait for the stall's table lock) and its connection held, so
/// the next write the proxy sees is the plug's.
async fn behind_proxy() -> Option<(calltrail_tests::pg_proxy::PgProxy, TestApp)> {
    if !calltrail_tests::backends().contains(&Backend::Postgres) {
        return None;
    }
    let server = std::env::var("TEST_DATABASE_URL").unwrap();
    let (upstream, _) = through(&server, "");
    let proxy = calltrail_tests::pg_proxy::PgProxy::start(upstream).await;
    let app = TestApp::spawn_with(Backend::Postgres, |c| {
        c.database_url = through(&c.database_url, &proxy.address).1;
        c.ingest_writers = Some(1);
        c.ingest_batch = 256;
    })
    .await;
    assert_eq!(app.post_webhook(initiate("c_warm")).await.status, 200);
    Some((proxy, app))
}

fn through(url: &str, proxy: &str) -> (String, String) {
    let start = url
        .find('@')
        .map_or_else(|| url.find("://").unwrap() + 3, |at| at + 1);
    let end = start + url[start..].find('/').unwrap();
    let upstream = url[start..end].to_owned();
    let sep = if url.contains('?') { '&' } else { '?' };
    (
        upstream,
        format!(
            "{}{proxy}{}{sep}sslmode=disable",
            &url[..start],
            &url[end..]
        ),
    )
}

/// `bodies` queued in this order behind a stalled writer (one batch),
/// `fault` set on the proxy, the writer released: the answers, in order,
/// once the proxy has seen its fault happen once.
async fn one_batch_with_fault(
    app: &TestApp,
    proxy: &calltrail_tests::pg_proxy::PgProxy,
    bodies: &[&Vec<u8>],
    fault: fn(&calltrail_tests::pg_proxy::PgProxy),
) -> Vec<Answer> {
    let stall = stall_writer(app).await;
    let mut pending = Vec::new();
    for (i, body) in bodies.iter().enumerate() {
        pending.push(post_in_background(app, (*body).clone()));
        queued(app, i + 1).await;
    }
    fault(proxy);
    stall.release().await;
    let answers = join_all(pending)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(proxy.lost(), 1, "the fault happened once");
    answers
}

/// The retry fixture's call, after its first two deliveries: one attempt, no answer.
async fn assert_one_attempt_no_answer(app: &TestApp) {
    let call = call::Entity::find_by_id("c_91b0d3c4-retry")
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((call.attempt_count, call.status.as_str()), (1, "NO_ANSWER"));
}

/// A batch that committed but whose answer was lost (the connection broke
/// after the commit) is not run again: the writer looks up what this very
/// batch stored and answers from it. Run again, the call's `call.initiate`
/// would meet the `call.no-answer` stored with it and open a second attempt.
#[tokio::test]
async fn a_batch_whose_answer_is_lost_after_its_commit_is_answered_from_what_it_stored() {
    let Some((proxy, app)) = behind_proxy().await else {
        return;
    };
    let lines = calltrail_tests::fixture_lines("v1/retry-no-answer-busy.jsonl");
    // In arrival order: the initiate, the same initiate again (the platform
    // retrying it), then the no-answer; the batch's answer is lost.
    let bodies = [&lines[0], &lines[0], &lines[1]];
    let answers = one_batch_with_fault(&app, &proxy, &bodies, |p| p.arm()).await;

    let events = webhook_event::Entity::find()
        .order_by_asc(webhook_event::Column::Id)
        .all(&app.db)
        .await
        .unwrap();
    assert_eq!(
        events.len(),
        4,
        "the first, the plug and the batch's two, once: {events:?}"
    );
    for answer in &answers {
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    let (initiate, again, no_answer) = (&answers[0], &answers[1], &answers[2]);
    assert_eq!(initiate.body["duplicate"], false, "{}", initiate.body);
    assert_eq!(initiate.event_id(), events[2].id.to_string());
    // The copy in the batch stored nothing: a duplicate of the first, not a
    // 503 whose resend would come after the no-answer and open an attempt.
    assert_eq!(again.body["duplicate"], true, "{}", again.body);
    assert_eq!(again.event_id(), events[2].id.to_string());
    assert_eq!(no_answer.body["duplicate"], false, "{}", no_answer.body);
    assert_eq!(no_answer.event_id(), events[3].id.to_string());
    assert_one_attempt_no_answer(&app).await;
}

/// A sender that stops waiting while its delivery is still queued (its
/// HTTP timeout, a closed connection) has no answer and will send it again:
/// the writer leaves it out instead of committing it unanswered, and the
/// resend is stored as new. Deliveries whose senders wait are unaffected.
#[tokio::test]
async fn a_delivery_whose_sender_gave_up_while_it_was_queued_is_not_stored() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn_with(backend, |c| c.ingest_writers = Some(1)).await;
        let stall = stall_writer(&app).await;
        let impatient = reqwest::Client::builder()
            .timeout(Duration::from_millis(300))
            .build()
            .unwrap();
        let gave_up = impatient
            .post(format!("{}/webhooks/call-events", app.address))
            .header("content-type", "application/json")
            .body(initiate("c_gave-up"))
            .send()
            .await;
        assert!(gave_up.is_err_and(|e| e.is_timeout()), "{backend:?}");
        let waited = post_in_background(&app, initiate("c_waited"));
        queued(&app, 2).await;
        // The server notices the closed connection and drops the request.
        tokio::time::sleep(Duration::from_millis(300)).await;
        stall.release().await;
        assert_eq!(waited.await.unwrap().status, 200, "{backend:?}");
        let stored = |call: &'static str| {
            webhook_event::Entity::find()
                .filter(webhook_event::Column::CallId.eq(call))
                .count(&app.db)
        };
        assert_eq!(stored("c_waited").await.unwrap(), 1, "{backend:?}");
        assert_eq!(
            stored("c_gave-up").await.unwrap(),
            0,
            "{backend:?}: left out"
        );
        let again = app.post_webhook(initiate("c_gave-up")).await;
        assert_eq!(again.status, 200, "{backend:?}: {}", again.body);
        assert_eq!(again.body["duplicate"], false, "{backend:?}");
    })
    .await;
}

/// A batch whose connection breaks while PostgreSQL still runs its
/// statement (here: slowed by a trigger; in life, waiting for a lock or a
/// flush) may commit after the writer looked and found nothing. The writer
/// ends that session first, so what it finds is final: the batch is
/// committed again one delivery at a time, each once. Before, the look came
/// first: the batch committed behind it and its deliveries a second time,
/// the initiate opening a second attempt.
#[tokio::test]
async fn a_batch_whose_connection_breaks_while_it_runs_is_applied_once() {
    let Some((proxy, app)) = behind_proxy().await else {
        return;
    };
    app.db
        .execute_unprepared(
            "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN PERFORM pg_sleep(1); RETURN NEW; END $$; \
             CREATE TRIGGER slow BEFORE INSERT ON webhook_event FOR EACH ROW \
             WHEN (NEW.call_id = 'c_91b0d3c4-retry') EXECUTE FUNCTION slow()",
        )
        .await
        .unwrap();
    let lines = calltrail_tests::fixture_lines("v1/retry-no-answer-busy.jsonl");
    // The batch's connection is severed once its write is sent.
    let answers = one_batch_with_fault(&app, &proxy, &[&lines[0], &lines[1]], |p| p.sever()).await;
    for answer in &answers {
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.body["duplicate"], false, "{}", answer.body);
    }
    let stored = webhook_event::Entity::find()
        .filter(webhook_event::Column::CallId.eq("c_91b0d3c4-retry"))
        .count(&app.db)
        .await
        .unwrap();
    assert_eq!(stored, 2, "each delivery stored once");
    assert_one_attempt_no_answer(&app).await;
}

/// The same when the row skipped is the delivery's raw event itself: its
/// call is not written either.
#[tokio::test]
async fn a_delivery_whose_raw_event_the_database_skips_changes_no_call() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn(backend).await;
        let skip = match backend {
            Backend::Sqlite => {
                "CREATE TRIGGER skip BEFORE INSERT ON webhook_event WHEN NEW.call_id = 'c_skipped' \
                 BEGIN SELECT RAISE(IGNORE); END"
            }
            Backend::Postgres => {
                "CREATE FUNCTION skip() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                 IF NEW.call_id = 'c_skipped' THEN RETURN NULL; END IF; RETURN NEW; END $$; \
                 CREATE TRIGGER skip BEFORE INSERT ON webhook_event FOR EACH ROW EXECUTE FUNCTION skip()"
            }
        };
        app.db.execute_unprepared(skip).await.unwrap();
        let answer = app.post_webhook(initiate("c_skipped")).await;
        assert_eq!(answer.status, 503, "{backend:?}: {}", answer.body);
        assert_eq!(app.count("call").await, 0, "{backend:?}: no call without its delivery");
        assert_eq!(app.count("attempt").await, 0, "{backend:?}");
        assert_eq!(app.count("webhook_event").await, 0, "{backend:?}");
        assert_eq!(app.post_webhook(initiate("c_kept")).await.status, 200);
        assert_eq!(app.count("call").await, 1, "{backend:?}");
    })
    .await;
}

/// While another connection holds the write lock past the writers' lock
/// wait (SQLite: the file, past its busy timeout; PostgreSQL: the clock row
/// every write takes first, as `calltrail reprocess` does, past its
/// `lock_timeout`), a failed batch is not retried one delivery at a time
/// (each would wait the whole timeout again for the same answer, the last of
/// a batch of 128 some twenty minutes): every delivery of it gets its 503 at
/// once, nothing is stored, and the writer goes on once the lock is free.
/// Before, a PostgreSQL writer waited for good.
#[tokio::test]
async fn a_batch_refused_for_a_locked_database_is_answered_503_at_once() {
    on_each_backend(|backend| async move {
        let busy = Duration::from_millis(500);
        let app = TestApp::spawn_with(backend, |c| {
            c.ingest_batch = 256;
            c.ingest_writers = Some(1);
            c.write_lock_timeout = busy;
        })
        .await;
        let holder = match backend {
            Backend::Sqlite => {
                let options = TransactionOptions {
                    sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                    ..Default::default()
                };
                app.db.begin_with_options(options).await.unwrap()
            }
            Backend::Postgres => {
                let txn = app.db.begin().await.unwrap();
                txn.execute_unprepared("SELECT 1 FROM event_clock WHERE id = 1 FOR UPDATE")
                    .await
                    .unwrap();
                txn
            }
        };
        // The first delivery waits alone for the lock; the next five queue
        // behind it and fail as one batch.
        let answers =
            join_all((0..6).map(|i| app.post_webhook(initiate(&format!("c_locked-{i}"))))).await;
        for answer in &answers {
            assert_eq!(answer.status, 503, "{backend:?}: {}", answer.body);
            assert_eq!(answer.body["error"]["code"], "unavailable");
            assert!(answer.headers.contains_key("retry-after"));
        }
        let metrics = app.metrics().await;
        assert_eq!(
            sample(&metrics, "calltrail_ingest_batches_retried_total", &[]).unwrap_or(0.0),
            0.0,
            "{backend:?}: no batch was retried one delivery at a time: {metrics}"
        );
        assert_eq!(
            sample(
                &metrics,
                "calltrail_deliveries_total",
                &[
                    ("type", "call.initiate"),
                    ("outcome", "refused"),
                    ("reason", "unavailable")
                ]
            ),
            Some(6.0),
            "{backend:?}: {metrics}"
        );
        holder.rollback().await.unwrap();
        assert_eq!(app.count("webhook_event").await, 0, "{backend:?}");

        let again = app.post_webhook(initiate("c_locked-0")).await;
        assert_eq!(again.status, 200, "{backend:?}: {}", again.body);
        assert_eq!(again.body["duplicate"], false);
    })
    .await;
}

/// PostgreSQL: a batch whose connection breaks before its write reaches the
/// server (the writer's kept connection dropped by a failover, say) stored
/// nothing: the writer finds that out on a new connection and commits its
/// deliveries one by one, each answered 200, instead of refusing them all as
/// if the database were down.
#[tokio::test]
async fn a_batch_whose_connection_breaks_before_its_write_is_committed_again() {
    let Some((proxy, app)) = behind_proxy().await else {
        return;
    };
    let bodies: Vec<Vec<u8>> = (0..3).map(|i| initiate(&format!("c_cut-{i}"))).collect();
    let bodies: Vec<&Vec<u8>> = bodies.iter().collect();
    // The batch's write never reaches the server.
    let answers = one_batch_with_fault(&app, &proxy, &bodies, |p| p.cut()).await;
    for answer in &answers {
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.body["duplicate"], false);
    }
    assert_eq!(
        app.count("webhook_event").await,
        5,
        "the first, the plug, the three"
    );
    let metrics = app.metrics().await;
    assert_eq!(
        sample(&metrics, "calltrail_ingest_batches_retried_total", &[]),
        Some(1.0),
        "{metrics}"
    );
}
