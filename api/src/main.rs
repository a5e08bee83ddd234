//! The `calltrail` binary: parse the command line, set up logging, run.

use clap::Parser;

use calltrail::config::{Cli, Command};
use calltrail::{Application, cli, graphql, simulate, telemetry};

/// mimalloc instead of the C library's allocator: a request allocates and
/// frees many small buffers across threads, where glibc's malloc spent a
/// fifth of the server's time (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let Cli { command, config } = Cli::parse();
    if let Err(err) = telemetry::init(&config.log_filter, config.log_format) {
        // A malformed setting, like those clap refuses (exit code 2).
        eprintln!("calltrail: {err}");
        std::process::exit(2);
    }
    let result = match command.unwrap_or(Command::Serve) {
        Command::Serve => match Application::build(config).await {
            Ok(app) => app.run_until_stopped().await,
            Err(e) => Err(e),
        },
        Command::Migrate { action } => cli::migrate(&config, action).await,
        Command::Import { files } => cli::import(&config, &files).await.map(|_| ()),
        Command::Reprocess { call } => cli::reprocess(&config, call.as_deref()).await,
        Command::Simulate(args) => simulate::run(args, config.listen).await,
        Command::Schema => {
            print!("{}", graphql::sdl());
            Ok(())
        }
    };
    if let Err(err) = result {
        // One line saying what failed and why; no backtrace.
        eprintln!("calltrail: {err:#}");
        std::process::exit(1);
    }
}
