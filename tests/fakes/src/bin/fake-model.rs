//! `fake-model`: serves a scripted fake Anthropic Messages API for manual runs and benchmarks.
//!
//! ```text
//! fake-model [--listen 127.0.0.1:0] [--script script.json]
//! ```
//! Prints `ANTHROPIC_BASE_URL=http://HOST:PORT` on the first line of stdout once it accepts
//! connections, then serves until interrupted (Ctrl-C or SIGTERM).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use loop_fakes::model::{FakeModel, Rule, Script, ScriptError, Step};

#[derive(Debug, Parser)]
#[command(about = "Serve a scripted fake Anthropic Messages API")]
struct Args {
    /// Address to listen on; use 0.0.0.0:PORT to serve containers on the Docker bridge.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// A JSON script (the serde form of `loop_fakes::model::Script`); the built-in demo
    /// script when left out.
    #[arg(long)]
    script: Option<PathBuf>,
    /// Print the built-in demo script as JSON and exit, as a starting point for a script file.
    #[arg(long)]
    print_demo: bool,
}

#[derive(Debug, thiserror::Error)]
enum Error {
    #[error(transparent)]
    Script(#[from] ScriptError),
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot wait for a shutdown signal")]
    Signal(#[source] std::io::Error),
    #[error("cannot print the demo script")]
    Print(#[source] serde_json::Error),
}

/// Runs Bash for prompts that mention "run", echoes everything else.
fn demo_script() -> Script {
    Script::new()
        .rule(
            Rule::contains("run")
                .then(Step::bash("echo hello from fake-model; uname -s"))
                .then(Step::text("the command printed: {{last_tool_result}}")),
        )
        .rule(Rule::any().then(Step::text("you said: {{prompt}}")))
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let mut message = error.to_string();
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            eprintln!("fake-model: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Error> {
    let script = match &args.script {
        Some(path) => Script::from_json_file(path)?,
        None => demo_script(),
    };
    if args.print_demo {
        let json = serde_json::to_string_pretty(&demo_script()).map_err(Error::Print)?;
        println!("{json}");
        return Ok(());
    }
    let model = FakeModel::start_on(args.listen, script)
        .await
        .map_err(|source| Error::Listen {
            addr: args.listen,
            source,
        })?;
    println!("ANTHROPIC_BASE_URL={}", model.url());
    wait_for_signal().await?;
    let count = model.requests().len();
    model.shutdown().await;
    eprintln!("fake-model: served {count} message requests");
    Ok(())
}

async fn wait_for_signal() -> Result<(), Error> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(Error::Signal)?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.map_err(Error::Signal),
        _ = terminate.recv() => Ok(()),
    }
}
