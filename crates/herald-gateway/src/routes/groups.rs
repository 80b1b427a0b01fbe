//! `GET /api/groups/`: the caller's groups and where each may send.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use crate::app::AppState;
use crate::auth::Authenticated;
use crate::error::ApiResult;

#[derive(Debug, Serialize, ToSchema)]
pub struct GroupRef {
    pub name: String,
    pub display_name: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GroupView {
    pub name: String,
    pub display_name: String,
    /// Seq of the group's newest event: connect to the group's stream with `since` set to this
    /// value to receive everything after the list you loaded.
    pub seq: u64,
    /// Groups that members of this group may send to.
    pub can_send_to: Vec<GroupRef>,
    /// Groups whose members may send to this group, so that a client can show their names.
    pub can_receive_from: Vec<GroupRef>,
}

/// Lists the caller's groups with display names, current seq, allowed receivers and senders.
#[utoipa::path(
    get, path = "/api/groups/", tag = "groups",
    security(("bearer" = [])),
    responses((status = 200, body = [GroupView]), (status = 401, body = crate::routes::openapi::Problem))
)]
pub async fn list_groups(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
) -> ApiResult<Json<Vec<GroupView>>> {
    let store = state.service.store();
    let groups = store.list_groups().await?;
    let rules = store.list_rules().await?;

    let display = |name: &herald_core::GroupName| {
        groups
            .iter()
            .find(|g| &g.name == name)
            .map(|g| g.display_name.clone())
            .unwrap_or_else(|| name.to_string())
    };
    let views = groups
        .iter()
        .filter(|g| caller.is_member(&g.name))
        .map(|g| GroupView {
            name: g.name.to_string(),
            display_name: g.display_name.clone(),
            seq: g.seq,
            can_send_to: rules
                .iter()
                .filter(|r| r.from == g.name)
                .map(|r| GroupRef {
                    name: r.to.to_string(),
                    display_name: display(&r.to),
                })
                .collect(),
            can_receive_from: rules
                .iter()
                .filter(|r| r.to == g.name)
                .map(|r| GroupRef {
                    name: r.from.to_string(),
                    display_name: display(&r.from),
                })
                .collect(),
        })
        .collect();
    Ok(Json(views))
}
