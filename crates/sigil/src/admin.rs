//! Registry commands: thin wrappers over the admin API.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::Serialize;
use serde_json::Value;
use sigil_client::{Client, Family};
use sigil_proto::admin::*;
use sigil_types::*;

use crate::Failure;
use crate::cli::{Global, IdentityCommand, KeysCommand, PageArgs, ResourceCommand, UserCommand};
use crate::output;

const USER_COLUMNS: &[&str] = &["id", "username", "email", "groups", "status"];
const IDENTITY_COLUMNS: &[&str] = &["id", "name", "kind", "owner", "effective_status", "labels"];
const RESOURCE_COLUMNS: &[&str] = &["id", "name", "uri", "owner", "scopes"];
const KEY_COLUMNS: &[&str] = &["kid", "alg", "state", "activate_at", "remove_after"];

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

/// Finds the server and credential: flags, then `SIGIL_URL`/`SIGIL_ADMIN_TOKEN`, then the local
/// defaults (`http://127.0.0.1:8080` and `<data-dir>/admin-token`).
pub fn client(g: &Global) -> Result<Client, Failure> {
    let url = g
        .url
        .clone()
        .or_else(|| env("SIGIL_URL"))
        .unwrap_or_else(|| "http://127.0.0.1:8080".into());
    match url::Url::parse(&url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => {}
        _ => {
            return Err(Failure::invalid(format!(
                "--url (or SIGIL_URL) must be an http:// or https:// URL, not {url:?}"
            )));
        }
    }
    let token = match g.token.clone().or_else(|| env("SIGIL_ADMIN_TOKEN")) {
        // `$(cat admin-token)` keeps no newline, but a variable filled another way may.
        Some(t) if t.trim().chars().any(char::is_control) => {
            return Err(Failure::invalid(
                "--token (or SIGIL_ADMIN_TOKEN) holds control characters: it is not an admin token",
            ));
        }
        Some(t) => Some(t.trim().to_owned()),
        None => {
            let dir = env("SIGIL_DATA_DIR").map_or_else(|| PathBuf::from("./sigil-data"), PathBuf::from);
            std::fs::read_to_string(dir.join("admin-token"))
                .ok()
                .map(|t| t.trim().to_owned())
        }
    };
    Client::new(&url, token).map_err(Failure::from)
}

fn set<T: Ord>(items: &[String], f: impl Fn(&str) -> Result<T, ParseError>) -> Result<BTreeSet<T>, Failure> {
    items.iter().map(|s| f(s).map_err(Failure::from)).collect()
}

fn labels(items: &[String]) -> Result<Labels, Failure> {
    let mut map = BTreeMap::new();
    for item in items {
        let (k, v) = Labels::parse_pair(item)?;
        if map.contains_key(&k) {
            return Err(Failure::invalid(format!("--label {k} is given twice")));
        }
        map.insert(k, v);
    }
    Ok(Labels::new(map)?)
}

fn scopes(items: &[String]) -> Result<ScopeSet, Failure> {
    Ok(ScopeSet::new(
        items.iter().map(|s| Scope::parse(s)).collect::<Result<Vec<_>, _>>()?,
    )?)
}

fn ceiling(scope_items: &[String], resources: &[String]) -> Result<Ceiling, Failure> {
    let resources = if resources.is_empty() {
        None
    } else {
        Some(set(resources, ResourceUri::parse)?)
    };
    Ok(Ceiling {
        scopes: scopes(scope_items)?,
        resources,
    })
}

fn opt<T>(v: Option<&String>, f: impl Fn(&str) -> Result<T, ParseError>) -> Result<Option<T>, Failure> {
    v.map(|s| f(s).map_err(Failure::from)).transpose()
}

pub fn page_query(p: &PageArgs, q: &mut Vec<(&'static str, String)>) {
    if let Some(l) = p.limit {
        q.push(("limit", l.to_string()));
    }
    if let Some(c) = &p.cursor {
        q.push(("cursor", c.clone()));
    }
}

/// Fetches one page, or every page with `--all`, and prints them as one table.
pub async fn list_pages<T, F, Fut>(
    g: &Global,
    p: &PageArgs,
    query: Vec<(&'static str, String)>,
    columns: &[&str],
    fetch: F,
) -> Result<(), Failure>
where
    T: Serialize,
    F: Fn(Vec<(&'static str, String)>) -> Fut,
    Fut: std::future::Future<Output = Result<ListResponse<T>, sigil_client::ClientError>>,
{
    list_rows(g, p, query, columns, fetch, |i| serde_json::to_value(i).ok()).await
}

/// [`list_pages`] with each item turned into its row by `row` (for lists whose text table
/// flattens nested fields).
pub async fn list_rows<T, F, Fut>(
    g: &Global,
    p: &PageArgs,
    mut query: Vec<(&'static str, String)>,
    columns: &[&str],
    fetch: F,
    row: impl Fn(&T) -> Option<Value>,
) -> Result<(), Failure>
where
    F: Fn(Vec<(&'static str, String)>) -> Fut,
    Fut: std::future::Future<Output = Result<ListResponse<T>, sigil_client::ClientError>>,
{
    page_query(p, &mut query);
    let mut rows: Vec<Value> = Vec::new();
    loop {
        let page = fetch(query.clone()).await?;
        rows.extend(page.items.iter().filter_map(&row));
        match (p.all, page.next_cursor) {
            (true, Some(c)) => {
                query.retain(|(k, _)| *k != "cursor");
                query.push(("cursor", c));
            }
            (false, Some(c)) => {
                output::table(g.output, &rows, columns);
                // On stderr in every format, so a script reading JSON can tell the list is partial.
                eprintln!("(more: --cursor {c}, or --all)");
                return Ok(());
            }
            (_, None) => break,
        }
    }
    output::table(g.output, &rows, columns);
    Ok(())
}

pub async fn user(g: &Global, c: UserCommand) -> Result<(), Failure> {
    let api = client(g)?;
    match c {
        UserCommand::Create {
            username,
            email,
            display_name,
            groups,
        } => {
            let req = CreateUser {
                username: Username::parse(&username)?,
                email: opt(email.as_ref(), Email::parse)?,
                display_name: opt(display_name.as_ref(), DisplayName::parse)?,
                groups: set(&groups, Group::parse)?,
                status: None,
            };
            output::item(g.output, &api.create_user(&req).await?);
        }
        UserCommand::List { status, group, page } => {
            let mut q = Vec::new();
            if let Some(s) = status {
                q.push(("status", s));
            }
            if let Some(gr) = group {
                q.push(("group", gr));
            }
            list_pages(g, &page, q, USER_COLUMNS, |q| {
                let api = api.clone();
                async move { api.list_users(&q).await }
            })
            .await?;
        }
        UserCommand::Show { user } => output::item(g.output, &api.get_user(&user).await?),
        UserCommand::Update {
            user,
            email,
            display_name,
            groups,
            no_groups,
            status,
        } => {
            let req = UpdateUser {
                email: opt(email.as_ref(), Email::parse)?.map(Some),
                display_name: opt(display_name.as_ref(), DisplayName::parse)?.map(Some),
                groups: if no_groups {
                    Some(BTreeSet::new())
                } else {
                    groups.map(|g| set(&g, Group::parse)).transpose()?
                },
                status: opt(status.as_ref(), UserStatus::parse)?,
            };
            output::item(g.output, &api.update_user(&user, &req).await?);
        }
        UserCommand::Delete { user, transfer_to } => {
            api.delete_user(&user, transfer_to.as_deref()).await?;
            done(g, "deleted", &user);
        }
        UserCommand::SetPassword { user } => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .map_err(|e| Failure::invalid(format!("cannot read the password from standard input: {e}")))?;
            let password = zeroize::Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_owned());
            api.set_password(&user, &password).await?;
            output::report(
                g.output,
                serde_json::json!({ "result": "password set", "name": user }),
                &format!("password set for {user}"),
            );
        }
    }
    Ok(())
}

fn done(g: &Global, what: &str, name: &str) {
    output::done(g.output, what, name);
}

pub async fn identity(g: &Global, family: Family, c: IdentityCommand) -> Result<(), Failure> {
    let api = client(g)?;
    match c {
        IdentityCommand::Create {
            name,
            owner,
            kind,
            description,
            team,
            labels: l,
            ceiling: cs,
            ceiling_resources,
            expires_at,
            token_ttl,
            dpop_required,
        } => {
            let req = CreateIdentity {
                name: Name::parse(&name)?,
                kind: opt(kind.as_ref(), IdentityKind::parse)?,
                description: opt(description.as_ref(), Description::parse)?,
                owner,
                team: opt(team.as_ref(), TeamName::parse)?,
                labels: labels(&l)?,
                expires_at: opt(expires_at.as_ref(), Timestamp::parse_rfc3339)?,
                ceiling: ceiling(&cs, &ceiling_resources)?,
                token_ttl_seconds: token_ttl,
                dpop_required,
            };
            output::item(g.output, &api.create_identity(family, &req).await?);
        }
        IdentityCommand::List {
            owner,
            status,
            kind,
            team,
            labels: l,
            page,
        } => {
            let mut q: Vec<(&'static str, String)> = Vec::new();
            for (k, v) in [("owner", owner), ("status", status), ("kind", kind), ("team", team)] {
                if let Some(v) = v {
                    q.push((k, v));
                }
            }
            q.extend(l.into_iter().map(|v| ("label", v)));
            list_pages(g, &page, q, IDENTITY_COLUMNS, |q| {
                let api = api.clone();
                async move { api.list_identities(family, &q).await }
            })
            .await?;
        }
        IdentityCommand::Show { name } => output::item(g.output, &api.get_identity(family, &name).await?),
        IdentityCommand::Update {
            name,
            description,
            owner,
            team,
            labels: l,
            ceiling: cs,
            ceiling_resources,
            expires_at,
            no_expiry,
            token_ttl,
            dpop_required,
        } => {
            // Each flag replaces its own half of the ceiling; the other half stays as it is.
            let ceiling = match (cs, ceiling_resources) {
                (None, None) => None,
                (Some(cs), Some(rs)) => Some(ceiling(&cs, &rs)?),
                (cs, rs) => {
                    let current = api.get_identity(family, &name).await?.ceiling;
                    Some(Ceiling {
                        scopes: cs.map_or(Ok(current.scopes), |c| scopes(&c))?,
                        resources: match rs {
                            Some(r) => Some(set(&r, ResourceUri::parse)?),
                            None => current.resources,
                        },
                    })
                }
            };
            let req = UpdateIdentity {
                description: opt(description.as_ref(), Description::parse)?.map(Some),
                owner,
                team: opt(team.as_ref(), TeamName::parse)?.map(Some),
                labels: l.map(|l| labels(&l)).transpose()?,
                expires_at: if no_expiry {
                    Some(None)
                } else {
                    opt(expires_at.as_ref(), Timestamp::parse_rfc3339)?.map(Some)
                },
                ceiling,
                token_ttl_seconds: token_ttl.map(Some),
                dpop_required,
            };
            output::item(g.output, &api.update_identity(family, &name, &req).await?);
        }
        IdentityCommand::Suspend(a) => status(g, &api, family, "suspend", a).await?,
        IdentityCommand::Resume(a) => status(g, &api, family, "resume", a).await?,
        IdentityCommand::Revoke(a) => status(g, &api, family, "revoke", a).await?,
        IdentityCommand::Decommission(a) => status(g, &api, family, "decommission", a).await?,
    }
    Ok(())
}

async fn status(
    g: &Global,
    api: &Client,
    family: Family,
    action: &str,
    a: crate::cli::StatusArgs,
) -> Result<(), Failure> {
    let req = StatusChangeRequest {
        reason: opt(a.reason.as_ref(), Reason::parse)?,
    };
    let view = api.change_status(family, &a.name, action, &req).await?;
    match g.output {
        crate::cli::Output::Json => output::item(g.output, &view),
        crate::cli::Output::Text => println!("{} is now {}", view.name, view.status),
    }
    Ok(())
}

pub async fn resource(g: &Global, c: ResourceCommand) -> Result<(), Failure> {
    let api = client(g)?;
    match c {
        ResourceCommand::Create {
            uri,
            name,
            owner,
            scopes: s,
            description,
            servers,
        } => {
            let req = CreateResource {
                uri: ResourceUri::parse(&uri)?,
                name: Name::parse(&name)?,
                owner,
                description: opt(description.as_ref(), Description::parse)?,
                scopes: scopes(&s)?,
                servers,
            };
            output::item(g.output, &api.create_resource(&req).await?);
        }
        ResourceCommand::List { owner, page } => {
            let q = owner.map(|o| vec![("owner", o)]).unwrap_or_default();
            list_pages(g, &page, q, RESOURCE_COLUMNS, |q| {
                let api = api.clone();
                async move { api.list_resources(&q).await }
            })
            .await?;
        }
        ResourceCommand::Show { resource } => output::item(g.output, &api.get_resource(&resource).await?),
        ResourceCommand::Metadata { resource } => {
            let doc = api.resource_metadata(&resource).await?;
            println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        }
        ResourceCommand::Update {
            resource,
            name,
            description,
            owner,
            scopes: s,
            servers,
            no_servers,
        } => {
            let req = UpdateResource {
                name: opt(name.as_ref(), Name::parse)?,
                description: opt(description.as_ref(), Description::parse)?.map(Some),
                owner,
                scopes: s.map(|s| scopes(&s)).transpose()?,
                servers: if no_servers { Some(Vec::new()) } else { servers },
            };
            output::item(g.output, &api.update_resource(&resource, &req).await?);
        }
        ResourceCommand::Delete { resource } => {
            api.delete_resource(&resource).await?;
            done(g, "deleted", &resource);
        }
    }
    Ok(())
}

/// The algorithm the active token key signs with, when the new key replaces it with another:
/// verifiers that pin an algorithm (as RFC 8725 §3.1 advises) reject the new tokens.
fn changed_token_algorithm(keys: &[sigil_proto::admin::KeyView], new: &sigil_proto::admin::KeyView) -> Option<String> {
    const TOKEN_ALGS: [&str; 2] = ["EdDSA", "ES256"];
    if !TOKEN_ALGS.contains(&new.alg.as_str()) {
        return None; // the ID token key (RS256) rotates on its own
    }
    keys.iter()
        .find(|k| k.state == "active" && TOKEN_ALGS.contains(&k.alg.as_str()))
        .filter(|k| k.alg != new.alg)
        .map(|k| k.alg.clone())
}

pub async fn keys(g: &Global, c: KeysCommand) -> Result<(), Failure> {
    let api = client(g)?;
    match c {
        KeysCommand::List => {
            let keys = api.list_keys().await?;
            let rows: Vec<Value> = keys.items.iter().filter_map(|k| serde_json::to_value(k).ok()).collect();
            output::table(g.output, &rows, KEY_COLUMNS);
        }
        KeysCommand::Jwks => println!(
            "{}",
            serde_json::to_string_pretty(&api.jwks().await?).unwrap_or_default()
        ),
        KeysCommand::Rotate { alg } => {
            let before = api.list_keys().await?.items;
            let key = api.rotate_key(&RotateKeyRequest { alg }).await?;
            output::item(g.output, &key);
            if let Some(old) = changed_token_algorithm(&before, &key) {
                eprintln!(
                    "warning: access tokens will be signed with {} instead of {old} from {}; \
                     resource servers that accept only {old} must accept {} by then",
                    key.alg,
                    key.activate_at.to_rfc3339(),
                    key.alg
                );
            }
        }
    }
    Ok(())
}
