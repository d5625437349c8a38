//! Email subscribers: importing them from another status page's export and exporting them
//! (`herald subscribers import|export`).

use super::{Service, ServiceResult};
use crate::domain::{
    EmailAddress, NewSubscriber, Preferences, Role, Subscriber, ValidationError, parse_kinds_list,
};
use crate::store::SubscriberCounts;

/// One row of an import, as read from the file (line numbers for the errors).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportRow {
    pub line: u64,
    pub email: String,
    /// Component slugs (`;`, `,` or spaces between); empty: everything.
    pub components: String,
    /// Kinds (`maintenance`, `reminders`, `incidents`, `rollouts`); empty: all of them.
    pub kinds: String,
    /// `true`/`false` (also yes/no, 1/0); empty counts as true.
    pub confirmed: String,
}

/// What an import did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportReport {
    pub added: u64,
    pub updated: u64,
    pub confirmed: u64,
}

fn yes(text: &str) -> Result<bool, ValidationError> {
    match text.trim().to_lowercase().as_str() {
        "" | "true" | "yes" | "1" => Ok(true),
        "false" | "no" | "0" => Ok(false),
        other => Err(ValidationError::new(
            "confirmed",
            format!("{other:?} is neither true nor false"),
        )),
    }
}

impl Service {
    /// Add subscribers from an import: all of them or, when any row is wrong, none (the error
    /// names every wrong line). A row is confirmed only with `confirmed` (the operator saying
    /// these addresses confirmed elsewhere) and unless its own column says false.
    pub async fn import_subscribers(
        &self,
        rows: &[ImportRow],
        confirmed: bool,
    ) -> ServiceResult<ImportReport> {
        self.require(Role::Admin)?;
        let components = self.components().await?;
        let mut problems = Vec::new();
        let mut new = Vec::with_capacity(rows.len());
        for row in rows {
            let parsed = (|| {
                let address = EmailAddress::parse(&row.email)?;
                let mut ids = Vec::new();
                for slug in row
                    .components
                    .split(|c: char| c == ';' || c == ',' || c.is_whitespace())
                    .filter(|s| !s.is_empty())
                {
                    let c = components.iter().find(|c| c.slug == slug).ok_or_else(|| {
                        ValidationError::new(
                            "components",
                            format!("no component has the slug {slug:?}"),
                        )
                    })?;
                    if !ids.contains(&c.id) {
                        ids.push(c.id);
                    }
                }
                Ok::<_, ValidationError>(NewSubscriber {
                    address,
                    preferences: Preferences {
                        components: (!ids.is_empty()).then_some(ids),
                        kinds: parse_kinds_list(&row.kinds)?,
                    },
                    // Checked whatever the flag says: every wrong line is named.
                    confirmed: yes(&row.confirmed)? && confirmed,
                })
            })();
            match parsed {
                Ok(s) => new.push(s),
                Err(e) => problems.push(format!("line {}: {} {}", row.line, e.field, e.message)),
            }
        }
        if !problems.is_empty() {
            return Err(ValidationError::new(
                "file",
                format!("nothing was imported:\n{}", problems.join("\n")),
            )
            .into());
        }
        let audit = self.audit_entry(
            "subscribers.import",
            format!(
                "{} rows{}",
                new.len(),
                if confirmed { ", confirmed" } else { "" }
            ),
        );
        let (added, updated) = self
            .store
            .import_subscribers(&new, self.now(), &audit)
            .await?;
        crate::telemetry::log_change(&audit);
        Ok(ImportReport {
            added,
            updated,
            confirmed: new.iter().filter(|s| s.confirmed).count() as u64,
        })
    }

    /// Every subscriber, in the order they came.
    pub async fn all_subscribers(&self) -> ServiceResult<Vec<Subscriber>> {
        self.require(Role::Admin)?;
        let mut all = Vec::new();
        loop {
            let after = all.last().map_or(0, |s: &Subscriber| s.id);
            let page = self.store.list_subscribers(after, 1000).await?;
            if page.is_empty() {
                return Ok(all);
            }
            all.extend(page);
        }
    }

    pub async fn subscriber_counts(&self) -> ServiceResult<SubscriberCounts> {
        Ok(self.store.count_subscribers().await?)
    }
}
