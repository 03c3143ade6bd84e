//! `/admin/v1/users`

use axum::Json;
use axum::extract::RawQuery;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use sigil_core::model::{UserQuery, UserRef};
use sigil_core::registry::user_view;
use sigil_proto::admin::{CreateUser, ListResponse, UpdateUser};
use sigil_types::{Group, UserStatus};

use super::State;
use super::error::ApiError;
use super::extract::Path;
use super::extract::{Admin, ApiJson, tagged};
use super::query::Params;

type Result<T> = std::result::Result<T, ApiError>;

fn user_ref(s: &str) -> Result<UserRef> {
    UserRef::parse(s).map_err(|e| super::extract::bad_path_name("user", s, e))
}

pub async fn create(
    axum::extract::State(app): State,
    Admin(ctx): Admin,
    ApiJson(req): ApiJson<CreateUser>,
) -> Result<Response> {
    let u = app.registry.create_user(&ctx, req).await?;
    Ok((StatusCode::CREATED, Json(user_view(&u))).into_response())
}

pub async fn list(axum::extract::State(app): State, Admin(_): Admin, RawQuery(q): RawQuery) -> Result<Response> {
    let p = Params::parse(q.as_deref(), &["status", "group"])?;
    let query = UserQuery {
        status: p.parsed("status", UserStatus::parse)?,
        group: p.parsed("group", Group::parse)?,
        page: p.page()?,
    };
    let page = app.registry.list_users(&query).await?;
    Ok(Json(ListResponse {
        items: page.items.iter().map(user_view).collect(),
        next_cursor: page.next_cursor,
    })
    .into_response())
}

pub async fn show(axum::extract::State(app): State, Admin(_): Admin, Path(user): Path<String>) -> Result<Response> {
    let u = app.registry.get_user(&user_ref(&user)?).await?;
    Ok(tagged(user_view(&u), u.meta.version))
}

pub async fn update(
    axum::extract::State(app): State,
    Admin(ctx): Admin,
    Path(user): Path<String>,
    ApiJson(patch): ApiJson<UpdateUser>,
) -> Result<Response> {
    let u = app.registry.update_user(&ctx, &user_ref(&user)?, patch).await?;
    Ok(tagged(user_view(&u), u.meta.version))
}

/// `DELETE /admin/v1/users/{user}[?transfer_to=U]`
pub async fn delete(
    axum::extract::State(app): State,
    Admin(ctx): Admin,
    Path(user): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response> {
    let p = Params::parse(q.as_deref(), &["transfer_to"])?;
    let to = p.parsed("transfer_to", UserRef::parse)?;
    app.registry.delete_user(&ctx, &user_ref(&user)?, to.as_ref()).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `PUT /admin/v1/users/{user}/password`: sets the password the user signs in with at
/// `/authorize` (stored as an Argon2id hash).
pub async fn set_password(
    axum::extract::State(app): State,
    Admin(ctx): Admin,
    Path(user): Path<String>,
    ApiJson(req): ApiJson<sigil_proto::admin::SetPassword>,
) -> Result<Response> {
    app.oauth.set_password(&ctx, &user_ref(&user)?, &req.password).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
