//! Command-line definitions. Users script against these: keep names and flags stable.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "sigil",
    version,
    about = "Sigil: the identity plane for AI agents and other non-human identities"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Sigil server URL [env: SIGIL_URL] (default http://127.0.0.1:8080).
    #[arg(long, global = true)]
    pub url: Option<String>,
    /// Admin token [env: SIGIL_ADMIN_TOKEN] (default: read from <data-dir>/admin-token).
    #[arg(long, global = true, hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (zero config: 127.0.0.1:8080, SQLite in ./sigil-data).
    Serve(ServeArgs),
    /// Database maintenance.
    #[command(subcommand)]
    Db(DbCommand),
    /// Configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Human users.
    #[command(subcommand)]
    User(UserCommand),
    /// AI agents.
    #[command(subcommand)]
    Agent(IdentityCommand),
    /// Workloads: services, jobs, pipelines, service accounts.
    #[command(subcommand)]
    Workload(IdentityCommand),
    /// Protected resources (APIs, MCP servers) that accept Sigil tokens.
    #[command(subcommand)]
    Resource(ResourceCommand),
    /// Signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// The tamper-evident audit log: search, export, verify, proofs.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Show who directed what, as a tree, for a request id, a token id (jti), an agent or a user.
    Trace { id: String },
    /// OAuth clients of agents and workloads.
    #[command(subcommand)]
    Client(ClientCommand),
    /// Get, inspect and revoke access tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Initial access tokens for dynamic client registration (RFC 7591).
    #[command(subcommand, name = "registration-token")]
    RegistrationToken(RegistrationTokenCommand),
    /// Cedar policy set versions: upload, list, show, diff, activate, roll back, test, explain.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Trusted enterprise identity providers: their ID tokens and access tokens are accepted as
    /// token exchange subjects, and their ID-JAGs redeemed (with --id-jag).
    #[command(subcommand)]
    Issuer(IssuerCommand),
    /// SPIFFE registration entries: which workloads, on which node, get which SPIFFE ID.
    #[command(subcommand)]
    Entry(EntryCommand),
    /// The trust domain's authorities (X.509 CA and JWT authority): list, and rotate in two
    /// steps (prepare publishes new ones, activate makes them sign).
    #[command(subcommand)]
    Ca(CaCommand),
    /// Federated trust domains: their bundles are fetched from their bundle endpoints and
    /// handed to workloads.
    #[command(subcommand)]
    Federation(FederationCommand),
    /// The node agent: `sigil node --server URL --join-token T --socket PATH` attests this host
    /// and serves the SPIFFE Workload API; `sigil node token create`, `sigil node list` and `sigil node ban` manage nodes.
    Node(NodeArgs),
}

#[derive(Debug, Subcommand)]
pub enum FederationCommand {
    /// Federate with a trust domain served at a bundle endpoint (https://; http:// only on loopback).
    Add {
        #[arg(long)]
        trust_domain: String,
        #[arg(long)]
        bundle_endpoint: String,
    },
    List,
    Delete {
        trust_domain: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    List,
    /// Create new authorities, published in the bundle but not signing yet.
    Prepare,
    /// Make the prepared authorities sign; the old ones stay published until they expire.
    Activate,
}

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct NodeArgs {
    #[command(subcommand)]
    pub command: Option<NodeCommand>,
    #[command(flatten)]
    pub agent: NodeAgentArgs,
}

/// Running the agent.
#[derive(Debug, clap::Args)]
pub struct NodeAgentArgs {
    /// The Sigil server's URL, exactly its issuer (e.g. http://127.0.0.1:8080).
    #[arg(long, env = "SIGIL_NODE_SERVER")]
    pub server: Option<String>,
    /// A one-time join token (`sigil node token create`); not needed once attested.
    #[arg(long, env = "SIGIL_JOIN_TOKEN", hide_env_values = true)]
    pub join_token: Option<String>,
    /// The Workload API socket.
    #[arg(long, default_value = "/tmp/sigil-agent/public/api.sock")]
    pub socket: PathBuf,
    /// Where the node keeps its own identity.
    #[arg(long, default_value = "./sigil-node-data")]
    pub data_dir: PathBuf,
    /// How often to sync entries, SVIDs and the bundle with the server, e.g. 5s.
    #[arg(long, default_value = "5s")]
    pub sync_interval: String,
    /// Hand the trust bundle to processes no entry selects, so they can verify others' SVIDs
    /// without an identity of their own (otherwise they get PermissionDenied).
    #[arg(long)]
    pub allow_unauthenticated_verifiers: bool,
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// One-time join tokens for node attestation.
    #[command(subcommand)]
    Token(NodeTokenCommand),
    /// Attested nodes.
    List,
    /// Ban a node: it can no longer renew its identity or fetch SVIDs.
    Ban { spiffe_id: String },
}

#[derive(Debug, Subcommand)]
pub enum NodeTokenCommand {
    /// Print a single-use join token and the SPIFFE ID the node will get.
    Create {
        /// The node's SPIFFE ID (default spiffe://<trust domain>/sigil/node/<random>).
        #[arg(long)]
        spiffe_id: Option<String>,
        /// How long the token is valid, e.g. 1h (default 1h).
        #[arg(long)]
        ttl: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Upload Cedar policies as a new version (validated against the schema; invalid → nothing
    /// changes and Cedar's diagnostics are printed).
    Upload {
        file: std::path::PathBuf,
        /// A Cedar schema fragment (namespace Sigil) with your entity types and actions.
        #[arg(long)]
        schema: Option<std::path::PathBuf>,
        #[arg(long)]
        description: Option<String>,
        /// Activate the new version at once.
        #[arg(long)]
        activate: bool,
    },
    List,
    /// Print a version's policies (and schema fragment).
    Show {
        version: u64,
    },
    /// Line differences between two versions' policies and schema fragments.
    Diff {
        from: u64,
        to: u64,
    },
    /// Make a version the active one (every replica within a second).
    Activate {
        version: u64,
    },
    /// Activate again the version that was active before the current one.
    Rollback,
    /// Run a JSON file of cases ({"cases": [{"name", "request", "expect": "allow"|"deny"}]},
    /// requests in AuthZEN shape) against a version; exit code 2 when a case fails.
    Test {
        file: std::path::PathBuf,
        /// The version to test (default: the active one).
        #[arg(long)]
        version: Option<u64>,
    },
    /// The decision for one AuthZEN request (a JSON file, `-` for stdin): every principal's step,
    /// the policies that determined it, and errors.
    Explain {
        file: std::path::PathBuf,
        #[arg(long)]
        version: Option<u64>,
    },
}

/// The fields of a registration entry (create, and update, which replaces them all).
#[derive(Debug, clap::Args)]
pub struct EntryArgs {
    /// The SPIFFE ID the workload gets (spiffe://<trust domain>/<path>).
    #[arg(long)]
    pub spiffe_id: String,
    /// The node (its SPIFFE ID) whose agent may hand it out.
    #[arg(long)]
    pub parent_id: String,
    /// A selector the workload must match, e.g. unix:uid:1000 (repeatable; all must match).
    #[arg(long = "selector", required = true)]
    pub selectors: Vec<String>,
    /// The agent or workload (name or id) the SVID stands for.
    #[arg(long)]
    pub identity: Option<String>,
    /// X509-SVID lifetime, e.g. 1h (default 1h).
    #[arg(long)]
    pub x509_ttl: Option<String>,
    /// JWT-SVID lifetime, e.g. 5m (default 5m).
    #[arg(long)]
    pub jwt_ttl: Option<String>,
    /// A DNS name for the X509-SVID (repeatable).
    #[arg(long = "dns")]
    pub dns_names: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum EntryCommand {
    Create(EntryArgs),
    List {
        #[arg(long)]
        parent_id: Option<String>,
        #[arg(long)]
        spiffe_id: Option<String>,
    },
    Show {
        id: String,
    },
    /// Replace every field of an entry.
    Update {
        id: String,
        #[command(flatten)]
        args: EntryArgs,
    },
    Delete {
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum IssuerCommand {
    /// Trust an identity provider.
    #[command(group(clap::ArgGroup::new("keys").required(true).args(["jwks_file", "jwks_uri"])))]
    Add {
        /// Its issuer identifier (the `iss` of its tokens).
        #[arg(long)]
        issuer: String,
        /// A JWK Set file with its public keys.
        #[arg(long)]
        jwks_file: Option<PathBuf>,
        /// Where it publishes its JWK Set.
        #[arg(long)]
        jwks_uri: Option<String>,
        /// The claim holding the Sigil username: sub (default, the only one OIDC guarantees
        /// unique), preferred_username, email, upn.
        #[arg(long)]
        username_claim: Option<String>,
        /// An `aud` its subject tokens may carry besides the exchanging client's own
        /// `client_id` (repeatable): the client ids Sigil's clients have at that provider.
        #[arg(long = "audience")]
        audiences: Vec<String>,
        /// Redeem its Identity Assertion JWT Authorization Grants (ID-JAG).
        #[arg(long)]
        id_jag: bool,
    },
    List,
    /// Stop trusting an identity provider (by its id).
    Delete {
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum RegistrationTokenCommand {
    /// Issue an initial access token; clients registered with it are owned by --owner.
    Create {
        #[arg(long)]
        owner: String,
        /// Register clients under this identity (default: a new agent, empty ceiling, per client).
        #[arg(long)]
        identity: Option<String>,
        /// Lifetime, e.g. 1h or 7d (default 1h).
        #[arg(long, default_value = "1h")]
        ttl: String,
    },
    /// The initial access tokens still in force (ids, owners, expiry; never the tokens).
    List,
    /// Revoke an initial access token by its id: it registers nothing more.
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Register a client for an identity: with public keys (private_key_jwt) or a generated secret.
    Create {
        /// The agent or workload (name or id).
        #[arg(long)]
        identity: String,
        /// A JWK Set file with the client's public keys (private_key_jwt).
        #[arg(long, group = "credential")]
        jwks_file: Option<PathBuf>,
        /// Where the client publishes its JWK Set (private_key_jwt).
        #[arg(long, group = "credential")]
        jwks_uri: Option<String>,
        /// Generate a client secret (shown once) for client_secret_basic/post.
        #[arg(long, group = "credential")]
        secret: bool,
        /// A public client (no credential) that only uses the authorization code grant with
        /// PKCE; needs --redirect-uri.
        #[arg(long, group = "credential", requires = "redirect_uri")]
        public: bool,
        /// Where authorization responses may be sent (repeatable; matched exactly).
        #[arg(long = "redirect-uri")]
        redirect_uri: Vec<String>,
        /// An authorization server (issuer identifier) this client may get ID-JAGs for, as
        /// ISSUER or ISSUER=CLIENT_ID_THERE (repeatable).
        #[arg(long = "id-jag-audience")]
        id_jag_audience: Vec<String>,
        /// Require DPoP-bound tokens (RFC 9449).
        #[arg(long)]
        dpop_required: bool,
    },
    List {
        #[arg(long)]
        identity: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    Show {
        client_id: String,
    },
    Delete {
        client_id: String,
    },
    /// Make a key pair for private_key_jwt: writes the private key (PKCS#8 PEM, 0600) and the
    /// public JWK Set to register with `sigil client create --jwks-file`.
    Keygen {
        #[arg(long)]
        private_key: PathBuf,
        #[arg(long)]
        jwks: PathBuf,
        /// EdDSA (default), ES256 or RS256.
        #[arg(long, default_value = "EdDSA")]
        alg: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Get an access token the way an agent does (client credentials grant). Prints the token.
    Get {
        #[arg(long)]
        client_id: String,
        /// The client's private key (PKCS#8 PEM) for private_key_jwt.
        #[arg(long, group = "credential")]
        key_file: Option<PathBuf>,
        /// The client secret (client_secret_basic). Better from the environment than on the
        /// command line, where other local users can read it.
        #[arg(long, group = "credential", env = "SIGIL_CLIENT_SECRET", hide_env_values = true)]
        secret: Option<String>,
        /// The resource (RFC 8707) the token is for.
        #[arg(long)]
        resource: String,
        /// A scope to ask for (repeat for several; default: all the client may have).
        #[arg(long = "scope")]
        scopes: Vec<String>,
    },
    /// Revoke a token (administrator).
    Revoke {
        #[arg(value_name = "TOKEN")]
        access_token: String,
    },
    /// Show whether a token is active, and its claims (administrator).
    Introspect {
        #[arg(value_name = "TOKEN")]
        access_token: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Search records, newest first.
    Search {
        /// Event type, e.g. identity.status_changed.
        #[arg(long = "type")]
        event_type: Option<String>,
        /// success, denied or error.
        #[arg(long)]
        outcome: Option<String>,
        /// Agent or workload (name or id), as actor or target.
        #[arg(long)]
        agent: Option<String>,
        /// The human principal.
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        client: Option<String>,
        #[arg(long)]
        request: Option<String>,
        #[arg(long)]
        jti: Option<String>,
        /// RFC 3339 lower bound (inclusive).
        #[arg(long)]
        since: Option<String>,
        /// RFC 3339 upper bound (exclusive).
        #[arg(long)]
        until: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// The latest signed checkpoint (tree size, root hash, signature).
    Checkpoint,
    /// Write every checkpoint and integrated record to a JSON Lines file for offline verification.
    Export {
        #[arg(long)]
        file: PathBuf,
    },
    /// Verify the log: online against the server, or offline with --file and --public-key.
    Verify {
        /// An export written by `sigil audit export`.
        #[arg(long, requires = "public_key")]
        file: Option<PathBuf>,
        /// The publisher's JWKS (or a single JWK) as JSON, e.g. saved from /.well-known/jwks.json.
        #[arg(long, requires = "file")]
        public_key: Option<PathBuf>,
        /// Also require checkpoints to name this issuer.
        #[arg(long)]
        issuer: Option<String>,
    },
    /// RFC 9162 proofs.
    #[command(subcommand)]
    Proof(ProofCommand),
}

#[derive(Debug, Subcommand)]
pub enum ProofCommand {
    /// Inclusion proof of one record in a tree size (default: the latest checkpoint).
    Inclusion {
        #[arg(long)]
        leaf: u64,
        #[arg(long)]
        tree_size: Option<u64>,
    },
    /// Consistency proof between two tree sizes.
    Consistency {
        #[arg(long)]
        first: u64,
        #[arg(long)]
        second: u64,
    },
}

#[derive(Debug, Args, Default)]
pub struct ServerOptions {
    /// Config file (TOML).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// State directory [env: SIGIL_DATA_DIR] (default ./sigil-data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// PostgreSQL URL instead of the embedded SQLite [env: SIGIL_DATABASE_URL].
    #[arg(long)]
    pub database_url: Option<String>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub server: ServerOptions,
    /// Address to listen on [env: SIGIL_LISTEN] (default 127.0.0.1:8080).
    #[arg(long)]
    pub listen: Option<String>,
    /// Issuer URL [env: SIGIL_ISSUER] (default http://<listen>).
    #[arg(long)]
    pub issuer: Option<String>,
    /// SPIFFE trust domain [env: SIGIL_TRUST_DOMAIN] (default sigil.local).
    #[arg(long)]
    pub trust_domain: Option<String>,
    /// TLS certificate chain (PEM) [env: SIGIL_TLS_CERT].
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) [env: SIGIL_TLS_KEY].
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Apply pending schema migrations and exit.
    Migrate(ServerOptions),
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a config file (with the environment overlay) without starting anything.
    Check { file: PathBuf },
    /// Print a commented example config.
    Example,
}

#[derive(Debug, Args)]
pub struct PageArgs {
    /// Items per page (1–500).
    #[arg(long)]
    pub limit: Option<u32>,
    /// Continue after this cursor (from a previous page).
    #[arg(long)]
    pub cursor: Option<String>,
    /// Follow cursors and print every page.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    Create {
        #[arg(long)]
        username: String,
        #[arg(long)]
        email: Option<String>,
        #[arg(long)]
        display_name: Option<String>,
        /// Group membership (repeat for several).
        #[arg(long = "group")]
        groups: Vec<String>,
    },
    List {
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        group: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    Show {
        user: String,
    },
    Update {
        user: String,
        #[arg(long)]
        email: Option<String>,
        #[arg(long)]
        display_name: Option<String>,
        /// Replace the groups with these (repeat for several).
        #[arg(long = "group")]
        groups: Option<Vec<String>>,
        /// Remove every group.
        #[arg(long, conflicts_with = "groups")]
        no_groups: bool,
        #[arg(long)]
        status: Option<String>,
    },
    /// Delete a user; one who still owns identities needs --transfer-to.
    Delete {
        user: String,
        #[arg(long)]
        transfer_to: Option<String>,
    },
    /// Set the password the user signs in with at /authorize, read from the first line of
    /// standard input (12 to 1024 characters).
    SetPassword {
        user: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum IdentityCommand {
    Create {
        #[arg(long)]
        name: String,
        /// The owning user (username or id). Required.
        #[arg(long)]
        owner: String,
        /// For workloads: service, job, pipeline or service_account.
        #[arg(long)]
        kind: Option<String>,
        #[arg(long)]
        description: Option<String>,
        #[arg(long)]
        team: Option<String>,
        /// A label key=value (repeat for several).
        #[arg(long = "label")]
        labels: Vec<String>,
        /// A scope in the capability ceiling (repeat for several).
        #[arg(long = "ceiling")]
        ceiling: Vec<String>,
        /// Restrict the ceiling to this resource URI (repeat for several; default: any resource).
        #[arg(long = "ceiling-resource")]
        ceiling_resources: Vec<String>,
        /// RFC 3339 time after which the identity counts as suspended.
        #[arg(long)]
        expires_at: Option<String>,
        /// Access-token lifetime in seconds for this identity (capped by the server's maximum).
        #[arg(long)]
        token_ttl: Option<u32>,
        /// Every token of this identity must be DPoP-bound.
        #[arg(long)]
        dpop_required: bool,
    },
    List {
        #[arg(long)]
        owner: Option<String>,
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        kind: Option<String>,
        #[arg(long)]
        team: Option<String>,
        #[arg(long = "label")]
        labels: Vec<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    Show {
        name: String,
    },
    Update {
        name: String,
        #[arg(long)]
        description: Option<String>,
        /// Transfer ownership to this user.
        #[arg(long)]
        owner: Option<String>,
        #[arg(long)]
        team: Option<String>,
        /// Replace the labels with these key=value pairs.
        #[arg(long = "label")]
        labels: Option<Vec<String>>,
        /// Replace the ceiling's scopes with these (its resources stay).
        #[arg(long = "ceiling")]
        ceiling: Option<Vec<String>>,
        /// Replace the resources the ceiling is restricted to (its scopes stay).
        #[arg(long = "ceiling-resource")]
        ceiling_resources: Option<Vec<String>>,
        #[arg(long, conflicts_with = "no_expiry")]
        expires_at: Option<String>,
        /// Remove the expiry time.
        #[arg(long)]
        no_expiry: bool,
        #[arg(long)]
        token_ttl: Option<u32>,
        #[arg(long)]
        dpop_required: Option<bool>,
    },
    /// Suspend (reversible with resume).
    Suspend(StatusArgs),
    /// Resume a suspended identity.
    Resume(StatusArgs),
    /// Revoke: final; the identity can never be trusted again.
    Revoke(StatusArgs),
    /// Decommission: retire the identity for good.
    Decommission(StatusArgs),
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    pub name: String,
    #[arg(long)]
    pub reason: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ResourceCommand {
    Create {
        /// The resource indicator (RFC 8707): an absolute URI without fragment.
        #[arg(long)]
        uri: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        owner: String,
        /// A scope this resource defines (repeat for several).
        #[arg(long = "scope")]
        scopes: Vec<String>,
        #[arg(long)]
        description: Option<String>,
        /// An agent or workload that serves this resource (repeat for several): its clients
        /// may introspect the resource's tokens.
        #[arg(long = "server")]
        servers: Vec<String>,
    },
    List {
        #[arg(long)]
        owner: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    Show {
        resource: String,
    },
    Update {
        resource: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        description: Option<String>,
        #[arg(long)]
        owner: Option<String>,
        #[arg(long = "scope")]
        scopes: Option<Vec<String>>,
        /// Replace the identities that serve the resource (repeat for several).
        #[arg(long = "server", conflicts_with = "no_servers")]
        servers: Option<Vec<String>>,
        /// No identity serves the resource any more.
        #[arg(long)]
        no_servers: bool,
    },
    Delete {
        resource: String,
    },
    /// Print the RFC 9728 Protected Resource Metadata document the resource server (e.g. an
    /// MCP server) serves at /.well-known/oauth-protected-resource (followed by the resource
    /// URL's path, if it has one: RFC 9728 §3.1), naming Sigil as its authorization server.
    Metadata {
        resource: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    List,
    /// Print the public JWKS (what verifiers need; same as /.well-known/jwks.json).
    Jwks,
    /// Start a rotation: the new key is published now and signs after keys.publish_ahead.
    Rotate {
        /// EdDSA or ES256 to rotate the token key (default: the configured algorithm), RS256 to
        /// rotate the ID token key.
        #[arg(long)]
        alg: Option<String>,
    },
}
