//! Components (admins): add, rename, regroup, reorder, remove.

use super::*;

// ----- components and users (admins) ---------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
pub struct ComponentForm {
    #[serde(default)]
    slug: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    group: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    op: String,
    /// `op=status`: the status set by hand, and why.
    #[serde(default)]
    status: String,
    #[serde(default)]
    note: String,
}

pub struct ComponentRow {
    slug: String,
    name: String,
    group: String,
    description: String,
    /// The status set by hand (`operational` when none) and its note.
    manual: &'static str,
    manual_label: &'static str,
    note: String,
}

/// The statuses an admin may set a component to by hand, as the form offers them.
pub const MANUAL_CHOICES: [crate::domain::ComponentStatus; 5] = crate::domain::ComponentStatus::ALL;

#[derive(Template)]
#[template(path = "admin/components.html")]
struct ComponentsPage {
    site: Site,
    me: Me,
    components: Vec<ComponentRow>,
    new: ComponentForm,
    errors: Vec<ValidationError>,
    error: Option<String>,
}

impl ComponentsPage {
    fn field_error(&self, field: &str) -> Option<&str> {
        field_error(&self.errors, field)
    }
}

async fn components_page(
    state: &AppState,
    signed_in: &SignedIn,
    status: StatusCode,
    new: ComponentForm,
    errors: Vec<ValidationError>,
) -> Result<Response, AppError> {
    let components = state
        .service
        .components()
        .await?
        .into_iter()
        .map(|c| {
            let manual = c
                .manual
                .as_ref()
                .map_or(crate::domain::ComponentStatus::Operational, |m| m.status);
            ComponentRow {
                slug: c.slug,
                name: c.name,
                group: c.group_name.unwrap_or_default(),
                description: c.description.unwrap_or_default(),
                manual: manual.as_str(),
                manual_label: manual.label(),
                note: c.manual.map(|m| m.note).unwrap_or_default(),
            }
        })
        .collect();
    let error = match errors.iter().find(|e| e.field == "row") {
        Some(refused) => Some(refused.message.clone()),
        None => (!errors.is_empty()).then(|| "Please correct the fields marked below.".to_owned()),
    };
    page(
        status,
        &ComponentsPage {
            site: state.site.clone(),
            me: me(signed_in),
            components,
            new,
            errors,
            error,
        },
    )
}

pub async fn components(
    State(state): State<AppState>,
    signed_in: SignedIn,
) -> Result<Response, AppError> {
    signed_in.require(Role::Admin)?;
    components_page(
        &state,
        &signed_in,
        StatusCode::OK,
        ComponentForm::default(),
        Vec::new(),
    )
    .await
}

pub async fn create_component(
    State(state): State<AppState>,
    CsrfForm { signed_in, form }: CsrfForm<ComponentForm>,
) -> Result<Response, AppError> {
    // No slug typed: the name's, as the page script suggests it.
    let slug = if form.slug.trim().is_empty() {
        slug_from(&form.name)
    } else {
        form.slug.clone()
    };
    let new = crate::domain::NewComponent {
        slug,
        name: form.name.clone(),
        description: Some(form.description.clone()),
        group_name: Some(form.group.clone()),
    };
    match signed_in.service(&state).create_component(new).await {
        Ok(_) => Ok(done("/admin/components", "component_added")),
        Err(ServiceError::Domain(DomainError::Invalid(e))) => {
            components_page(
                &state,
                &signed_in,
                StatusCode::UNPROCESSABLE_ENTITY,
                form,
                vec![e],
            )
            .await
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn edit_component(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    CsrfForm { signed_in, form }: CsrfForm<ComponentForm>,
) -> Result<Response, AppError> {
    let service = signed_in.service(&state);
    let result = match form.op.as_str() {
        "delete" => service.delete_component(&slug).await,
        "up" => service.move_component(&slug, -1).await,
        "down" => service.move_component(&slug, 1).await,
        "status" => match crate::domain::ComponentStatus::parse(&form.status) {
            Some(status) => service
                .set_component_status(&slug, status, &form.note)
                .await
                .map(drop),
            None => Err(ValidationError::new("status", "choose a status from the list").into()),
        },
        _ => service
            .edit_component(&slug, &form.name, &form.description, &form.group)
            .await
            .map(drop),
    };
    let code = match form.op.as_str() {
        "delete" => "component_removed",
        "status" => "component_status",
        _ => "component_saved",
    };
    match result {
        Ok(()) => Ok(done("/admin/components", code)),
        Err(ServiceError::Domain(DomainError::Invalid(e))) => {
            components_page(
                &state,
                &signed_in,
                StatusCode::UNPROCESSABLE_ENTITY,
                ComponentForm::default(),
                vec![e],
            )
            .await
        }
        Err(ServiceError::Domain(e @ DomainError::Rule(_))) => {
            let (status, message) = refusal(&e);
            components_page(
                &state,
                &signed_in,
                status,
                ComponentForm::default(),
                vec![ValidationError::new("row", message)],
            )
            .await
        }
        Err(e) => Err(e.into()),
    }
}

/// A slug made from a name: lowercase ASCII letters and digits, other runs as one `-`.
fn slug_from(name: &str) -> String {
    let mut slug = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
    }
    slug.trim_end_matches('-').chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn slugs_come_from_names() {
        assert_eq!(super::slug_from("Public API (v2)"), "public-api-v2");
        assert_eq!(super::slug_from("  Łódź gateway "), "d-gateway");
        assert_eq!(super::slug_from("***"), "");
    }
}
