//! Planning a window and editing what it says and its plan.

use super::*;

// ----- planning a window ---------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
pub struct NewForm {
    #[serde(default)]
    title: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    impact: String,
    #[serde(flatten)]
    schedule: ScheduleFields,
    #[serde(default)]
    steps: String,
    #[serde(flatten)]
    automation: AutomationFields,
    /// `component_<slug>=on` for each ticked box (after the named fields, which take theirs).
    #[serde(flatten)]
    rest: HashMap<String, String>,
}

/// What a window does by itself, as a form has it: checkboxes (`on`) and the reminder offsets
/// as text.
#[derive(Debug, Default, Deserialize)]
pub struct AutomationFields {
    #[serde(default)]
    pub(crate) auto_start: String,
    #[serde(default)]
    pub(crate) auto_complete: String,
    #[serde(default)]
    pub(crate) reminders: String,
}

impl AutomationFields {
    fn of(a: &Automation) -> Self {
        let on = |b: bool| if b { "on" } else { "" }.to_owned();
        Self {
            auto_start: on(a.auto_start),
            auto_complete: on(a.auto_complete),
            reminders: a.reminders_text(),
        }
    }

    fn parse(&self) -> Result<Automation, ValidationError> {
        Automation {
            auto_start: self.auto_start == "on",
            auto_complete: self.auto_complete == "on",
            reminders: Automation::parse_reminders(&self.reminders)?,
        }
        .validate()
    }
}

#[derive(Template)]
#[template(path = "admin/new.html")]
struct NewPage {
    site: Site,
    me: Me,
    form: NewForm,
    errors: Vec<ValidationError>,
    impacts: Vec<(&'static str, &'static str)>,
    components: Vec<(String, String, bool)>,
}

impl NewPage {
    fn error(&self, field: &str) -> Option<&str> {
        field_error(&self.errors, field)
    }
}

/// The message of the error about `field`, for showing it next to that field.
pub(crate) fn field_error<'a>(errors: &'a [ValidationError], field: &str) -> Option<&'a str> {
    errors
        .iter()
        .find(|e| e.field == field)
        .map(|e| e.message.as_str())
}

/// Component slugs ticked in a form (`component_<slug>=on`).
pub(crate) fn ticked_components(fields: &HashMap<String, String>) -> Vec<String> {
    fields
        .keys()
        .filter_map(|k| k.strip_prefix("component_").map(str::to_owned))
        .collect()
}

/// Every component as (slug, name, ticked in `fields`), for the checkboxes of a form.
pub(crate) async fn component_choices(
    state: &AppState,
    fields: &HashMap<String, String>,
) -> Result<Vec<(String, String, bool)>, AppError> {
    Ok(state
        .service
        .components()
        .await?
        .into_iter()
        .map(|c| {
            let ticked = fields.contains_key(&format!("component_{}", c.slug));
            (c.slug, c.name, ticked)
        })
        .collect())
}

async fn new_page(
    state: &AppState,
    signed_in: &SignedIn,
    form: NewForm,
    errors: Vec<ValidationError>,
) -> Result<Response, AppError> {
    let components = component_choices(state, &form.rest).await?;
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    page(
        status,
        &NewPage {
            site: state.site.clone(),
            me: me(signed_in),
            impacts: Impact::ALL
                .iter()
                .map(|i| (i.as_str(), i.label()))
                .collect(),
            components,
            form,
            errors,
        },
    )
}

pub async fn new_window(
    State(state): State<AppState>,
    signed_in: SignedIn,
) -> Result<Response, AppError> {
    let form = NewForm {
        impact: "minor".into(),
        schedule: ScheduleFields {
            when: "tentative".into(),
            time_zone: "UTC".into(),
            ..ScheduleFields::default()
        },
        automation: AutomationFields::of(&Automation::default()),
        ..NewForm::default()
    };
    new_page(&state, &signed_in, form, Vec::new()).await
}

/// A `datetime-local` value in a named zone, as a timestamp.
pub(crate) fn local_time(
    field: &'static str,
    value: &str,
    zone: &str,
) -> Result<Timestamp, ValidationError> {
    let civil: jiff::civil::DateTime = value
        .trim()
        .parse()
        .map_err(|_| ValidationError::new(field, "give a date and time, e.g. 2026-11-24 14:00"))?;
    let tz = jiff::tz::TimeZone::get(zone.trim()).map_err(|_| {
        ValidationError::new("time_zone", format!("{zone:?} is not a known time zone"))
    })?;
    civil
        .to_zoned(tz)
        .map(|z| z.timestamp())
        .map_err(|e| ValidationError::new(field, format!("not a valid time there: {e}")))
}

/// The schedule fields of a form: "No date yet" with a hint, or a start and an optional end in
/// the chosen time zone.
#[derive(Debug, Default, Deserialize)]
pub struct ScheduleFields {
    #[serde(default)]
    pub(crate) when: String,
    #[serde(default)]
    pub(crate) schedule_hint: String,
    #[serde(default)]
    pub(crate) starts_at: String,
    #[serde(default)]
    pub(crate) ends_at: String,
    #[serde(default)]
    pub(crate) time_zone: String,
}

/// The schedule a form asks for. `current` is the window's schedule as it stands (start,
/// end): dates sent with "No date yet" are refused unless they are just those, left in the
/// form (a window being undated again), so a date typed without choosing "At a set time" is
/// never dropped without a word.
pub(crate) fn parse_schedule(
    f: &ScheduleFields,
    errors: &mut Vec<ValidationError>,
    current: (Option<Timestamp>, Option<Timestamp>),
) -> Option<Schedule> {
    let zone = if f.time_zone.trim().is_empty() {
        "UTC"
    } else {
        &f.time_zone
    };
    if f.when != "fixed" {
        for (field, value, now) in [
            ("starts_at", &f.starts_at, current.0),
            ("ends_at", &f.ends_at, current.1),
        ] {
            let typed = !value.trim().is_empty();
            // The form shows minutes: a stored time with seconds (from the API) matches to
            // the minute.
            let minute = now.map(|t| {
                Timestamp::from_second(t.as_second() - t.as_second().rem_euclid(60)).unwrap_or(t)
            });
            let leftover = minute.is_some() && local_time(field, value, zone).ok() == minute;
            if typed && !leftover {
                errors.push(ValidationError::new(
                    field,
                    "this date is not used while \"No date yet\" is chosen: choose \"At a set time\" to use it, or clear it",
                ));
            }
        }
        if !errors.is_empty() {
            return None;
        }
        return Schedule::from_parts(None, None, Some(&f.schedule_hint))
            .map_err(|e| errors.push(e))
            .ok();
    }
    let start = if f.starts_at.trim().is_empty() {
        errors.push(ValidationError::new(
            "starts_at",
            "give the start, or choose \"No date yet\"",
        ));
        None
    } else {
        local_time("starts_at", &f.starts_at, zone)
            .map_err(|e| errors.push(e))
            .ok()
    };
    let end = if f.ends_at.trim().is_empty() {
        None
    } else {
        local_time("ends_at", &f.ends_at, zone)
            .map_err(|e| errors.push(e))
            .ok()
    };
    let start = start?;
    Schedule::from_parts(Some(start), end, None)
        .map_err(|e| errors.push(e))
        .ok()
}

fn parse_new(
    form: &NewForm,
    component_ids: Vec<i64>,
) -> Result<NewMaintenance, Vec<ValidationError>> {
    let mut errors = Vec::new();
    let impact = Impact::parse(&form.impact).unwrap_or_default();
    let schedule = parse_schedule(&form.schedule, &mut errors, (None, None));
    let automation = form
        .automation
        .parse()
        .map_err(|e| errors.push(e))
        .unwrap_or_default();
    let new = NewMaintenance {
        title: form.title.clone(),
        description: form.description.clone(),
        impact,
        schedule: schedule
            .clone()
            .unwrap_or(Schedule::Tentative { hint: None }),
        component_ids,
        steps: form
            .steps
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|l| NewStep {
                title: l.trim_start_matches(['-', '*', ' ']).to_owned(),
                description: None,
            })
            .collect(),
        automation,
    };
    if let Err(e) = new.clone().validate() {
        errors.push(e);
    }
    if errors.is_empty() {
        Ok(new)
    } else {
        Err(errors)
    }
}

pub async fn create_window(
    State(state): State<AppState>,
    CsrfForm { signed_in, form }: CsrfForm<NewForm>,
) -> Result<Response, AppError> {
    let slugs = ticked_components(&form.rest);
    let ids = match state.service.component_ids(&slugs).await {
        Ok(ids) => ids,
        Err(ServiceError::Domain(DomainError::Invalid(e))) => {
            return new_page(&state, &signed_in, form, vec![e]).await;
        }
        Err(e) => return Err(e.into()),
    };
    let new = match parse_new(&form, ids) {
        Ok(new) => new,
        Err(errors) => return new_page(&state, &signed_in, form, errors).await,
    };
    match state
        .service
        .acting(signed_in.actor())
        .create_maintenance(new)
        .await
    {
        Ok(m) => Ok(done(&format!("/admin/maintenances/{}", m.id), "created")),
        Err(ServiceError::Domain(DomainError::Invalid(e))) => {
            new_page(&state, &signed_in, form, vec![e]).await
        }
        Err(e) => Err(e.into()),
    }
}

// ----- editing a window and its plan ---------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
pub struct EditForm {
    #[serde(default)]
    title: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    impact: String,
    #[serde(default)]
    op: String,
    #[serde(flatten)]
    automation: AutomationFields,
    #[serde(flatten)]
    rest: HashMap<String, String>,
}

#[derive(Template)]
#[template(path = "admin/edit.html")]
struct EditPage {
    site: Site,
    me: Me,
    w: WindowView,
    form: EditForm,
    preview: Option<String>,
    impacts: Vec<(&'static str, &'static str)>,
    components: Vec<(String, String, bool)>,
    error: Option<String>,
    new_step: String,
}

async fn edit_page(
    state: &AppState,
    signed_in: &SignedIn,
    id: i64,
    status: StatusCode,
    form: Option<EditForm>,
    error: Option<String>,
    new_step: String,
) -> Result<Response, AppError> {
    let m = state.service.maintenance(id).await?;
    let w = window_view(&m, &[], state.service.now());
    let form = form.unwrap_or_else(|| EditForm {
        title: m.title.clone(),
        description: m.description.clone(),
        impact: m.impact.as_str().to_owned(),
        rest: m
            .components
            .iter()
            .map(|c| (format!("component_{}", c.slug), "on".to_owned()))
            .collect(),
        automation: AutomationFields::of(&m.automation),
        ..EditForm::default()
    });
    let preview = (form.op == "preview").then(|| crate::web::view::markdown(&form.description));
    let components = component_choices(state, &form.rest).await?;
    page(
        status,
        &EditPage {
            site: state.site.clone(),
            me: me(signed_in),
            w,
            form,
            preview,
            impacts: Impact::ALL
                .iter()
                .map(|i| (i.as_str(), i.label()))
                .collect(),
            components,
            error,
            new_step,
        },
    )
}

pub async fn edit(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(id): Path<i64>,
) -> Result<Response, AppError> {
    edit_page(
        &state,
        &signed_in,
        id,
        StatusCode::OK,
        None,
        None,
        String::new(),
    )
    .await
}

/// A refused change as the admin pages say it: the status and the sentence.
pub(crate) fn refusal(e: &DomainError) -> (StatusCode, String) {
    match e {
        DomainError::Rule(r) => (StatusCode::CONFLICT, format!("Not done: {r}.")),
        DomainError::Invalid(v) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("Not done: the {} {}.", v.field, v.message),
        ),
    }
}

pub async fn save_edit(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    CsrfForm { signed_in, form }: CsrfForm<EditForm>,
) -> Result<Response, AppError> {
    if form.op == "preview" {
        return edit_page(
            &state,
            &signed_in,
            id,
            StatusCode::OK,
            Some(form),
            None,
            String::new(),
        )
        .await;
    }
    let slugs = ticked_components(&form.rest);
    let automation = form.automation.parse().map_err(ServiceError::from);
    let result = match (state.service.components_by_slug(&slugs).await, automation) {
        (Err(e), _) | (_, Err(e)) => Err(e),
        (Ok(components), Ok(automation)) => {
            state
                .service
                .acting(signed_in.actor())
                .edit(
                    id,
                    crate::domain::Edit {
                        title: Some(form.title.clone()),
                        description: Some(form.description.clone()),
                        impact: Impact::parse(&form.impact),
                        components: Some(components),
                        auto_start: Some(automation.auto_start),
                        auto_complete: Some(automation.auto_complete),
                        reminders: Some(automation.reminders),
                    },
                    crate::domain::ScheduleChange::default(),
                )
                .await
        }
    };
    match result {
        Ok(_) => Ok(done(&format!("/admin/maintenances/{id}"), "saved")),
        Err(ServiceError::Domain(e)) => {
            let (status, message) = refusal(&e);
            edit_page(
                &state,
                &signed_in,
                id,
                status,
                Some(form),
                Some(message),
                String::new(),
            )
            .await
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, Deserialize)]
pub struct PlanForm {
    op: String,
    #[serde(default)]
    position: i64,
    #[serde(default)]
    title: String,
}

pub async fn edit_plan(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    CsrfForm { signed_in, form }: CsrfForm<PlanForm>,
) -> Result<Response, AppError> {
    let position = form.position;
    let edit = match form.op.as_str() {
        "add" => crate::domain::PlanEdit::Add {
            title: form.title.clone(),
            description: None,
        },
        "edit" => crate::domain::PlanEdit::Edit {
            position,
            title: form.title.clone(),
            description: None,
        },
        "remove" => crate::domain::PlanEdit::Remove { position },
        "up" | "down" => crate::domain::PlanEdit::Move {
            position,
            up: form.op == "up",
        },
        other => {
            return Err(AppError::BadRequest(format!(
                "unknown plan change {other:?}"
            )));
        }
    };
    match state
        .service
        .acting(signed_in.actor())
        .edit_plan(id, edit)
        .await
    {
        Ok(_) => Ok(done(&format!("/admin/maintenances/{id}/edit"), "plan")),
        Err(ServiceError::Domain(e)) => {
            let (status, message) = refusal(&e);
            let keep = if form.op == "add" {
                form.title
            } else {
                String::new()
            };
            edit_page(&state, &signed_in, id, status, None, Some(message), keep).await
        }
        Err(e) => Err(e.into()),
    }
}
