//! The subcommands other than `serve` and `simulate`.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use migration::{Migrator, MigratorTrait};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};

use crate::config::{Config, MigrateAction};
use crate::db::Db;
use crate::domain::parse;
use crate::ingest::{Ingestor, reprocess as rebuild};

/// `calltrail migrate up|down|status|fresh`.
pub async fn migrate(config: &Config, action: MigrateAction) -> anyhow::Result<()> {
    let db = Db::connect(config, 1).await?;
    let conn = &db.write;
    let context = || format!("migrate {action:?}").to_lowercase();
    match action {
        // As at start: under the migration lock on PostgreSQL.
        MigrateAction::Up => return db.migrate().await.with_context(context),
        MigrateAction::Down => Migrator::down(conn, Some(1)).await,
        // One line per migration on stdout, whatever RUST_LOG says.
        MigrateAction::Status => Migrator::get_migration_with_status_read_only(conn)
            .await
            .map(|all| {
                for m in all {
                    println!("{:?}\t{}", m.status(), m.name());
                }
            }),
        MigrateAction::Fresh => Migrator::fresh(conn).await,
    }
    .with_context(context)
}

/// What `calltrail import` did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportSummary {
    pub lines: usize,
    pub stored: usize,
    pub duplicates: usize,
    /// Lines that are not deliveries (what the webhook would answer 400).
    pub malformed: usize,
}

/// Deliveries queued at once: enough to fill the writers' batches.
const IN_FLIGHT: usize = 1024;

/// `calltrail import FILE…`: every line through the writers, in order.
pub async fn import(config: &Config, files: &[PathBuf]) -> anyhow::Result<ImportSummary> {
    let writers = config.writers();
    let db = Db::connect(config, writers).await?;
    db.migrate().await?;
    let (ingestor, tasks) = Ingestor::start(
        db.write.clone(),
        writers,
        config.ingest_batch,
        config.ingest_queue,
    )
    .await?;
    let progress = ProgressBar::new_spinner().with_style(
        ProgressStyle::with_template("{spinner} {pos} lines {per_sec} {msg}")
            .expect("a valid template"),
    );
    let mut summary = ImportSummary::default();
    for file in files {
        progress.set_message(file.display().to_string());
        if file.as_os_str() == "-" {
            import_lines(
                BufReader::new(tokio::io::stdin()),
                &ingestor,
                &mut summary,
                &progress,
                Path::new("-"),
            )
            .await?;
        } else {
            let reader = tokio::fs::File::open(file)
                .await
                .with_context(|| format!("cannot read {}", file.display()))?;
            import_lines(
                BufReader::new(reader),
                &ingestor,
                &mut summary,
                &progress,
                file,
            )
            .await?;
        }
    }
    progress.finish_and_clear();
    drop(ingestor);
    for task in tasks {
        let _ = task.await;
    }
    println!(
        "imported {} lines: {} stored, {} duplicates, {} malformed",
        summary.lines, summary.stored, summary.duplicates, summary.malformed
    );
    Ok(summary)
}

async fn import_lines(
    reader: impl AsyncBufRead + Unpin,
    ingestor: &Ingestor,
    summary: &mut ImportSummary,
    progress: &ProgressBar,
    file: &Path,
) -> anyhow::Result<()> {
    let mut lines = reader.lines();
    let mut pending = VecDeque::new();
    let mut number = 0;
    while let Some(line) = lines
        .next_line()
        .await
        .with_context(|| format!("reading {}", file.display()))?
    {
        number += 1;
        if line.trim().is_empty() {
            continue;
        }
        summary.lines += 1;
        progress.inc(1);
        match parse(line.as_bytes()) {
            Ok(delivery) => pending.push_back(ingestor.enqueue(delivery, false).await?),
            Err(e) => {
                summary.malformed += 1;
                progress.suspend(|| eprintln!("{}:{number}: {e}", file.display()));
            }
        }
        if pending.len() >= IN_FLIGHT {
            let receipt = pending.pop_front().expect("not empty").await?;
            count(summary, receipt.duplicate);
        }
    }
    for answer in pending {
        count(summary, answer.await?.duplicate);
    }
    Ok(())
}

fn count(summary: &mut ImportSummary, duplicate: bool) {
    if duplicate {
        summary.duplicates += 1
    } else {
        summary.stored += 1
    }
}

/// `calltrail reprocess [--call ID]`.
pub async fn reprocess(config: &Config, call: Option<&str>) -> anyhow::Result<()> {
    let db = Db::connect(config, 1).await?;
    db.migrate().await?;
    let summary = rebuild(&db.write, call)
        .await
        .context("rebuilding from the raw log")?;
    if let Some(id) = call
        && summary.events == 0
    {
        // A mistyped id: say so rather than report an empty rebuild.
        anyhow::bail!("no delivery of call `{id}` is stored: nothing to rebuild");
    }
    println!(
        "rebuilt {} calls from {} deliveries ({} now count as duplicates)",
        summary.calls, summary.events, summary.now_duplicates
    );
    Ok(())
}
