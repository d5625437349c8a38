//! Components (admins): add, rename, regroup, reorder.

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
}

pub struct ComponentRow {
    slug: String,
    name: String,
    group: String,
    description: String,
}

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
        .map(|c| ComponentRow {
            slug: c.slug,
            name: c.name,
            group: c.group_name.unwrap_or_default(),
            description: c.description.unwrap_or_default(),
        })
        .collect();
    let error = (!errors.is_empty()).then(|| "Please correct the fields marked below.".to_owned());
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
    let new = crate::domain::NewComponent {
        slug: form.slug.clone(),
        name: form.name.clone(),
        description: Some(form.description.clone()),
        group_name: Some(form.group.clone()),
    };
    match signed_in.service(&state).create_component(new).await {
        Ok(_) => Ok(Redirect::to("/admin/components").into_response()),
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
        "up" => service.move_component(&slug, -1).await,
        "down" => service.move_component(&slug, 1).await,
        _ => service
            .edit_component(&slug, &form.name, &form.description, &form.group)
            .await
            .map(drop),
    };
    match result {
        Ok(()) => Ok(Redirect::to("/admin/components").into_response()),
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
        Err(e) => Err(e.into()),
    }
}
