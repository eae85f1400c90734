//! The `portcullis` command: flags, runtime, exit codes. No logic.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code for a configuration error (sysexits EX_USAGE).
const EXIT_CONFIG: u8 = 64;

/// A zero-trust gateway for AI workloads: verifies Entra bearer tokens and
/// forwards what it allows.
#[derive(Parser)]
#[command(name = "portcullis", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway from a config file until SIGTERM/SIGINT (drain, then
    /// exit). The file is reloaded when it changes, on SIGHUP, and on
    /// `POST /reload` to the admin port.
    Run {
        /// Path of the TOML config file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Validate a config file: print every error with its path, exit 64 if any.
    Check {
        /// Path of the TOML config file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Explain the decision for a token (or claims) on a request: identity,
    /// route, every policy, the verdict. Exit 0 allow, 1 deny, 2 error.
    Explain(ExplainArgs),
    /// Audit file tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Run a self-contained demo: embedded issuer, echo upstream, gateway.
    /// `dev token` mints tokens from a running dev issuer.
    Dev(DevArgs),
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
struct DevArgs {
    #[command(subcommand)]
    command: Option<DevCommand>,
    /// Address of the gateway.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Address of the admin port (/healthz, /readyz, /metrics).
    #[arg(long, default_value = "127.0.0.1:9090")]
    admin_listen: SocketAddr,
    /// Address of the dev issuer (discovery, JWKS, POST /dev/token); port 0
    /// picks a free one. Fix it to keep a config working from run to run.
    #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR")]
    issuer_listen: SocketAddr,
    /// Address of the echo upstream; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR")]
    upstream_listen: SocketAddr,
    /// Start only the issuer and the echo upstream, and print them with
    /// a day-long user token and its claims as one JSON line: for running
    /// your own config (or a load test) against them.
    #[arg(long)]
    fixtures_only: bool,
    /// With --fixtures-only: also N distinct user tokens (each with its
    /// own `uti`), as a "tokens" array in the JSON line.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 0,
        requires = "fixtures_only"
    )]
    tokens: usize,
    /// How the N tokens are signed: rs256 (the dev key, what Entra
    /// uses) or es256 (a P-256 key the issuer also publishes; minting is
    /// 30 times faster, for loads of 100,000 tokens).
    #[arg(long, value_enum, default_value = "rs256", requires = "fixtures_only")]
    token_alg: TokenAlg,
}

#[derive(Subcommand)]
enum DevCommand {
    /// Mint a token from a running dev issuer (`portcullis dev` or
    /// `--fixtures-only`) and print it. Claims follow Entra v2 access
    /// tokens, with the fixed dev ids of docs/dev.md.
    Token(DevTokenArgs),
}

#[derive(clap::Args)]
struct DevTokenArgs {
    /// The dev issuer's URL, as `portcullis dev` prints it.
    #[arg(long, env = "PORTCULLIS_DEV_ISSUER", value_name = "URL")]
    issuer: String,
    /// Who the token speaks for: a user (delegated, `scp`), an app
    /// (app-only, `roles`), an autonomous agent, an agent acting for the
    /// dev user, or an agent's own user account.
    #[arg(long, value_enum, default_value = "user")]
    kind: Kind,
    /// A delegated scope (`scp`); repeat for more. With --scope or --role,
    /// the kind's default permissions are not added.
    #[arg(long = "scope", value_name = "SCOPE")]
    scopes: Vec<String>,
    /// An app role (`roles`); repeat for more.
    #[arg(long = "role", value_name = "ROLE")]
    roles: Vec<String>,
    /// Lifetime: "1h", "90s"; "-5m" for a token that expired 5 minutes ago.
    #[arg(long, default_value = "1h", allow_hyphen_values = true)]
    lifetime: String,
    /// The audience (`aud`).
    #[arg(long, default_value = portcullis::dev::DEV_AUDIENCE)]
    audience: String,
    /// The tenant (`tid`).
    #[arg(long, default_value = portcullis::dev::DEV_TENANT)]
    tenant: String,
    /// Any other claim, NAME=VALUE; VALUE is JSON if it parses, else a
    /// string; `null` removes a claim. Applied last. Repeat for more.
    #[arg(long = "claim", value_name = "NAME=VALUE")]
    claims: Vec<String>,
    /// Sign with the issuer's P-256 key (ES256) instead of RSA (RS256).
    #[arg(long)]
    es256: bool,
    /// Print the issuer's whole answer (token, lifetime, claims) as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Kind {
    User,
    App,
    Agent,
    AgentObo,
    AgentUser,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum TokenAlg {
    Rs256,
    Es256,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Run { config } => {
            let config = match portcullis::config::load(&config) {
                Ok(c) => c,
                Err(errors) => return config_errors(&config, &errors),
            };
            portcullis::telemetry::init(&config.logging);
            let workers = config.server.worker_threads;
            block_on(workers, portcullis::app::run(config))
        }
        Command::Explain(args) => explain(args),
        Command::Audit {
            command: AuditCommand::Verify { files },
        } => audit_verify(&files),
        Command::Dev(DevArgs {
            command: Some(DevCommand::Token(args)),
            ..
        }) => dev_token(args),
        Command::Dev(args) => {
            let at = portcullis::dev::Fixtures {
                issuer: args.issuer_listen,
                upstream: args.upstream_listen,
            };
            if args.fixtures_only {
                let es256 = matches!(args.token_alg, TokenAlg::Es256);
                block_on(None, portcullis::dev::run_fixtures(at, args.tokens, es256))
            } else {
                block_on(
                    None,
                    portcullis::dev::run(args.listen, args.admin_listen, at),
                )
            }
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    let config = match portcullis::config::load(path) {
        Ok(c) => c,
        Err(errors) => return config_errors(path, &errors),
    };
    // Compiling the snapshot finds route conflicts; it fetches nothing.
    let env = portcullis::snapshot::KeyEnv {
        observer: match portcullis::metrics::Metrics::new() {
            Ok(m) => std::sync::Arc::new(m),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let compiled = {
        // Key sources build HTTP clients, which want a runtime context.
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            eprintln!("error: cannot start a runtime");
            return ExitCode::FAILURE;
        };
        let _guard = rt.enter();
        portcullis::snapshot::Snapshot::compile(&config, &env).map(|_| ())
    };
    for warning in &config.warnings {
        eprintln!("warning: {warning}");
    }
    match compiled {
        Ok(()) => {
            println!("{}: ok", path.display());
            ExitCode::SUCCESS
        }
        Err(errors) => config_errors(path, &errors),
    }
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the hash chain of audit files, oldest first
    /// (`audit.log.2 audit.log.1 audit.log`): report the first missing,
    /// edited or reordered record. Exit 0 intact, 1 broken, 2 unreadable.
    Verify {
        /// Audit files, oldest first.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
}

#[derive(clap::Args)]
struct ExplainArgs {
    /// Path of the TOML config file.
    #[arg(short, long, value_name = "FILE")]
    config: PathBuf,
    /// A bearer token, verified against the issuers' keys (fetched now).
    /// Use "-" to read it from standard input.
    #[arg(long, required_unless_present = "claims", conflicts_with = "claims")]
    token: Option<String>,
    /// A JSON file of claims; signature and lifetime are not checked.
    #[arg(long, value_name = "FILE.json")]
    claims: Option<PathBuf>,
    /// HTTP method of the request.
    #[arg(long, default_value = "GET")]
    method: String,
    /// Request path (and query).
    #[arg(long)]
    path: String,
    /// Host header, for host-specific routes.
    #[arg(long)]
    host: Option<String>,
    /// Client address the policies see.
    #[arg(long, default_value = "127.0.0.1")]
    client_ip: std::net::IpAddr,
    /// Evaluate time conditions at this RFC 3339 time instead of now.
    #[arg(long)]
    at: Option<String>,
    /// On an MCP route: the JSON-RPC method of the message (e.g. tools/call).
    #[arg(long, value_name = "METHOD")]
    mcp_method: Option<String>,
    /// On an MCP route: the tool or prompt name, or the resource URI, the
    /// message reaches.
    #[arg(long, value_name = "NAME", requires = "mcp_method")]
    mcp_name: Option<String>,
    /// On a model API route: the model the request names (on an Azure
    /// OpenAI path, its deployment is taken from the path). The budgets
    /// that apply are shown with their counters.
    #[arg(long, value_name = "MODEL")]
    model: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Exit code for `explain` errors (usage, config, unreadable input).
const EXIT_EXPLAIN_ERROR: u8 = 2;

fn explain(args: ExplainArgs) -> ExitCode {
    use portcullis::explain::{Credential, ExplainRequest, McpRequest};
    let fail = |message: String| {
        eprintln!("error: {message}");
        ExitCode::from(EXIT_EXPLAIN_ERROR)
    };
    let config = match portcullis::config::load(&args.config) {
        Ok(c) => c,
        Err(e) => return fail(format!("{}: {e}", args.config.display())),
    };
    let credential = match (args.token, args.claims) {
        (Some(t), _) if t == "-" => {
            let mut text = String::new();
            if let Err(e) = std::io::Read::read_to_string(&mut std::io::stdin(), &mut text) {
                return fail(format!("cannot read the token from stdin: {e}"));
            }
            Credential::Token(text.trim().to_owned())
        }
        (Some(t), _) => Credential::Token(t),
        (None, Some(file)) => match std::fs::read(&file)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        {
            Ok(v) => Credential::Claims(v),
            Err(e) => return fail(format!("{}: {e}", file.display())),
        },
        (None, None) => return fail("give --token or --claims".into()),
    };
    let Ok(method) = http::Method::from_bytes(args.method.to_ascii_uppercase().as_bytes()) else {
        return fail(format!("invalid method {:?}", args.method));
    };
    let at = match args.at.as_deref().map(humantime::parse_rfc3339_weak) {
        None => std::time::SystemTime::now(),
        Some(Ok(t)) => t,
        Some(Err(e)) => return fail(format!("--at: {e}")),
    };
    let request = ExplainRequest {
        method,
        path: args.path,
        host: args.host,
        client_ip: args.client_ip,
        at,
        credential,
        mcp: args.mcp_method.map(|method| McpRequest {
            method,
            name: args.mcp_name,
        }),
        model: args.model,
    };
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return fail("cannot start a runtime".into());
    };
    match runtime.block_on(portcullis::explain::explain(&config, request)) {
        Err(e) => fail(e),
        Ok(explanation) => {
            if args.json {
                println!("{}", explanation.to_json());
            } else {
                print!("{}", explanation.to_text());
            }
            if explanation.is_allowed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
    }
}

fn dev_token(args: DevTokenArgs) -> ExitCode {
    use portcullis::dev::{DevKind, TokenRequest};
    let fail = |message: String| {
        eprintln!("error: {message}");
        ExitCode::from(2)
    };
    let (sign, text) = match args.lifetime.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, args.lifetime.as_str()),
    };
    let lifetime = match humantime::parse_duration(text) {
        Ok(d) => sign * i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => return fail(format!("--lifetime {:?}: {e}", args.lifetime)),
    };
    let mut claims = serde_json::Map::new();
    for claim in &args.claims {
        let Some((name, value)) = claim.split_once('=') else {
            return fail(format!("--claim {claim:?}: expected NAME=VALUE"));
        };
        let value = serde_json::from_str(value).unwrap_or_else(|_| value.into());
        claims.insert(name.to_owned(), value);
    }
    let permissions = !args.scopes.is_empty() || !args.roles.is_empty();
    let request = TokenRequest {
        kind: match args.kind {
            Kind::User => DevKind::User,
            Kind::App => DevKind::App,
            Kind::Agent => DevKind::Agent,
            Kind::AgentObo => DevKind::AgentObo,
            Kind::AgentUser => DevKind::AgentUser,
        },
        scopes: permissions.then_some(args.scopes),
        roles: permissions.then_some(args.roles),
        lifetime_secs: lifetime,
        audience: args.audience,
        tenant: args.tenant,
        claims,
        es256: args.es256,
    };
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return fail("cannot start a runtime".into());
    };
    match runtime.block_on(portcullis::dev::mint_token(&args.issuer, &request)) {
        Ok(answer) if args.json => {
            println!("{answer}");
            ExitCode::SUCCESS
        }
        Ok(answer) => {
            println!("{}", answer["access_token"].as_str().unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("{e:#}")),
    }
}

fn audit_verify(files: &[PathBuf]) -> ExitCode {
    match portcullis::audit::verify(files) {
        Ok(report) => {
            let range = match (report.first_seq, report.last_seq) {
                (Some(a), Some(b)) => format!("records {a} to {b}"),
                _ => "no records".to_owned(),
            };
            let start = match report.starts_after.as_deref() {
                Some(portcullis::audit::GENESIS) | None => "from the start of the chain".to_owned(),
                Some(h) => format!("continuing after record hash {h}"),
            };
            println!("ok: {} records intact ({range}, {start})", report.records);
            ExitCode::SUCCESS
        }
        Err(e) if e.line == 0 => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            println!("broken: {e}");
            ExitCode::from(1)
        }
    }
}

fn config_errors(path: &std::path::Path, errors: &portcullis::config::ConfigErrors) -> ExitCode {
    eprintln!("{}: invalid configuration", path.display());
    for e in &errors.0 {
        eprintln!("  {e}");
    }
    ExitCode::from(EXIT_CONFIG)
}

/// Runs `work` on a multi-thread runtime with `workers` threads (default:
/// one per CPU the process may use).
fn block_on(
    workers: Option<usize>,
    work: impl std::future::Future<Output = anyhow::Result<()>>,
) -> ExitCode {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = workers {
        builder.worker_threads(n);
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(work) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
