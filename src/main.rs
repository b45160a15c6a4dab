//! `ferrocast`: the command line. Wiring only; the parts live in the library.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ferrocast::config::{Config, DEFAULTS_TOML, LogFormat};
use ferrocast::drm::ContentKeys;
use ferrocast::keys::KeyProvider;
use ferrocast::{api, db, server};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "ferrocast",
    version,
    about = "Media streaming and transcoding server"
)]
struct Cli {
    /// Config file (default: $FERROCAST_CONFIG, else ./ferrocast.toml if present).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve,
    /// Run only the transcode job workers (scale out beside `serve`, sharing its database
    /// and storage).
    Worker,
    /// Print the effective configuration, secrets redacted.
    Config {
        /// Print the documented defaults instead (a starting ferrocast.toml).
        #[arg(long)]
        defaults: bool,
    },
    /// Manage admin API keys.
    AdminKey {
        #[command(subcommand)]
        action: AdminKeyAction,
    },
    /// Manage the master key that wraps every content key.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
}

#[derive(Subcommand, Clone, Copy, PartialEq, Eq)]
enum KeysAction {
    /// Show the key provider, the current master key's fingerprint and how many content
    /// keys each key-encryption key wraps.
    Status,
    /// Make a new master key (file provider; with the env provider, set it there first) and
    /// re-wrap every content key under it. Media is untouched; running servers keep serving
    /// and switch to the new key within 30 s. The old key stays accepted until retired.
    RotateMaster,
    /// Forget the previous master keys, once no content key needs them.
    RetirePrevious,
}

#[derive(Subcommand)]
enum AdminKeyAction {
    /// Create a new admin API key and print it (once).
    Create {
        #[arg(long, default_value = "cli")]
        name: String,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Command::Config { defaults: true } = cli.command {
        print!("{DEFAULTS_TOML}");
        return std::process::ExitCode::SUCCESS;
    }
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ferrocast: invalid configuration: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    match runtime.block_on(run(cli.command, config)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferrocast: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Config { .. } => {
            print!("{}", config.to_redacted_toml());
            Ok(())
        }
        Command::AdminKey {
            action: AdminKeyAction::Create { name },
        } => {
            let db = db::Db::connect(&config.database_url(), 1).await?;
            let secret = api::auth::create_admin_key(&db, &name).await?;
            println!("{secret}");
            Ok(())
        }
        Command::Keys { action } => keys(action, config).await,
        Command::Serve => serve(config).await,
        Command::Worker => {
            init_logging(&config)?;
            let public_url = config.public_url(config.http.listen);
            let (jobs, startup) = server::build_jobs(config, &public_url).await?;
            if let Some(key) = startup.bootstrap_admin_key {
                println!("Admin API key (first start of this database; shown once): {key}");
            }
            tracing::info!(
                workers = jobs.config.jobs.concurrency,
                "running job workers only"
            );
            server::run_workers(jobs, server::shutdown_signal()).await;
            Ok(())
        }
    }
}

async fn keys(action: KeysAction, config: Config) -> anyhow::Result<()> {
    use std::sync::Arc;
    let provider: Arc<dyn KeyProvider> = Arc::from(ferrocast::keys::provider(&config.keys)?);
    let db = db::Db::connect(&config.database_url(), 2).await?;
    let ring = match action {
        KeysAction::RotateMaster => provider.rotate()?,
        _ => provider.load()?.0,
    };
    let content_keys = ContentKeys::new(db.clone(), provider.clone(), &ring);
    let current = content_keys.current_kek_id();
    match action {
        KeysAction::Status => {}
        KeysAction::RotateMaster | KeysAction::RetirePrevious => {
            let report = content_keys.rewrap_all().await?;
            println!(
                "re-wrapped {} content keys under {current}",
                report.rewrapped
            );
            if report.unknown_kek > 0 {
                anyhow::bail!(
                    "{} content keys are wrapped under a master key this keyring does not hold; \
                     they were left as they are",
                    report.unknown_kek
                );
            }
        }
    }
    if let KeysAction::RetirePrevious = action {
        let others: i64 = db
            .content_keys_per_kek()
            .await?
            .iter()
            .filter(|(kek, _)| *kek != current)
            .map(|(_, n)| n)
            .sum();
        if others > 0 {
            anyhow::bail!(
                "{others} content keys still need a previous master key; nothing retired"
            );
        }
        let n = provider.retire_previous()?;
        println!("retired {n} previous master keys");
    }
    let ring = provider.load()?.0;
    println!("provider: {}", provider.name());
    println!("current master key: {}", ring.current.fingerprint());
    println!("previous master keys: {}", ring.previous.len());
    for (kek, n) in db.content_keys_per_kek().await? {
        let mark = if kek == current { " (current)" } else { "" };
        println!("content keys under {kek}{mark}: {n}");
    }
    db.close().await;
    Ok(())
}

fn init_logging(config: &Config) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&config.log.filter).context("log.filter")?;
    // Colours only for a terminal: a log file or a collector gets plain text.
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    match config.log.format {
        LogFormat::Text => subscriber.init(),
        LogFormat::Json => subscriber.json().init(),
    }
    Ok(())
}

async fn serve(mut config: Config) -> anyhow::Result<()> {
    init_logging(&config)?;
    server::fit_to_open_files(&mut config);

    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("listening on {} (http.listen)", config.http.listen))?;
    let bound = listener.local_addr()?;
    let public_url = config.public_url(bound);
    let rtmp_listener = tokio::net::TcpListener::bind(config.rtmp.listen)
        .await
        .with_context(|| format!("listening on {} (rtmp.listen)", config.rtmp.listen))?;
    let rtmp_url = config.rtmp_url(rtmp_listener.local_addr()?);
    let data_dir = config.data_dir.clone();
    let keys_dir = config.keys.dir.clone();
    let database = if config.database.url.expose().is_empty() {
        "SQLite"
    } else {
        "configured"
    };
    let (state, startup) = server::build(config, &public_url, &rtmp_url).await?;
    tracing::info!(%bound, "serving HTTP");

    println!();
    println!("Ferrocast {} is serving", env!("CARGO_PKG_VERSION"));
    println!("  API         {public_url}/v1");
    println!("  Dashboard   {public_url}/  (sign in with a tenant API key)");
    println!("  API docs    {public_url}/docs  (spec: {public_url}/openapi.json)");
    println!("  Health      {public_url}/healthz  {public_url}/readyz");
    println!("  Metrics     {public_url}/metrics");
    println!("  RTMP ingest {rtmp_url}/STREAM_KEY");
    println!(
        "  Data        {} (database: {database})",
        data_dir.display()
    );
    if startup.master_key_created {
        println!(
            "  Master key  created at {}/master.key (mode 0600; back it up)",
            keys_dir.display()
        );
    }
    match &startup.bootstrap_admin_key {
        Some(key) => {
            println!();
            println!("  Admin API key (shown once; it is stored hashed):");
            println!("    {key}");
            match server::create_demo(&state).await {
                Ok(demo) => {
                    println!();
                    println!(
                        "  A demo tenant (its API key: {}) has a public live stream. Publish to it:",
                        demo.tenant_api_key
                    );
                    println!(
                        "    ffmpeg -re -f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i sine=frequency=440 -c:v libx264 -preset veryfast -g 60 -c:a aac -f flv {rtmp_url}/{}",
                        demo.stream_key
                    );
                    println!("  and watch it at {public_url}/play/{}", demo.playback_id);
                }
                Err(e) => tracing::warn!(error = %e, "could not create the demo stream"),
            }
        }
        None => {
            println!("  Admin key   already set up (lost it? `ferrocast admin-key create`)");
        }
    }
    println!();

    server::serve(
        state,
        listener,
        Some(rtmp_listener),
        server::shutdown_signal(),
    )
    .await?;
    Ok(())
}
