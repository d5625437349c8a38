//! Subscribers (admins): how many there are, how the mail queue stands, and removing one.

use super::*;

pub struct SubscriberRow {
    id: i64,
    address: String,
    confirmed: bool,
    bouncing: bool,
    follows: String,
}

#[derive(Template)]
#[template(path = "admin/subscribers.html")]
struct SubscribersPage {
    site: Site,
    me: Me,
    enabled: bool,
    total: i64,
    confirmed: i64,
    bouncing: i64,
    queued: i64,
    retrying: i64,
    q: String,
    found: Vec<SubscriberRow>,
    notice: Option<&'static str>,
    ttl_hours: i64,
    bounce_limit: i64,
}

#[derive(Debug, Default, Deserialize)]
pub struct SubscribersQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    done: String,
}

/// `GET /admin/subscribers?q=…`.
pub async fn subscribers(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Query(query): Query<SubscribersQuery>,
) -> Result<Response, AppError> {
    signed_in.require(Role::Admin)?;
    let service = signed_in.service(&state);
    let counts = service.subscriber_counts().await?;
    let backlog = service.mail_backlog().await?;
    let q = query.q.trim().to_owned();
    let components = service.components().await?;
    let found = if q.is_empty() {
        Vec::new()
    } else {
        service
            .find_subscribers(&q)
            .await?
            .into_iter()
            .map(|s| SubscriberRow {
                id: s.id,
                confirmed: s.confirmed_at.is_some(),
                bouncing: s.bouncing_at.is_some(),
                follows: match &s.preferences.components {
                    None => "everything".to_owned(),
                    Some(ids) => components
                        .iter()
                        .filter(|c| ids.contains(&c.id))
                        .map(|c| c.name.clone())
                        .collect::<Vec<_>>()
                        .join(", "),
                },
                address: s.address,
            })
            .collect()
    };
    page(
        StatusCode::OK,
        &SubscribersPage {
            site: state.site.clone(),
            me: me(&signed_in),
            enabled: service.mail_enabled(),
            total: counts.total,
            confirmed: counts.confirmed,
            bouncing: counts.bouncing,
            queued: backlog.fanouts,
            retrying: backlog.retrying,
            q,
            found,
            notice: (query.done == "subscriber_removed").then_some("Subscriber removed."),
            ttl_hours: crate::domain::CONFIRMATION_TTL.as_hours(),
            bounce_limit: crate::domain::BOUNCE_LIMIT,
        },
    )
}

/// `POST /admin/subscribers/{id}/delete`.
pub async fn remove_subscriber(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    CsrfForm { signed_in, .. }: CsrfForm<Vec<(String, String)>>,
) -> Result<Response, AppError> {
    signed_in.service(&state).remove_subscriber(id).await?;
    Ok(done("/admin/subscribers", "subscriber_removed"))
}
