//! Incidents, the components each affects, their timeline and the alert groups that opened
//! them. An update's component statuses are a JSON column: read and written whole.

use async_trait::async_trait;
use jiff::Timestamp;
use sqlx::any::AnyRow;
use sqlx::{Any, FromRow, Transaction};
use tracing::instrument;

use super::outbox::insert_deliveries;
use super::{SqlStore, opt_secs, opt_ts, parse, secs, ts};
use crate::domain::{
    ComponentStatus, Impact, Incident, IncidentStatus, IncidentUpdate, IncidentUpdateKind,
    NewIncidentUpdate, Subject,
};
use crate::store::{
    AlertGroup, Audit, Commit, IncidentFilter, Incidents, Page, StoreError, StoreResult,
};

const INCIDENT_COLUMNS: &str = "i.id, i.title, i.impact, i.status, i.published_at, \
     i.started_at, i.resolved_at, i.postmortem, i.postmortem_published_at, i.maintenance_id, \
     i.rollout_id, i.source, i.created_at, i.updated_at, i.version";

const UPDATE_COLUMNS: &str =
    "id, incident_id, kind, status, body, components, actor, announced, created_at";

const ALERT_COLUMNS: &str = "source, group_key, incident_id, state, alerts, detail, changed_at";

#[derive(sqlx::FromRow)]
struct IncidentRow {
    id: i64,
    title: String,
    impact: String,
    status: String,
    published_at: Option<i64>,
    started_at: i64,
    resolved_at: Option<i64>,
    postmortem: Option<String>,
    postmortem_published_at: Option<i64>,
    maintenance_id: Option<i64>,
    rollout_id: Option<i64>,
    source: String,
    created_at: i64,
    updated_at: i64,
    version: i64,
}

impl TryFrom<IncidentRow> for Incident {
    type Error = StoreError;

    fn try_from(r: IncidentRow) -> StoreResult<Self> {
        Ok(Self {
            id: r.id,
            title: r.title,
            impact: parse(&r.impact, "impact", Impact::parse)?,
            status: parse(&r.status, "incident status", IncidentStatus::parse)?,
            components: Vec::new(),
            published_at: opt_ts(r.published_at)?,
            started_at: ts(r.started_at)?,
            resolved_at: opt_ts(r.resolved_at)?,
            postmortem: r.postmortem,
            postmortem_published_at: opt_ts(r.postmortem_published_at)?,
            maintenance_id: r.maintenance_id,
            rollout_id: r.rollout_id,
            source: r.source,
            created_at: ts(r.created_at)?,
            updated_at: ts(r.updated_at)?,
            version: r.version,
        })
    }
}

#[derive(sqlx::FromRow)]
struct UpdateRow {
    id: i64,
    incident_id: i64,
    kind: String,
    status: String,
    body: String,
    components: Option<String>,
    actor: String,
    announced: i64,
    created_at: i64,
}

fn components_from(json: &str) -> StoreResult<Vec<(i64, ComponentStatus)>> {
    let raw: Vec<(i64, String)> = serde_json::from_str(json)
        .map_err(|e| StoreError::Corrupt(format!("incident components JSON: {e}")))?;
    raw.into_iter()
        .map(|(id, s)| Ok((id, parse(&s, "component status", ComponentStatus::parse)?)))
        .collect()
}

fn components_json(c: &[(i64, ComponentStatus)]) -> String {
    let raw: Vec<(i64, &str)> = c.iter().map(|(id, s)| (*id, s.as_str())).collect();
    serde_json::to_string(&raw).expect("components serialise")
}

impl TryFrom<UpdateRow> for IncidentUpdate {
    type Error = StoreError;

    fn try_from(r: UpdateRow) -> StoreResult<Self> {
        Ok(Self {
            id: r.id,
            incident_id: r.incident_id,
            kind: parse(&r.kind, "incident update kind", IncidentUpdateKind::parse)?,
            status: parse(&r.status, "incident status", IncidentStatus::parse)?,
            body: r.body,
            components: r.components.as_deref().map(components_from).transpose()?,
            actor: r.actor,
            announced: r.announced != 0,
            created_at: ts(r.created_at)?,
        })
    }
}

fn update_from(row: &AnyRow) -> StoreResult<IncidentUpdate> {
    UpdateRow::from_row(row)?.try_into()
}

#[derive(sqlx::FromRow)]
struct AlertRow {
    source: String,
    group_key: String,
    incident_id: i64,
    state: String,
    alerts: String,
    detail: String,
    changed_at: i64,
}

impl TryFrom<AlertRow> for AlertGroup {
    type Error = StoreError;

    fn try_from(r: AlertRow) -> StoreResult<Self> {
        Ok(Self {
            source: r.source,
            group_key: r.group_key,
            incident_id: r.incident_id,
            firing: r.state == "firing",
            alerts: serde_json::from_str(&r.alerts)
                .map_err(|e| StoreError::Corrupt(format!("alert group JSON: {e}")))?,
            detail: r.detail,
            changed_at: ts(r.changed_at)?,
            was: None,
        })
    }
}

/// A foreign key broken by the change: a component or a linked window or rollout that does
/// not exist.
fn missing(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_foreign_key_violation() => StoreError::NotFound,
        _ => StoreError::Database(e),
    }
}

/// The incident's affected components, as it holds them now.
async fn write_components(tx: &mut Transaction<'_, Any>, i: &Incident) -> StoreResult<()> {
    sqlx::query("DELETE FROM incident_components WHERE incident_id = $1")
        .bind(i.id)
        .execute(&mut **tx)
        .await?;
    for (component, status) in &i.components {
        sqlx::query(
            "INSERT INTO incident_components (incident_id, component_id, status) \
             VALUES ($1, $2, $3)",
        )
        .bind(i.id)
        .bind(component)
        .bind(status.as_str())
        .execute(&mut **tx)
        .await
        .map_err(missing)?;
    }
    Ok(())
}

/// The change's updates, then their deliveries.
async fn write_updates(
    tx: &mut Transaction<'_, Any>,
    id: i64,
    commit: &Commit<'_, NewIncidentUpdate>,
    at: Timestamp,
) -> StoreResult<()> {
    let mut update_ids = Vec::with_capacity(commit.updates.len());
    for u in commit.updates {
        let update_id: i64 = sqlx::query_scalar(
            "INSERT INTO incident_updates (incident_id, kind, status, body, components, actor, \
             announced, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        )
        .bind(id)
        .bind(u.kind.as_str())
        .bind(u.status.as_str())
        .bind(&u.body)
        .bind(u.components.as_deref().map(components_json))
        .bind(commit.actor)
        .bind(i64::from(u.announce))
        .bind(secs(at))
        .fetch_one(&mut **tx)
        .await?;
        update_ids.push(update_id);
    }
    insert_deliveries(tx, Subject::Incident(id), &update_ids, commit.deliveries).await
}

/// Write alert group `a` as following incident `id`. A group seen for the first time
/// (`a.incident_id` 0) is inserted: a second instance opening the same group at the same moment
/// breaks the key's uniqueness and its whole change rolls back (it retries and finds the
/// group). A known group is updated only while it still follows the incident it was read
/// with (`a.incident_id`) and, with `a.was`, is still as it was read; else
/// [`StoreError::Conflict`].
async fn write_alert(tx: &mut Transaction<'_, Any>, id: i64, a: &AlertGroup) -> StoreResult<()> {
    let state = if a.firing { "firing" } else { "resolved" };
    let alerts = serde_json::to_string(&a.alerts).expect("alerts serialise");
    if a.incident_id == 0 {
        sqlx::query(
            "INSERT INTO incident_alerts (source, group_key, incident_id, state, alerts, \
             detail, changed_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&a.source)
        .bind(&a.group_key)
        .bind(id)
        .bind(state)
        .bind(alerts)
        .bind(&a.detail)
        .bind(secs(a.changed_at))
        .execute(&mut **tx)
        .await?;
        return Ok(());
    }
    let mut sql = "UPDATE incident_alerts SET incident_id = $1, state = $2, alerts = $3, \
         detail = $4, changed_at = $5 WHERE source = $6 AND group_key = $7 AND incident_id = $8"
        .to_owned();
    if a.was.is_some() {
        sql.push_str(" AND state = $9 AND alerts = $10 AND changed_at = $11");
    }
    let mut query = sqlx::query(&sql)
        .bind(id)
        .bind(state)
        .bind(alerts)
        .bind(&a.detail)
        .bind(secs(a.changed_at))
        .bind(&a.source)
        .bind(&a.group_key)
        .bind(a.incident_id);
    if let Some((firing, alerts, at)) = &a.was {
        query = query
            .bind(if *firing { "firing" } else { "resolved" })
            .bind(serde_json::to_string(alerts).expect("alerts serialise"))
            .bind(secs(*at));
    }
    let done = query.execute(&mut **tx).await?;
    if done.rows_affected() != 1 {
        return Err(StoreError::Conflict);
    }
    Ok(())
}

impl SqlStore {
    /// `rows` as incidents, each with its components.
    async fn with_components(&self, rows: Vec<IncidentRow>) -> StoreResult<Vec<Incident>> {
        let mut incidents = rows
            .into_iter()
            .map(Incident::try_from)
            .collect::<StoreResult<Vec<_>>>()?;
        if incidents.is_empty() {
            return Ok(incidents);
        }
        let ids: Vec<String> = incidents.iter().map(|i| i.id.to_string()).collect();
        let rows: Vec<(i64, i64, String)> = sqlx::query_as(&format!(
            "SELECT incident_id, component_id, status FROM incident_components \
             WHERE incident_id IN ({}) ORDER BY incident_id, component_id",
            ids.join(",")
        ))
        .fetch_all(&self.pool)
        .await?;
        for (incident, component, status) in rows {
            let status = parse(&status, "component status", ComponentStatus::parse)?;
            if let Some(i) = incidents.iter_mut().find(|i| i.id == incident) {
                i.components.push((component, status));
            }
        }
        Ok(incidents)
    }

    async fn incidents_where(&self, condition: &str, binds: &[i64]) -> StoreResult<Vec<Incident>> {
        let sql = format!("SELECT {INCIDENT_COLUMNS} FROM incidents i WHERE {condition}");
        let mut query = sqlx::query_as::<_, IncidentRow>(&sql);
        for b in binds {
            query = query.bind(*b);
        }
        let rows = query.fetch_all(&self.pool).await?;
        self.with_components(rows).await
    }
}

#[async_trait]
impl Incidents for SqlStore {
    #[instrument(skip_all)]
    async fn create_incident(
        &self,
        i: &Incident,
        commit: &Commit<'_, NewIncidentUpdate>,
        audit: Option<&Audit<'_>>,
        alert: Option<&AlertGroup>,
    ) -> StoreResult<i64> {
        let mut tx = self.pool.begin().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO incidents (title, impact, status, published_at, started_at, \
             resolved_at, postmortem, postmortem_published_at, maintenance_id, rollout_id, \
             source, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id",
        )
        .bind(&i.title)
        .bind(i.impact.as_str())
        .bind(i.status.as_str())
        .bind(opt_secs(i.published_at))
        .bind(secs(i.started_at))
        .bind(opt_secs(i.resolved_at))
        .bind(&i.postmortem)
        .bind(opt_secs(i.postmortem_published_at))
        .bind(i.maintenance_id)
        .bind(i.rollout_id)
        .bind(&i.source)
        .bind(secs(i.created_at))
        .bind(secs(i.updated_at))
        .fetch_one(&mut *tx)
        .await
        .map_err(missing)?;
        let stored = Incident { id, ..i.clone() };
        write_components(&mut tx, &stored).await?;
        write_updates(&mut tx, id, commit, i.updated_at).await?;
        if let Some(a) = alert {
            write_alert(&mut tx, id, a).await?;
        }
        if let Some(audit) = audit {
            super::accounts::insert_audit(&mut tx, &audit(id)).await?;
        }
        tx.commit().await?;
        Ok(id)
    }

    #[instrument(skip(self))]
    async fn get_incident(&self, id: i64) -> StoreResult<Option<Incident>> {
        Ok(self.incidents_where("i.id = $1", &[id]).await?.pop())
    }

    #[instrument(skip_all, fields(id = i.id, version = i.version))]
    async fn save_incident(
        &self,
        i: &Incident,
        commit: &Commit<'_, NewIncidentUpdate>,
        alert: Option<&AlertGroup>,
    ) -> StoreResult<i64> {
        let mut tx = self.pool.begin().await?;
        // Writing first takes SQLite's write lock at once; the version check makes a
        // concurrent change lose cleanly (as for windows and rollouts).
        let done = sqlx::query(
            "UPDATE incidents SET title = $1, impact = $2, status = $3, published_at = $4, \
             resolved_at = $5, postmortem = $6, postmortem_published_at = $7, \
             updated_at = $8, version = version + 1 WHERE id = $9 AND version = $10",
        )
        .bind(&i.title)
        .bind(i.impact.as_str())
        .bind(i.status.as_str())
        .bind(opt_secs(i.published_at))
        .bind(opt_secs(i.resolved_at))
        .bind(&i.postmortem)
        .bind(opt_secs(i.postmortem_published_at))
        .bind(secs(i.updated_at))
        .bind(i.id)
        .bind(i.version)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::Conflict);
        }
        write_components(&mut tx, i).await?;
        write_updates(&mut tx, i.id, commit, i.updated_at).await?;
        if let Some(a) = alert {
            write_alert(&mut tx, i.id, a).await?;
        }
        if let Some(audit) = commit.audit {
            super::accounts::insert_audit(&mut tx, audit).await?;
        }
        tx.commit().await?;
        Ok(i.version + 1)
    }

    async fn list_incidents(
        &self,
        filter: IncidentFilter,
        offset: i64,
        limit: i64,
    ) -> StoreResult<Page<Incident>> {
        let condition = match filter {
            IncidentFilter::Open => "i.status <> 'resolved' AND i.published_at IS NOT NULL",
            IncidentFilter::Drafts => "i.published_at IS NULL",
            IncidentFilter::Resolved => "i.status = 'resolved' AND i.published_at IS NOT NULL",
            IncidentFilter::Public => "i.published_at IS NOT NULL",
            IncidentFilter::All => "1 = 1",
        };
        let total: i64 = sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM incidents i WHERE {condition}"
        ))
        .fetch_one(&self.pool)
        .await?;
        let items = self
            .incidents_where(
                &format!("{condition} ORDER BY i.started_at DESC, i.id DESC LIMIT $1 OFFSET $2"),
                &[limit, offset],
            )
            .await?;
        Ok(Page { items, total })
    }

    async fn public_incidents_between(
        &self,
        from: Timestamp,
        to: Timestamp,
    ) -> StoreResult<Vec<Incident>> {
        let mut incidents = self
            .incidents_where(
                "i.published_at IS NOT NULL AND i.started_at < $2 \
                 AND (i.resolved_at IS NULL OR i.resolved_at >= $1) \
                 ORDER BY i.started_at, i.id",
                &[secs(from), secs(to)],
            )
            .await?;
        if incidents.is_empty() {
            return Ok(incidents);
        }
        // Each component at the worst status any public update of the incident gave it.
        let ids: Vec<String> = incidents.iter().map(|i| i.id.to_string()).collect();
        let rows: Vec<(i64, String)> = sqlx::query_as(&format!(
            "SELECT incident_id, components FROM incident_updates \
             WHERE incident_id IN ({}) AND components IS NOT NULL AND announced = 1",
            ids.join(",")
        ))
        .fetch_all(&self.pool)
        .await?;
        for (incident, json) in rows {
            let Some(i) = incidents.iter_mut().find(|i| i.id == incident) else {
                continue;
            };
            for (component, status) in components_from(&json)? {
                match i.components.iter_mut().find(|(c, _)| *c == component) {
                    Some((_, s)) => *s = (*s).max(status),
                    None => i.components.push((component, status)),
                }
            }
        }
        Ok(incidents)
    }

    async fn linked_incidents(&self, subject: Subject) -> StoreResult<Vec<Incident>> {
        let column = match subject {
            Subject::Window(_) => "maintenance_id",
            Subject::Rollout(_) => "rollout_id",
            Subject::Incident(_) => return Ok(Vec::new()),
        };
        self.incidents_where(
            &format!("i.{column} = $1 ORDER BY i.started_at, i.id"),
            &[subject.id()],
        )
        .await
    }

    async fn list_incident_updates(
        &self,
        incident_id: i64,
        limit: Option<i64>,
    ) -> StoreResult<Vec<IncidentUpdate>> {
        sqlx::query(&format!(
            "SELECT {UPDATE_COLUMNS} FROM incident_updates WHERE incident_id = $1 \
             ORDER BY id DESC LIMIT $2"
        ))
        .bind(incident_id)
        .bind(limit.unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(update_from)
        .collect()
    }

    async fn get_incident_update(&self, id: i64) -> StoreResult<Option<IncidentUpdate>> {
        sqlx::query(&format!(
            "SELECT {UPDATE_COLUMNS} FROM incident_updates WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(update_from)
        .transpose()
    }

    async fn alert_group(&self, source: &str, group_key: &str) -> StoreResult<Option<AlertGroup>> {
        sqlx::query_as::<_, AlertRow>(&format!(
            "SELECT {ALERT_COLUMNS} FROM incident_alerts WHERE source = $1 AND group_key = $2"
        ))
        .bind(source)
        .bind(group_key)
        .fetch_optional(&self.pool)
        .await?
        .map(AlertGroup::try_from)
        .transpose()
    }

    async fn incident_alerts(&self, incident_id: i64) -> StoreResult<Vec<AlertGroup>> {
        sqlx::query_as::<_, AlertRow>(&format!(
            "SELECT {ALERT_COLUMNS} FROM incident_alerts WHERE incident_id = $1 \
             ORDER BY changed_at DESC"
        ))
        .bind(incident_id)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(AlertGroup::try_from)
        .collect()
    }
}
