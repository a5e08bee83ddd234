//! /healthz, /readyz and `calltrail migrate`.

use std::time::Duration;

use calltrail_tests::{Backend, TestApp, fixture_lines, fresh_database, on_each_backend};
use migration::{Migrator, MigratorTrait};
use sea_orm::ConnectionTrait;
use serde_json::json;

#[tokio::test]
async fn ready_while_migrated_and_503_when_a_migration_is_pending() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn(backend).await;
        assert_eq!(app.get("/healthz").await.status, 200);
        assert_eq!(app.get("/readyz").await.status, 200);
        Migrator::down(&app.db, Some(1)).await.unwrap();
        let answer = app.get("/readyz").await;
        assert_eq!(answer.status, 503);
        assert!(
            answer
                .body
                .as_str()
                .unwrap()
                .contains("1 migration(s) pending"),
            "{}",
            answer.body
        );
        assert_eq!(app.get("/healthz").await.status, 200);
    })
    .await;
}

/// Pools do not ping a connection on every use (on PostgreSQL that was a
/// round trip more per batch and per query), only one that sat idle: a
/// connection the database dropped meanwhile is replaced, and the next
/// delivery and query succeed.
#[tokio::test]
async fn connections_the_database_dropped_while_idle_are_replaced() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn(backend).await;
        let lines = fixture_lines("v1/happy-path.jsonl");
        assert_eq!(app.post_webhook(lines[0].clone()).await.status, 200);
        assert_eq!(
            app.graphql("{ callStats { total } }", json!({}))
                .await
                .status,
            200
        );
        if backend == Backend::Postgres {
            // Every other connection to this database: the app's pools.
            app.db
                .execute_unprepared(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE datname = current_database() AND pid <> pg_backend_pid()",
                )
                .await
                .unwrap();
        }
        // Past the idle time after which a pooled connection is checked.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let delivered = app.post_webhook(lines[1].clone()).await;
        assert_eq!(delivered.status, 200, "{backend:?}: {}", delivered.body);
        let answer = app.graphql("{ callStats { total } }", json!({})).await;
        assert_eq!(answer.status, 200);
        assert_eq!(
            answer.body["errors"],
            serde_json::Value::Null,
            "{backend:?}: {}",
            answer.body
        );
        assert_eq!(answer.body["data"]["callStats"]["total"], 1);
    })
    .await;
}

#[tokio::test]
async fn migrate_commands_apply_report_and_roll_back() {
    on_each_backend(|backend| async move {
        let url = fresh_database(backend).await;
        let run = |args: &[&str]| {
            std::process::Command::new(env!("CARGO_BIN_EXE_calltrail-under-test"))
                .args(args)
                .env_clear()
                .env("DATABASE_URL", &url)
                .env("RUST_LOG", "warn")
                .output()
                .expect("runs")
        };
        assert!(run(&["migrate", "up"]).status.success());
        let db = sea_orm::Database::connect(&url).await.unwrap();
        assert!(
            Migrator::get_pending_migrations(&db)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(run(&["migrate", "down"]).status.success());
        assert_eq!(
            Migrator::get_pending_migrations(&db).await.unwrap().len(),
            1
        );
        let status = run(&["migrate", "status"]);
        assert!(status.status.success());
        let lines = String::from_utf8(status.stdout).unwrap();
        let lines: Vec<&str> = lines.lines().collect();
        assert_eq!(
            lines.len(),
            Migrator::get_migration_files().len(),
            "{lines:?}"
        );
        assert!(
            lines[..lines.len() - 1]
                .iter()
                .all(|l| l.starts_with("Applied\tm2026")),
            "{lines:?}"
        );
        assert!(
            lines.last().unwrap().starts_with("Pending\tm2026"),
            "{lines:?}"
        );
        assert!(run(&["migrate", "fresh"]).status.success());
        assert!(
            Migrator::get_pending_migrations(&db)
                .await
                .unwrap()
                .is_empty()
        );
    })
    .await;
}

#[tokio::test]
async fn a_bad_database_url_is_one_clear_line_and_exit_1() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_calltrail-under-test"))
        .env_clear()
        .env("DATABASE_URL", "mysql://nowhere/db")
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("DATABASE_URL must start with sqlite:// or postgres://"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"));
}

/// SQLite's writer has a connection of its own, which an in-memory database
/// cannot share: refused at start, not at the first delivery.
#[test]
fn an_in_memory_sqlite_database_is_refused_with_one_clear_line() {
    for url in ["sqlite::memory:", "sqlite://calltrail.db?mode=memory"] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_calltrail-under-test"))
            .env_clear()
            .env("DATABASE_URL", url)
            .env("CALLTRAIL_LISTEN", "127.0.0.1:0")
            .output()
            .expect("runs");
        assert_eq!(output.status.code(), Some(1), "{url}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("in-memory SQLite database") && stderr.contains("Use a file"),
            "{url}: {stderr}"
        );
        assert!(!stderr.contains("panicked"));
    }
}

/// A v1 delivery of `kind` for `call`.
fn event(call: &str, kind: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"event": {"type": kind, "data": {"call": {"id": call}}}})).unwrap()
}

/// Wait until at least `n` of the writers' statements that take the
/// `event_clock` row (a write, or a serialized batch's lock) wait for a
/// lock; `then` runs on each of them (`pid`: nothing). Returns how many
/// waited (fewer than `n` after five seconds).
async fn when_writes_wait(holder: &mut sea_orm::sqlx::PgConnection, then: &str, n: i64) -> i64 {
    let mut waiting = 0;
    for _ in 0..100 {
        let row: (i64,) = sea_orm::sqlx::query_as(sea_orm::sqlx::AssertSqlSafe(format!(
            "SELECT count({then}) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock' \
             AND query LIKE '%event_clock%'"
        )))
        .fetch_one(&mut *holder)
        .await
        .unwrap();
        waiting = row.0;
        if waiting >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    waiting
}

/// PostgreSQL with one writer, and `call` created: `None` without
/// `TEST_DATABASE_URL`.
async fn postgres_app_with(call: &str) -> Option<TestApp> {
    if !calltrail_tests::backends().contains(&Backend::Postgres) {
        return None;
    }
    let app = TestApp::spawn_with(Backend::Postgres, |c| c.ingest_writers = Some(1)).await;
    let first = app.post_webhook(event(call, "call.initiate")).await;
    assert_eq!(first.status, 200, "{}", first.body);
    Some(app)
}

/// Two servers on one PostgreSQL database, one writer each: `None`
/// without `TEST_DATABASE_URL`.
async fn postgres_replicas() -> Option<(TestApp, TestApp)> {
    if !calltrail_tests::backends().contains(&Backend::Postgres) {
        return None;
    }
    let first = TestApp::spawn_with(Backend::Postgres, |c| c.ingest_writers = Some(1)).await;
    let second = first.spawn_sharing(|c| c.ingest_writers = Some(1)).await;
    Some((first, second))
}

/// Post `body` while another session runs `sql` (opening a transaction)
/// and commits it once the writer's write waits for it: the batch loads
/// before that session's change, and writes after it. Returns the answer.
async fn post_across_a_commit(app: &TestApp, sql: &str, body: Vec<u8>) -> calltrail_tests::Answer {
    use sea_orm::sqlx::{Connection, PgConnection};
    let mut holder = PgConnection::connect(&app.database_url).await.unwrap();
    let mut other = PgConnection::connect(&app.database_url).await.unwrap();
    sea_orm::sqlx::raw_sql(sea_orm::sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut other)
        .await
        .unwrap();
    let commit_the_other = async {
        let waited = when_writes_wait(&mut holder, "pid", 1).await > 0;
        sea_orm::sqlx::raw_sql("COMMIT")
            .execute(&mut other)
            .await
            .unwrap();
        waited
    };
    let (answer, waited) = tokio::join!(app.post_webhook(body), commit_the_other);
    assert!(waited, "the write waited for the other session");
    answer
}

/// The one row `sql` returns.
async fn one_row(app: &TestApp, sql: &str) -> sea_orm::QueryResult {
    app.db
        .query_one_raw(sea_orm::Statement::from_string(
            app.db.get_database_backend(),
            sql,
        ))
        .await
        .unwrap()
        .expect("a row")
}

/// A call's status, agent and version.
async fn status_agent_version(app: &TestApp, call: &str) -> (String, Option<String>, i64) {
    let row = one_row(
        app,
        &format!("SELECT status, agent_id, version FROM call WHERE id = '{call}'"),
    )
    .await;
    (
        row.try_get("", "status").unwrap(),
        row.try_get("", "agent_id").unwrap(),
        row.try_get("", "version").unwrap(),
    )
}

/// The `calltrail_ingest_conflicts_total` sample is exactly `n`.
async fn conflicts_are(app: &TestApp, n: u64) {
    assert_eq!(conflicts(app).await, n, "{}", app.metrics().await);
}

/// `calltrail_ingest_conflicts_total` (0 before the first).
async fn conflicts(app: &TestApp) -> u64 {
    let metrics = app.metrics().await;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("calltrail_ingest_conflicts_total "))
        .map_or(0, |n| n.parse().unwrap())
}

/// PostgreSQL: when the database cancels a batch's write statement (here
/// while it waits for a call row another session holds), only that batch
/// fails; the writer's next batches are stored.
#[tokio::test]
async fn a_cancelled_write_fails_only_its_own_batch() {
    use sea_orm::sqlx::{Connection, PgConnection};
    let Some(app) = postgres_app_with("c_lock_a").await else {
        return; // PostgreSQL's writers: runs with TEST_DATABASE_URL.
    };

    let mut holder = PgConnection::connect(&app.database_url).await.unwrap();
    let mut lock = PgConnection::connect(&app.database_url).await.unwrap();
    sea_orm::sqlx::raw_sql("BEGIN; SELECT 1 FROM call WHERE id = 'c_lock_a' FOR UPDATE")
        .execute(&mut lock)
        .await
        .unwrap();
    let (blocked, cancelled) = tokio::join!(
        app.post_webhook(event("c_lock_a", "call.in-progress")),
        when_writes_wait(&mut holder, "pg_cancel_backend(pid)", 1)
    );
    assert!(cancelled > 0, "the writer waited for the call's row");
    assert_eq!(blocked.status, 503, "the cancelled batch's delivery");
    sea_orm::sqlx::raw_sql("ROLLBACK")
        .execute(&mut lock)
        .await
        .unwrap();
    assert_eq!(app.count("webhook_event").await, 1, "nothing of it stored");

    // The writer goes on: the refused delivery again, and another.
    let again = app
        .post_webhook(event("c_lock_a", "call.in-progress"))
        .await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body["duplicate"], false);
    let next = app.post_webhook(event("c_lock_b", "call.initiate")).await;
    assert_eq!(next.status, 200, "{}", next.body);
    assert_eq!(app.count("webhook_event").await, 3);
}

/// PostgreSQL: a call that another session (another replica, say) changes
/// between a batch's load and its write is not overwritten with what the
/// batch loaded: the write fails whole on the call's version and the batch
/// runs again from a fresh load, so both changes stay.
#[tokio::test]
async fn a_call_changed_after_the_load_is_written_again_from_a_fresh_load() {
    let Some(app) = postgres_app_with("c_race").await else {
        return; // PostgreSQL's writers: runs with TEST_DATABASE_URL.
    };

    // Another writer's change, not committed yet: the batch loads the call
    // without it, then its write waits for the row.
    let answer = post_across_a_commit(
        &app,
        "BEGIN; UPDATE call SET agent_id = 'agent_of_the_other_replica', version = version + 1 \
         WHERE id = 'c_race'",
        event("c_race", "call.in-progress"),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["duplicate"], false);

    let (status, agent, version) = status_agent_version(&app, "c_race").await;
    assert_eq!(status, "IN_PROGRESS", "the delivery was applied");
    assert_eq!(
        agent.as_deref(),
        Some("agent_of_the_other_replica"),
        "the other change was not overwritten"
    );
    assert_eq!(
        version, 3,
        "created (1), the other change (2), the delivery (3)"
    );
    assert_eq!(app.count("webhook_event").await, 2, "stored once");
    conflicts_are(&app, 1).await;
}

/// PostgreSQL: two servers on one database that take the same delivery at
/// once store it once, also when no call guards it: a delivery without a
/// call, or of an unknown kind for a call that does not exist (its raw row
/// has no attempt, and the unique index lets NULLs repeat). Such a batch
/// runs serialized from the start. A v2 event is guarded by its id's unique
/// index instead, whatever its kind. Here both servers' batches wait for the
/// `event_clock` row this test holds (an optimistic batch would wait too,
/// in its write, after loading: then both would store the delivery).
#[tokio::test]
async fn replicas_store_a_delivery_no_call_guards_once() {
    use sea_orm::sqlx::{Connection, PgConnection};
    let Some((first, second)) = postgres_replicas().await else {
        return; // PostgreSQL's replicas: runs with TEST_DATABASE_URL.
    };
    let unknown = serde_json::to_vec(
        &json!({"event": {"type": "call.transcribed", "data": {"call": {"id": "c_unknown"}}}}),
    )
    .unwrap();
    let callless =
        serde_json::to_vec(&json!({"event": {"type": "call.initiate", "data": {}}})).unwrap();
    // A v2 event of a kind calltrail does not know: its id's unique index
    // guards it, so both batches load and write optimistically, and the
    // second's write fails on that index and runs again, serialized.
    let v2_unknown = serde_json::to_vec(&json!({
        "id": "evt_replicas_once", "type": "call.transcript_ready",
        "created_at": "2026-11-20T10:00:00Z",
        "data": {"call": {"id": "call_replicas_once", "object": "call"}}
    }))
    .unwrap();
    for (n, body) in [unknown, callless, v2_unknown].into_iter().enumerate() {
        let mut holder = PgConnection::connect(&first.database_url).await.unwrap();
        let mut clock = PgConnection::connect(&first.database_url).await.unwrap();
        sea_orm::sqlx::raw_sql("BEGIN; SELECT 1 FROM event_clock WHERE id = 1 FOR UPDATE")
            .execute(&mut clock)
            .await
            .unwrap();
        let release = async {
            let waiting = when_writes_wait(&mut holder, "pid", 2).await;
            sea_orm::sqlx::raw_sql("COMMIT")
                .execute(&mut clock)
                .await
                .unwrap();
            waiting
        };
        let (a, b, waiting) = tokio::join!(
            first.post_webhook(body.clone()),
            second.post_webhook(body.clone()),
            release
        );
        assert_eq!(waiting, 2, "both servers' batches waited for the clock");
        assert_eq!((a.status, b.status), (200, 200), "{} {}", a.body, b.body);
        let mut duplicate = [a.body["duplicate"].clone(), b.body["duplicate"].clone()];
        duplicate.sort_by_key(|d| d.as_bool());
        assert_eq!(
            duplicate,
            [json!(false), json!(true)],
            "one stored, one a duplicate"
        );
        assert_eq!(a.body["eventId"], b.body["eventId"]);
        assert_eq!(
            first.count("webhook_event").await,
            n as i64 + 1,
            "stored once"
        );
    }
    // Only the v2 event's second write lost a race.
    assert_eq!(conflicts(&first).await + conflicts(&second).await, 1);
}

/// PostgreSQL: a call deleted between a batch's load and its write (by
/// `calltrail reprocess`, say) is not brought back from what the batch
/// loaded: the write fails on it and the batch runs again from a fresh
/// load, which starts the call anew from the delivery (version 1).
#[tokio::test]
async fn a_call_deleted_after_the_load_is_not_written_back_from_the_load() {
    let Some(app) = postgres_app_with("c_gone").await else {
        return; // PostgreSQL's writers: runs with TEST_DATABASE_URL.
    };

    // Delete the call, not committed yet, holding the clock every write
    // takes first: the batch loads the call, then its write waits.
    let answer = post_across_a_commit(
        &app,
        "BEGIN; SELECT 1 FROM event_clock WHERE id = 1 FOR UPDATE; \
         DELETE FROM attempt WHERE call_id = 'c_gone'; DELETE FROM call WHERE id = 'c_gone'",
        event("c_gone", "call.in-progress"),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);

    let row = one_row(&app, "SELECT version, created_at = (SELECT received_at FROM webhook_event \
             WHERE call_id = 'c_gone' ORDER BY seq DESC LIMIT 1) AS anew FROM call WHERE id = 'c_gone'").await;
    let version: i64 = row.try_get("", "version").unwrap();
    let anew: bool = row.try_get("", "anew").unwrap();
    assert_eq!(
        (version, anew),
        (1, true),
        "the call starts anew from the delivery"
    );
    conflicts_are(&app, 1).await;
}

/// PostgreSQL: a writer keeps the calls it wrote, and a batch of calls it
/// knows skips the load; a call changed since (by another replica, or by
/// hand as here) is not overwritten with what the writer knew: the write
/// fails on the call's version and runs again from a fresh load.
#[tokio::test]
async fn a_known_call_changed_elsewhere_is_written_again_from_a_fresh_load() {
    let Some(app) = postgres_app_with("c_known").await else {
        return; // PostgreSQL's writers: runs with TEST_DATABASE_URL.
    };
    app.db
        .execute_unprepared(
            "UPDATE call SET agent_id = 'agent_set_by_hand', version = version + 1 \
             WHERE id = 'c_known'",
        )
        .await
        .unwrap();

    let answer = app.post_webhook(event("c_known", "call.in-progress")).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["duplicate"], false);
    let (status, agent, version) = status_agent_version(&app, "c_known").await;
    assert_eq!(status, "IN_PROGRESS", "the delivery was applied");
    assert_eq!(
        agent.as_deref(),
        Some("agent_set_by_hand"),
        "not overwritten"
    );
    assert_eq!(version, 3, "created (1), by hand (2), the delivery (3)");
    conflicts_are(&app, 1).await;

    // And the call as it is now is what the writer goes on from.
    let again = app.post_webhook(event("c_known", "call.in-progress")).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body["duplicate"], true);
    assert_eq!(again.body["eventId"], answer.body["eventId"]);
    assert_eq!(app.count("webhook_event").await, 2);

    // Having lost a race with what it knew, the writer loads every batch
    // for a while: a call it starts now and that is changed by hand costs
    // no conflict.
    app.post_all(&[event("c_known_2", "call.initiate")]).await;
    app.db
        .execute_unprepared("UPDATE call SET version = version + 1 WHERE id = 'c_known_2'")
        .await
        .unwrap();
    let next = app
        .post_webhook(event("c_known_2", "call.in-progress"))
        .await;
    assert_eq!(next.status, 200, "{}", next.body);
    conflicts_are(&app, 1).await;
}

/// PostgreSQL: a `call.initiate` for a call the writer does not know is
/// written as starting a new call, without a load; when the call was
/// already stored (by another replica here: a redelivery) the write fails
/// on it and the batch runs again from a load, which finds the copy; and
/// the writer remembers the call as stored.
#[tokio::test]
async fn a_call_start_another_replica_stored_is_found_a_duplicate() {
    let Some((first, second)) = postgres_replicas().await else {
        return; // PostgreSQL's replicas: runs with TEST_DATABASE_URL.
    };
    let lines = fixture_lines("v1/retry-no-answer-busy.jsonl");
    let start = lines[0].clone();
    let stored = first.post_webhook(start.clone()).await;
    assert_eq!(stored.status, 200, "{}", stored.body);
    assert_eq!(stored.body["duplicate"], false);

    let again = second.post_webhook(start).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body["duplicate"], true, "{}", again.body);
    assert_eq!(again.body["eventId"], stored.body["eventId"]);
    assert_eq!(first.count("webhook_event").await, 1);
    let row = one_row(
        &first,
        "SELECT count(*) AS calls, max(version) AS version FROM call",
    )
    .await;
    let calls: i64 = row.try_get("", "calls").unwrap();
    let version: i64 = row.try_get("", "version").unwrap();
    assert_eq!((calls, version), (1, 1), "the call written once");
    conflicts_are(&second, 1).await;

    // The call is remembered as stored: the retry's `call.initiate` (the
    // first one's bytes again, after a no-answer) is loaded, not guessed.
    second.post_all(&lines[1..3]).await;
    conflicts_are(&second, 1).await;
    assert_eq!(
        first.count("attempt").await,
        2,
        "the retry opened attempt 2"
    );

    // A wrong guess is no reason to stop trusting what is known: a call
    // the second server starts, then changed by hand, costs a conflict.
    second
        .post_all(&[event("c_guessed", "call.initiate")])
        .await;
    second
        .db
        .execute_unprepared(
            "UPDATE call SET agent_id = 'by_hand', version = version + 1 WHERE id = 'c_guessed'",
        )
        .await
        .unwrap();
    let answer = second
        .post_webhook(event("c_guessed", "call.in-progress"))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    conflicts_are(&second, 2).await;
    let row = one_row(&second, "SELECT agent_id FROM call WHERE id = 'c_guessed'").await;
    let agent: Option<String> = row.try_get("", "agent_id").unwrap();
    assert_eq!(agent.as_deref(), Some("by_hand"));
}

/// PostgreSQL: what a writer knows of a call is not enough to call a
/// delivery a duplicate, since only a write checks the call's version.
/// Here the platform retries a call: the retry's `call.initiate` repeats
/// the first attempt's bytes. The first server knows the call from that
/// first `call.initiate`, but the other server stored the `call.no-answer`
/// that ended attempt 1, so the retry opens attempt 2.
#[tokio::test]
async fn a_known_call_is_loaded_before_a_delivery_is_called_a_duplicate() {
    let Some((first, second)) = postgres_replicas().await else {
        return; // PostgreSQL's replicas: runs with TEST_DATABASE_URL.
    };
    let lines = fixture_lines("v1/retry-no-answer-busy.jsonl");
    assert_eq!(
        lines[0], lines[2],
        "the retry repeats the first call.initiate"
    );
    first.post_all(&lines[..1]).await;
    second.post_all(&lines[1..2]).await;

    let retry = first.post_webhook(lines[2].clone()).await;
    assert_eq!(retry.status, 200, "{}", retry.body);
    assert_eq!(retry.body["duplicate"], false, "{}", retry.body);
    assert_eq!(first.count("webhook_event").await, 3);
    assert_eq!(
        first.count("attempt").await,
        2,
        "the retry opened attempt 2"
    );
}

/// PostgreSQL: a call deleted and started again elsewhere restarts its
/// versions, so a writer that knew the old call at the same version must
/// not take it for the same call: the write also checks when the call was
/// created, fails, and runs again from a load, keeping the new call's
/// metadata.
#[tokio::test]
async fn a_known_call_deleted_and_started_again_elsewhere_is_not_overwritten() {
    let Some((first, second)) = postgres_replicas().await else {
        return; // PostgreSQL's replicas: runs with TEST_DATABASE_URL.
    };
    first.post_all(&[event("c_again", "call.initiate")]).await;
    first
        .db
        .execute_unprepared(
            "DELETE FROM attempt WHERE call_id = 'c_again'; DELETE FROM call WHERE id = 'c_again'",
        )
        .await
        .unwrap();
    let again = serde_json::to_vec(&json!({
        "metadata": {"started_by": "second"},
        "event": {"type": "call.initiate", "data": {"call": {"id": "c_again"}}}
    }))
    .unwrap();
    second.post_all(&[again]).await;

    let answer = first
        .post_webhook(event("c_again", "call.in-progress"))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let row = one_row(&first, "SELECT status, metadata->>'started_by' AS started_by, version FROM call WHERE id = 'c_again'").await;
    let status: String = row.try_get("", "status").unwrap();
    let started_by: Option<String> = row.try_get("", "started_by").unwrap();
    let version: i64 = row.try_get("", "version").unwrap();
    assert_eq!(status, "IN_PROGRESS");
    assert_eq!(
        started_by.as_deref(),
        Some("second"),
        "the new call's metadata kept"
    );
    assert_eq!(version, 2);
    conflicts_are(&first, 1).await;
}

/// One read connection is enough for GraphQL: on PostgreSQL the connection
/// that LISTENs for other replicas' commits is not taken from it.
#[tokio::test]
async fn graphql_answers_with_a_single_read_connection() {
    on_each_backend(|backend| async move {
        let app = TestApp::spawn_with(backend, |c| c.db_read_connections = 1).await;
        let lines = fixture_lines("v1/happy-path.jsonl");
        assert_eq!(app.post_webhook(lines[0].clone()).await.status, 200);
        for _ in 0..3 {
            let answer = app.graphql("{ callStats { total } }", json!({})).await;
            assert_eq!(
                answer.body["data"]["callStats"]["total"], 1,
                "{backend:?}: {}",
                answer.body
            );
        }
    })
    .await;
}

/// PostgreSQL: replicas started together on a new database all start (one
/// migrates under the migration lock, the others wait for it and find
/// nothing pending), and each migration is recorded once.
#[tokio::test]
async fn replicas_starting_together_on_a_new_database_all_start() {
    if !calltrail_tests::backends().contains(&Backend::Postgres) {
        return; // PostgreSQL's lock: runs with TEST_DATABASE_URL.
    }
    calltrail_tests::cleaning_up(async {
        let url = fresh_database(Backend::Postgres).await;
        let replicas = futures_util::future::join_all(
            (0..3).map(|_| TestApp::spawn_at(Backend::Postgres, url.clone(), |_| {})),
        )
        .await;
        for app in &replicas {
            assert_eq!(app.get("/readyz").await.status, 200);
        }
        let migrations = Migrator::get_migration_files().len() as i64;
        assert_eq!(replicas[0].count("seaql_migrations").await, migrations);
        let answer = replicas[2]
            .post_webhook(fixture_lines("v1/happy-path.jsonl").remove(0))
            .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    })
    .await;
}
