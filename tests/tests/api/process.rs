//! The real `calltrail` binary as a process, for tests that kill, restart
//! or run several servers.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Start the real binary on `database_url`; returns it and its base URL.
pub async fn start_server(database_url: &str) -> (Child, String) {
    start_server_with(database_url, &[]).await
}

/// Start the real binary with more settings (`CALLTRAIL_API_TOKEN`, a
/// fixed `CALLTRAIL_LISTEN`, …), which win over the defaults.
pub async fn start_server_with(database_url: &str, settings: &[(&str, &str)]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_calltrail-under-test"))
        .env_clear()
        .env("DATABASE_URL", database_url)
        .env("CALLTRAIL_LISTEN", "127.0.0.1:0")
        .env("CALLTRAIL_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .envs(settings.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the server starts");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let address = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.expect("read stderr") {
            if let Ok(log) = serde_json::from_str::<serde_json::Value>(&line)
                && let Some(address) = log["address"].as_str()
            {
                return address.to_owned();
            }
        }
        panic!("the server exited before listening")
    })
    .await
    .expect("the server listens within a minute");
    // Keep draining its logs (shown with TEST_LOG) so it never blocks on a full pipe.
    let show = std::env::var("TEST_LOG").is_ok();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if show {
                eprintln!("{line}");
            }
        }
    });
    (child, format!("http://{address}"))
}
