//! The `loop` binary: parse arguments, set up logging, run a command, map errors to an exit
//! status. Everything else lives in the library.

use loop_wire::routes;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use loop_app::cli::{
    Cli, Command, ConfigCommand, DaemonCommand, GateCommand, ImageCommand, TasksCommand,
};
use loop_app::commands::{client, config_show, gate, image, onboard, service, ui};
use loop_daemon::config::{Config, ConfigSources, LogFormat};
use loop_daemon::doctor;
use loop_gate::wire::ApprovalDecision;
use tokio::io::AsyncBufReadExt;

fn main() -> ExitCode {
    // The gate's agent side (re-exec'd by `loop syscallwrap`): first thing, while the process
    // has one thread and before anything else reads the environment.
    if loop_guest::syscallwrap::is_child_mode() {
        return exit_code(loop_guest::syscallwrap::run_child());
    }
    let cli = Cli::parse();
    // The gate drops capabilities per thread, so `syscallwrap` must start before any runtime
    // (and its worker threads) exists.
    if let Command::Syscallwrap(args) = &cli.command {
        loop_guest::syscallwrap::init_logging();
        return exit_code(loop_guest::syscallwrap::run_parent(&args.command));
    }
    // The same for the docker proxy: it drops its capabilities before its runtime starts.
    if let Command::Dockerproxy = &cli.command {
        return exit_code(loop_guest::dockerproxy::run());
    }
    // Setup ends by exec'ing the agent: no runtime, and no thread of its own left running.
    if let Command::Setup(args) = &cli.command {
        return exit_code(loop_guest::setup::run(&args.command));
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// An agent's exit status as the process's own (128 + signal fits in a byte too).
fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX))
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let sources = ConfigSources::from_process();
    match cli.command {
        Command::Onboard(args) => {
            match onboard::onboard(&sources.loop_dir, args.force)? {
                onboard::OnboardOutcome::Written(path) => {
                    println!("wrote {}", path.display());
                    println!(
                        "next: add your anthropic_api_key (or claude_code_oauth_token), then run `loop doctor`"
                    );
                }
                onboard::OnboardOutcome::AlreadyThere(path) => {
                    println!(
                        "{} already exists; left as it is (use --force to replace it)",
                        path.display()
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Doctor(args) => {
            let checks = doctor::run(&sources, args.dir.as_deref()).await;
            for check in &checks {
                println!("{check}");
            }
            if doctor::all_passed(&checks) {
                println!("\nloop is ready: `loop serve`");
                Ok(ExitCode::SUCCESS)
            } else {
                println!("\nloop is not ready: fix the FAIL lines above");
                Ok(ExitCode::FAILURE)
            }
        }
        Command::Config(ConfigCommand::Show { dir }) => {
            let loaded = load(&sources)?;
            let trusted = match &dir {
                Some(dir) => {
                    let store = loop_store::Store::open(&loaded.database_url()).await?;
                    store
                        .project_trust(&loop_daemon::config::project::trust_key(dir))
                        .await?
                        .map(|t| loop_daemon::config::TrustedVersion {
                            hash: t.file_hash,
                            text: t.content,
                        })
                }
                None => None,
            };
            let (json, warnings) = config_show::render(&loaded, dir.as_deref(), trusted.as_ref())?;
            for warning in warnings {
                eprintln!("warning: {warning}");
            }
            println!("{json}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(ConfigCommand::Trust { dir, yes }) => {
            use loop_app::commands::config_trust::{self, Prepared};
            let config = load(&sources)?;
            let dir = absolute(&dir.unwrap_or_else(|| std::path::PathBuf::from(".")))?;
            let store = loop_store::Store::open(&config.database_url()).await?;
            let review = match config_trust::prepare(&config, &store, &dir).await? {
                Prepared::AlreadyTrusted(file) => {
                    println!(
                        "{} (version {}) is already trusted",
                        file.path.display(),
                        file.short_hash()
                    );
                    return Ok(ExitCode::SUCCESS);
                }
                Prepared::Review(review) => review,
            };
            println!("{}", config_trust::render(&review));
            if !yes && !confirm("Trust this exact version? [y/N] ").await? {
                eprintln!("nothing was trusted");
                return Ok(ExitCode::FAILURE);
            }
            let by = format!(
                "cli:{}",
                std::env::var("USER").unwrap_or_else(|_| "unknown".to_owned())
            );
            config_trust::record(&store, &review, &by).await?;
            println!(
                "trusted {} version {}: it applies from the next turn",
                review.file.path.display(),
                review.file.short_hash()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Image(ImageCommand::Build(args)) if args.dir.is_some() => {
            use loop_app::commands::project_image::{self, Found};
            let config = load(&sources)?;
            let dir = absolute(args.dir.as_deref().unwrap_or(std::path::Path::new(".")))?;
            let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
            let store = loop_store::Store::open(&config.database_url()).await?;
            let (source, description, trusted, diff) = match project_image::find(
                &config, &store, &dir,
            )
            .await?
            {
                Found::Nothing(image) => {
                    println!(
                        "{} has no environment description (.loop/container/Dockerfile, .devcontainer/devcontainer.json, .devcontainer.json): its agents run in {image}",
                        dir.display()
                    );
                    return Ok(ExitCode::SUCCESS);
                }
                Found::Description {
                    source,
                    description,
                    trusted,
                    diff,
                } => (source, description, trusted, diff),
            };
            if !trusted {
                println!(
                    "{} (version {}) is not trusted yet. Building it runs its commands with network access:\n{diff}",
                    description.name,
                    description.short_hash()
                );
                if !args.yes && !confirm("Trust and build this exact version? [y/N] ").await? {
                    eprintln!("nothing was trusted or built");
                    return Ok(ExitCode::FAILURE);
                }
                let by = format!(
                    "cli:{}",
                    std::env::var("USER").unwrap_or_else(|_| "unknown".to_owned())
                );
                project_image::trust(&store, &dir, &description, &by).await?;
                println!(
                    "trusted {} version {}",
                    description.name,
                    description.short_hash()
                );
            }
            let (tag, built) = project_image::build(&config, &dir, &source).await?;
            if built {
                println!("built {tag} for {}", dir.display());
            } else {
                println!("{tag} is current for {}: nothing to build", dir.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Image(ImageCommand::Build(args)) => {
            let config = load(&sources)?;
            let mut ca_certs: Vec<_> = config
                .extra_ca_certs
                .iter()
                .map(|c| config.expand(c))
                .collect();
            ca_certs.extend(args.ca_certs);
            let loop_binary = match args.loop_binary {
                Some(path) => path,
                None => std::env::current_exe().context("cannot locate the running loop binary")?,
            };
            let request = image::BuildRequest {
                tag: args.tag.unwrap_or_else(|| config.container_image.clone()),
                claude_version: args.claude_version,
                loop_binary,
                ca_certs,
                no_cache: args.no_cache,
            };
            image::build(&request).await?;
            println!("built {}", request.tag);
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(args) => {
            let config = load(&sources)?;
            let client = connect_client(&config)?;
            let dir = args.dir.map(|d| absolute(&d)).transpose()?;
            let channel = args
                .channel
                .unwrap_or_else(|| client::channel_for_dir(dir.as_deref()));
            let mut stream = client.stream(&channel).await?;
            if args.new {
                client.post_command(&channel, "/loop new").await?;
            }
            let dir = dir.map(|d| d.display().to_string());
            match client.ask(&mut stream, &channel, &args.prompt, dir).await {
                Ok(answer) => {
                    println!("{answer}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(err) => {
                    eprintln!("error: {err}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Chat(args) => {
            let config = load(&sources)?;
            let client = connect_client(&config)?;
            let mut stream = client.stream(&args.channel).await?;
            let mut dir = args
                .dir
                .map(|d| absolute(&d))
                .transpose()?
                .map(|d| d.display().to_string());
            eprintln!(
                "loop chat on channel {:?}; /loop help for commands, Ctrl-D to leave",
                args.channel
            );
            let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
            loop {
                eprint!("> ");
                let Some(line) = lines.next_line().await? else {
                    break;
                };
                let line = line.trim();
                if line.is_empty() {
                    continue;
                }
                if line.starts_with("/loop") {
                    match client.post_command(&args.channel, line).await {
                        Ok(()) => {}
                        Err(err) => eprintln!("error: {err}"),
                    }
                    continue;
                }
                match client
                    .ask(&mut stream, &args.channel, line, dir.take())
                    .await
                {
                    Ok(answer) => println!("{answer}\n"),
                    Err(err) => eprintln!("error: {err}"),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Status => {
            let config = load(&sources)?;
            let status = connect_client(&config)?.get_json(routes::STATUS).await?;
            println!("{}", serde_json::to_string_pretty(&status)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Approve(args) => {
            let config = load(&sources)?;
            let decision = if args.session {
                ApprovalDecision::AllowSession
            } else {
                ApprovalDecision::AllowOnce
            };
            let record = gate::decide(&connect_client(&config)?, &args.id, decision).await?;
            println!("allowed {}: {}", record.id, record.summary);
            Ok(ExitCode::SUCCESS)
        }
        Command::Deny(args) => {
            let config = load(&sources)?;
            let record =
                gate::decide(&connect_client(&config)?, &args.id, ApprovalDecision::Deny).await?;
            println!("denied {}: {}", record.id, record.summary);
            Ok(ExitCode::SUCCESS)
        }
        Command::Ui(args) => {
            let config = load(&sources)?;
            let client = connect_client(&config)?;
            let url = ui::login_url(
                &client,
                args.user.as_deref(),
                args.name.as_deref(),
                &args.roles,
            )
            .await?;
            println!("{url}");
            eprintln!("(the link works once, within a few minutes)");
            if !args.no_open
                && args.user.is_none()
                && let Some(program) = ui::open_in_browser(&url)
            {
                eprintln!("opened with {program}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Approvals => {
            let config = load(&sources)?;
            let pending = gate::pending(&connect_client(&config)?).await?;
            println!("{}", gate::render_pending(&pending));
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit(args) => {
            let config = load(&sources)?;
            let store = loop_store::Store::open(&config.database_url()).await?;
            println!(
                "{}",
                gate::render_audit(&store.gate_audit(args.limit).await?)
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Gate(GateCommand::Check(args)) => {
            println!("{}", gate::check(&args.policy_file, &args.command)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Syscallwrap(_) | Command::Dockerproxy | Command::Setup(_) => {
            anyhow::bail!(
                "syscallwrap, dockerproxy and setup run before the runtime starts; this is a bug"
            )
        }
        Command::Mcp(args) => {
            // stdout is the protocol: logs go to the file when it can be opened, else stderr.
            if args.log.as_deref().is_none_or(|path| {
                loop_app::logging::init("info", LogFormat::Text, Some(path)).is_err()
            }) {
                let _ = loop_app::logging::init("info", LogFormat::Text, None);
            }
            loop_guest::mcp::serve(loop_guest::mcp::McpOptions {
                channel_id: args.channel_id,
                api_url: args.api_url,
                author_id: args.author_id,
                memory: args.memory,
                log: args.log,
                token: std::env::var(loop_wire::container::env::API_TOKEN).ok(),
            })
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Tasks(args) => {
            let config = load(&sources)?;
            let store = loop_store::Store::open(&config.database_url()).await?;
            match args.command {
                None => println!(
                    "{}",
                    loop_app::commands::tasks::render_list(&store, args.channel.as_deref()).await?
                ),
                Some(TasksCommand::Cancel { id }) => {
                    println!("{}", loop_app::commands::tasks::cancel(&store, &id).await?)
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Memory(command) => {
            use loop_app::cli::MemoryCommand;
            use loop_app::commands::memory;
            let config = load(&sources)?;
            let store = loop_store::Store::open(&config.database_url()).await?;
            let text = match command {
                MemoryCommand::Search {
                    query,
                    top_k,
                    scope,
                } => memory::search(&config, &store, &query, top_k, &scope).await?,
                MemoryCommand::List {
                    source,
                    limit,
                    scope,
                } => memory::list(&store, source.as_deref(), limit, &scope).await?,
                MemoryCommand::Forget { id } => memory::forget(&store, &id).await?,
                MemoryCommand::Reindex { dir } => {
                    let dir = dir.unwrap_or_else(|| std::path::PathBuf::from("."));
                    memory::reindex(&config, &store, &dir).await?
                }
            };
            println!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Usage => {
            let config = load(&sources)?;
            let store = loop_store::Store::open(&config.database_url()).await?;
            println!(
                "{:<48} {:>6} {:>12} {:>12} {:>10}",
                "channel", "runs", "input", "output", "cost $"
            );
            for row in store.usage().await? {
                println!(
                    "{:<48} {:>6} {:>12} {:>12} {:>10.4}",
                    row.channel_key, row.runs, row.input_tokens, row.output_tokens, row.cost_usd
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Daemon(command) => {
            let config = load(&sources)?;
            let scope = service::ServiceScope::detect(&config.home);
            match command {
                DaemonCommand::Install => {
                    let exe = std::env::current_exe().context("cannot locate the loop binary")?;
                    let text =
                        service::unit_text(&exe, &config.loop_dir, config.shutdown_grace_sec);
                    let path = service::write_unit(&scope, &text)?;
                    println!("wrote {}", path.display());
                    service::systemctl_ok(&scope, &["daemon-reload"])?;
                    service::systemctl_ok(&scope, &["enable", service::UNIT_NAME])?;
                    println!("enabled; start it with `loop daemon start`");
                    Ok(ExitCode::SUCCESS)
                }
                DaemonCommand::Start => {
                    service::systemctl_ok(&scope, &["start", service::UNIT_NAME])?;
                    Ok(ExitCode::SUCCESS)
                }
                DaemonCommand::Stop => {
                    service::systemctl_ok(&scope, &["stop", service::UNIT_NAME])?;
                    Ok(ExitCode::SUCCESS)
                }
                DaemonCommand::Status => Ok(
                    if service::systemctl(&scope, &["status", service::UNIT_NAME])? {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    },
                ),
            }
        }
        Command::Serve => {
            write_config_if_missing(&sources)?;
            let config = load(&sources)?;
            prepare_first_run(&config).await?;
            loop_app::logging::init(
                &config.log_level,
                config.log_format,
                config.log_file.as_deref(),
            )?;
            let shutdown = tokio_util::sync::CancellationToken::new();
            let signal_token = shutdown.clone();
            tokio::spawn(async move {
                wait_for_signal().await;
                signal_token.cancel();
            });
            loop_daemon::daemon::serve(config, shutdown).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn connect_client(config: &Config) -> anyhow::Result<client::Client> {
    let addr = loop_daemon::daemon::client_api_addr(config)?;
    let token = loop_daemon::api::read_admin_token(&config.loop_dir).context(
        "cannot read the admin token; is `loop serve` running for this user (same LOOP_HOME)?",
    )?;
    Ok(client::Client::new(addr, token))
}

fn absolute(path: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    std::path::absolute(path).with_context(|| format!("cannot resolve {}", path.display()))
}

/// Debian's (and Ubuntu's) bundle of every CA the host trusts.
const HOST_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// What a newcomer would otherwise do by hand before `loop serve`, first step: with no global
/// config, write the commented default (as `loop onboard`).
fn write_config_if_missing(sources: &ConfigSources) -> anyhow::Result<()> {
    if let onboard::OnboardOutcome::Written(path) = onboard::onboard(&sources.loop_dir, false)? {
        eprintln!(
            "first run: wrote {} (every setting with its default; docs/configuration.md explains them)",
            path.display()
        );
    }
    Ok(())
}

/// The first run's second step, on the config `loop serve` loaded: a missing credential is
/// said, not guessed; a missing agent image is built (as `loop image build`, with its
/// progress bar).
async fn prepare_first_run(config: &Config) -> anyhow::Result<()> {
    if config.anthropic_api_key.expose().is_none()
        && config.claude_code_oauth_token.expose().is_none()
    {
        eprintln!(
            "warning: no model credential: put anthropic_api_key (or claude_code_oauth_token) in {}, or export LOOP_ANTHROPIC_API_KEY; until then every turn fails",
            config.loop_dir.join("config.json").display()
        );
    }
    let docker = match loop_runner::docker::connect().await {
        Ok(docker) => docker,
        // The daemon reports an unreachable Docker itself, with what to do.
        Err(_) => return Ok(()),
    };
    if loop_runner::docker::image_exists(&docker, &config.container_image).await? {
        return Ok(());
    }
    eprintln!(
        "first run: the agent image {} is missing; building it (once; `loop image build` rebuilds it)",
        config.container_image
    );
    let mut ca_certs: Vec<_> = config
        .extra_ca_certs
        .iter()
        .map(|c| config.expand(c))
        .collect();
    // The image trusts what the host trusts (a TLS-inspecting proxy's root, say), unless the
    // config names its own certificates.
    let host_bundle = std::path::Path::new(HOST_CA_BUNDLE);
    if ca_certs.is_empty() && host_bundle.is_file() {
        eprintln!("the image will trust the host's CA bundle {HOST_CA_BUNDLE}");
        ca_certs.push(host_bundle.to_path_buf());
    }
    let request = image::BuildRequest {
        tag: config.container_image.clone(),
        claude_version: "latest".to_owned(),
        loop_binary: std::env::current_exe().context("cannot locate the running loop binary")?,
        ca_certs,
        no_cache: false,
    };
    image::build(&request)
        .await
        .with_context(|| format!("cannot build the agent image {}", request.tag))?;
    eprintln!("built {}", request.tag);
    Ok(())
}

/// Asks a yes/no question on the terminal; anything but `y`/`yes` (or end of input) is no.
async fn confirm(question: &str) -> anyhow::Result<bool> {
    eprint!("{question}");
    let mut line = String::new();
    tokio::io::BufReader::new(tokio::io::stdin())
        .read_line(&mut line)
        .await?;
    Ok(matches!(
        line.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

/// Loads the global config and prints its warnings.
fn load(sources: &ConfigSources) -> anyhow::Result<Config> {
    let loaded = Config::load(sources)?;
    for warning in &loaded.warnings {
        eprintln!("warning: {warning}");
    }
    Ok(loaded.config)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
