//! What an announcement says on each channel. The wording is in `templates/notify/` (one
//! block per event and channel kind); this module fills in the facts, builds Discord's embed
//! and Bluesky's post, and keeps every platform limit.

use askama::Template;
use atrium_api::app::bsky::embed::external;
use atrium_api::app::bsky::feed::post;
use atrium_api::app::bsky::richtext::facet;
use atrium_api::types::Union;
use atrium_api::types::string::{Datetime, Language};
use serenity::builder::{CreateEmbed, CreateEmbedFooter};
use unicode_segmentation::UnicodeSegmentation;

use crate::domain::{
    Component, Impact, Incident, IncidentUpdate, IncidentUpdateKind, Maintenance, Rollout,
    RolloutState, RolloutUpdate, Schedule, StepState, TargetState, Update, WindowState, format_utc,
};

/// Discord's limits (INTEGRATIONS.md): content, embed title, description, field value,
/// footer, and the sum over all embeds of a message.
pub mod discord_limits {
    pub const CONTENT: usize = 2000;
    pub const TITLE: usize = 256;
    pub const DESCRIPTION: usize = 4096;
    pub const FIELD_VALUE: usize = 1024;
    pub const FOOTER: usize = 2048;
    pub const EMBED_TOTAL: usize = 6000;
}

/// Bluesky's post limits: graphemes and UTF-8 bytes of `text`.
pub const POST_GRAPHEMES: usize = 300;
pub const POST_BYTES: usize = 3000;

/// The facts every wording template may use.
pub struct Event {
    pub kind: &'static str,
    pub title: String,
    pub body: String,
    pub note: Option<String>,
    pub step: String,
    pub position: i64,
    pub done: usize,
    pub total: usize,
    /// Discord: the schedule as `<t:…>` tags, each reader's own zone.
    pub when_discord: String,
    /// Bluesky: the schedule in UTC words.
    pub when_utc: String,
    /// Discord: the expected end as a relative `<t:…:R>` tag, or empty.
    pub ends_discord: String,
    pub components: String,
    /// A rescheduling that gave an undated window its first date.
    pub date_set: bool,
}

#[derive(Template)]
#[template(path = "notify/discord.txt", escape = "none")]
struct DiscordText<'a> {
    e: &'a Event,
}

#[derive(Template)]
#[template(path = "notify/bluesky.txt", escape = "none")]
struct BlueskyText<'a> {
    e: &'a Event,
}

/// The facts every rollout wording template may use.
pub struct RolloutEvent {
    pub kind: &'static str,
    pub title: String,
    pub body: String,
    pub note: Option<String>,
    pub from: Option<String>,
    pub to: String,
    pub total: usize,
    /// Bluesky: this post starts the rollout's own thread.
    pub root: bool,
}

impl RolloutEvent {
    fn new(r: &Rollout, update: &RolloutUpdate, markdown: bool, root: bool) -> Self {
        let text = |s: &str| {
            if markdown {
                escape_markdown(s)
            } else {
                s.to_owned()
            }
        };
        Self {
            kind: update.kind.as_str(),
            title: text(&r.title),
            body: text(&r.public_text(&update.body)),
            note: update.note.as_deref().map(|n| text(&r.public_text(n))),
            from: r.from_version.as_deref().map(text),
            to: text(&r.to_version),
            total: r.targets.len(),
            root,
        }
    }
}

#[derive(Template)]
#[template(path = "notify/discord_rollout.txt", escape = "none")]
struct DiscordRolloutText<'a> {
    e: &'a RolloutEvent,
}

#[derive(Template)]
#[template(path = "notify/bluesky_rollout.txt", escape = "none")]
struct BlueskyRolloutText<'a> {
    e: &'a RolloutEvent,
}

/// Escape Discord markdown so a title like `*nix_boxes` shows as typed; `<` is escaped so
/// text cannot form a mention or a timestamp tag (mentions are also never parsed).
pub fn escape_markdown(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(
            c,
            '\\' | '*' | '_' | '~' | '`' | '|' | '>' | '<' | '#' | '[' | ']' | '@'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn discord_when(m: &Maintenance) -> String {
    match m.schedule() {
        Schedule::Fixed {
            starts_at,
            ends_at: Some(end),
        } => format!(
            "<t:{s}:F> to <t:{e}:t> (<t:{s}:R>)",
            s = starts_at.as_second(),
            e = end.as_second()
        ),
        Schedule::Fixed { starts_at, .. } => {
            format!("<t:{s}:F> (<t:{s}:R>)", s = starts_at.as_second())
        }
        Schedule::Tentative { hint: Some(hint) } => {
            format!("date to be announced ({})", escape_markdown(&hint))
        }
        Schedule::Tentative { hint: None } => "date to be announced".to_owned(),
    }
}

fn utc_when(m: &Maintenance) -> String {
    match m.schedule() {
        Schedule::Fixed {
            starts_at,
            ends_at: Some(end),
        } => {
            let same_day =
                starts_at.strftime("%Y%m%d").to_string() == end.strftime("%Y%m%d").to_string();
            if same_day {
                format!(
                    "{} to {} UTC",
                    starts_at.strftime("%a %-d %b %Y, %H:%M"),
                    end.strftime("%H:%M")
                )
            } else {
                format!("{} to {}", format_utc(starts_at), format_utc(end))
            }
        }
        Schedule::Fixed { starts_at, .. } => format_utc(starts_at),
        Schedule::Tentative { hint: Some(hint) } => format!("Date to be announced: {hint}"),
        Schedule::Tentative { hint: None } => "Date to be announced".to_owned(),
    }
}

impl Event {
    /// The facts of `update` on `window`; `markdown` escapes maintainer text for Discord.
    fn new(window: &Maintenance, update: &Update, markdown: bool) -> Self {
        let text = |s: &str| {
            if markdown {
                escape_markdown(s)
            } else {
                s.to_owned()
            }
        };
        let step = update
            .step_position
            .and_then(|p| window.steps.iter().find(|s| s.position == p));
        // Times in a text reach Discord as its timestamp tags, which each reader sees in their
        // own zone; elsewhere they stay as written, in UTC.
        let timed = |s: &str| {
            if markdown {
                crate::domain::map_utc_times(s, escape_markdown, |t| {
                    format!("<t:{}:F>", t.as_second())
                })
            } else {
                s.to_owned()
            }
        };
        Self {
            kind: update.kind.as_str(),
            title: text(&window.title),
            body: timed(&update.body),
            note: update.note.as_deref().map(timed),
            date_set: update.is_date_set(),
            step: step.map(|s| text(&s.title)).unwrap_or_default(),
            position: update.step_position.unwrap_or(0),
            done: window.steps_done(),
            total: window.steps.len(),
            when_discord: discord_when(window),
            when_utc: utc_when(window),
            ends_discord: window
                .ends_at
                .map(|e| format!("<t:{}:R>", e.as_second()))
                .unwrap_or_default(),
            components: window
                .components
                .iter()
                .map(|c| text(&c.name))
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

/// Cut `s` to at most `max` characters, ending with "…" when cut.
pub fn cut_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The short message Discord gets for a milestone, after `prefix` (a role mention or nothing),
/// within Discord's 2000 characters.
pub fn discord_message(
    window: &Maintenance,
    update: &Update,
    page_url: &str,
    prefix: &str,
) -> String {
    let event = Event::new(window, update, true);
    let text = DiscordText { e: &event }
        .render()
        .unwrap_or_else(|_| event.title.clone());
    let link = format!("\n<{page_url}>");
    let room = discord_limits::CONTENT - link.chars().count() - prefix.chars().count();
    format!("{prefix}{}{link}", cut_chars(text.trim(), room))
}

/// The short Discord message for a rollout milestone, within Discord's 2000 characters.
pub fn discord_rollout_message(r: &Rollout, update: &RolloutUpdate, page_url: &str) -> String {
    let event = RolloutEvent::new(r, update, true, false);
    let text = DiscordRolloutText { e: &event }
        .render()
        .unwrap_or_else(|_| event.title.clone());
    let link = format!("\n<{page_url}>");
    let room = discord_limits::CONTENT - link.chars().count();
    format!("{}{link}", cut_chars(text.trim(), room))
}

fn target_mark(state: TargetState) -> &'static str {
    match state {
        TargetState::Pending => "⬜",
        TargetState::Draining => "⏳",
        TargetState::Drained => "🟦",
        TargetState::Updating => "🔄",
        TargetState::Healthy => "✅",
        TargetState::Failed => "❌",
    }
}

/// What a rollout's state is called where it is shown: stalled is computed, not stored.
pub fn rollout_status(r: &Rollout, now: jiff::Timestamp) -> String {
    if r.is_stalled(now) {
        return format!(
            "Stalled: no progress for {}",
            crate::domain::human_duration(
                now.duration_since(r.last_progress_at.or(r.started_at).unwrap_or(now))
            )
        );
    }
    match (r.state, r.rolled_back_by) {
        (RolloutState::Aborted, Some(_)) => "Rolled back".to_owned(),
        (s, Some(_)) => format!("{}, then rolled back", s.label()),
        (s, None) => s.label().to_owned(),
    }
}

/// The live rollout message: an embed edited in place as the rollout moves, one line per
/// target with its state and what is left to drain.
pub fn discord_rollout_embed(
    r: &Rollout,
    page_url: &str,
    site_name: &str,
    now: jiff::Timestamp,
) -> CreateEmbed {
    use discord_limits as l;
    let title = cut_chars(&format!("Rollout: {}", r.title), l::TITLE);
    let status = rollout_status(r, now);
    let versions = match &r.from_version {
        Some(from) => format!(
            "{} → {}",
            escape_markdown(from),
            escape_markdown(&r.to_version)
        ),
        None => escape_markdown(&r.to_version),
    };
    let footer = cut_chars(site_name, 100);
    let used = title.chars().count()
        + status.chars().count().min(l::FIELD_VALUE)
        + versions.chars().count().min(l::FIELD_VALUE)
        + footer.chars().count()
        + 30;
    let room = l::EMBED_TOTAL.saturating_sub(used).min(l::DESCRIPTION);
    let total = r.targets.len();
    let healthy = r.healthy();
    let cells = total.min(20);
    let bar: String = (0..cells)
        .map(|i| {
            if i < healthy * cells / total.max(1) {
                '▰'
            } else {
                '▱'
            }
        })
        .collect();
    let mut description = format!(
        "**{}**\n{healthy} of {total} healthy {bar}\n",
        escape_markdown(&r.version_headline())
    );
    let more = |n: usize| format!("… and {n} more targets: {page_url}");
    for (i, t) in r.targets.iter().enumerate() {
        let mut line = format!(
            "{} {}: {}",
            target_mark(t.state),
            escape_markdown(&cut_chars(&r.public_name(t), 100)),
            t.state.as_str()
        );
        if (t.state == TargetState::Draining && !t.remaining.is_empty())
            || (t.state == TargetState::Failed && t.remaining_total() > 0)
        {
            let counts: Vec<String> = t
                .remaining
                .iter()
                .map(|(label, n)| match t.drain_start_counts.get(label) {
                    Some(start) if start >= n => format!("{label} {n} of {start}"),
                    _ => format!("{label} {n}"),
                })
                .collect();
            line.push_str(&format!(" ({})", escape_markdown(&counts.join(", "))));
        }
        if t.forced {
            line.push_str(" · forced");
        }
        if t.is_stale(r.stale_after, now) {
            line.push_str(" · no report lately");
        }
        line.push('\n');
        let left = total - i;
        let reserve = if left > 1 {
            more(left).chars().count()
        } else {
            0
        };
        if description.chars().count() + line.chars().count() + reserve > room {
            description.push_str(&more(left));
            break;
        }
        description.push_str(&line);
    }
    let colour = match r.state {
        RolloutState::Completed => 0x1a7f37,
        RolloutState::Aborted | RolloutState::Paused => 0x6e7781,
        RolloutState::Failed => 0xcf222e,
        _ if r.is_stalled(now) || r.targets.iter().any(|t| t.state == TargetState::Failed) => {
            0xcf222e
        }
        RolloutState::InProgress => 0xbf8700,
        RolloutState::Pending => 0x0969da,
    };
    let mut embed = CreateEmbed::new()
        .title(title)
        .url(page_url)
        .colour(colour)
        .field("Status", cut_chars(&status, l::FIELD_VALUE), true)
        .field("Versions", cut_chars(&versions, l::FIELD_VALUE), true)
        .description(cut_chars(description.trim_end(), room));
    if let Ok(ts) = serenity::model::Timestamp::from_unix_timestamp(now.as_second()) {
        embed = embed.timestamp(ts);
    }
    embed.footer(CreateEmbedFooter::new(footer))
}

fn step_mark(state: StepState) -> &'static str {
    match state {
        StepState::Pending => "⬜",
        StepState::InProgress => "🔄",
        StepState::Done => "✅",
        StepState::Failed => "❌",
        StepState::Skipped => "⏭️",
    }
}

/// Embed colour: what a reader takes in before reading.
fn colour(m: &Maintenance) -> u32 {
    match m.state {
        WindowState::Completed => 0x1a7f37,
        WindowState::Cancelled => 0x6e7781,
        WindowState::InProgress if m.steps.iter().any(|s| s.state == StepState::Failed) => 0xcf222e,
        WindowState::InProgress => 0xbf8700,
        _ => 0x0969da,
    }
}

/// A progress line: "3 of 6 steps done ▰▰▰▱▱▱".
fn progress_line(m: &Maintenance) -> String {
    let total = m.steps.len();
    let settled = m.steps_settled();
    let cells = total.min(20);
    let filled = settled * cells / total.max(1);
    let bar: String = (0..cells)
        .map(|i| if i < filled { '▰' } else { '▱' })
        .collect();
    format!("{} of {total} steps done {bar}", m.steps_done())
}

/// The live announcement: an embed that is edited in place as the window proceeds.
pub fn discord_embed(
    window: &Maintenance,
    page_url: &str,
    site_name: &str,
    now: jiff::Timestamp,
) -> CreateEmbed {
    use discord_limits as l;
    let title = cut_chars(&window.title, l::TITLE);
    let state = match window.state {
        WindowState::InProgress => match window.current_step() {
            Some(s) if s.state == StepState::Failed => {
                format!("In progress: step {} failed", s.position)
            }
            Some(s) => format!("In progress: step {} of {}", s.position, window.steps.len()),
            None => "In progress".to_owned(),
        },
        s => s.label().to_owned(),
    };
    let state = if window.is_overrunning(now) {
        format!("{state}, overrunning")
    } else {
        state
    };
    let when = discord_when(window);
    let components = window
        .components
        .iter()
        .map(|c| escape_markdown(&c.name))
        .collect::<Vec<_>>()
        .join(", ");

    let footer = cut_chars(site_name, 100);
    // The whole embed stays within 6000: title 256 + fields ≤ 3 × (name + 1024) + footer
    // 100 leave room for a description of 4096 minus what the fields took.
    let used = window.title.chars().count().min(l::TITLE)
        + state.chars().count().min(l::FIELD_VALUE)
        + when.chars().count().min(l::FIELD_VALUE)
        + components.chars().count().min(l::FIELD_VALUE)
        + footer.chars().count()
        + 30;
    let room = l::EMBED_TOTAL.saturating_sub(used).min(l::DESCRIPTION);

    // Description: the maintainer's words, then the plan as a checklist. A long plan is cut
    // at a whole step with a pointer to the page, within the room the rest leaves.
    let intro = cut_chars(&window.description, 1000.min(room / 4));
    let mut description = escape_markdown_keep_lines(&intro);
    if !window.steps.is_empty() {
        if !description.is_empty() {
            description.push_str("\n\n");
        }
        description.push_str(&format!("**Plan**: {}\n", progress_line(window)));
        let more = |n: usize| format!("… and {n} more steps: {page_url}");
        for (i, s) in window.steps.iter().enumerate() {
            let line = format!(
                "{} {}. {}\n",
                step_mark(s.state),
                s.position,
                escape_markdown(&cut_chars(&s.title, 200))
            );
            let left = window.steps.len() - i;
            let reserve = if left > 1 {
                more(left).chars().count()
            } else {
                0
            };
            if description.chars().count() + line.chars().count() + reserve > room {
                description.push_str(&more(left));
                break;
            }
            description.push_str(&line);
        }
    }
    let mut embed = CreateEmbed::new()
        .title(title)
        .url(page_url)
        .colour(colour(window))
        .field("Status", cut_chars(&state, l::FIELD_VALUE), true)
        .field("When", cut_chars(&when, l::FIELD_VALUE), true);
    if !components.is_empty() {
        embed = embed.field("Affected", cut_chars(&components, l::FIELD_VALUE), true);
    }
    let description = cut_chars(description.trim_end(), room);
    if !description.is_empty() {
        embed = embed.description(description);
    }
    if let Ok(ts) = serenity::model::Timestamp::from_unix_timestamp(now.as_second()) {
        embed = embed.timestamp(ts);
    }
    embed.footer(CreateEmbedFooter::new(footer))
}

fn escape_markdown_keep_lines(s: &str) -> String {
    // Descriptions are markdown already (the status page renders them); Discord understands
    // most of it. Only mentions and timestamp tags are neutralised.
    s.replace('<', "\\<").replace('@', "@\u{200b}")
}

/// A Bluesky post: text (shortened at a grapheme boundary to fit, keeping the link), a link
/// facet over the link text, and for the thread's root a link card.
pub struct BlueskyPost {
    pub text: String,
    pub link_start: usize,
    pub link_end: usize,
    pub page_url: String,
    pub card: Option<(String, String)>,
}

/// How a link is shown: without the scheme, to save graphemes; the facet carries the URL.
fn shown_link(url: &str) -> &str {
    url.strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .unwrap_or(url)
}

/// Cut `s` to at most `graphemes` graphemes and `bytes` bytes, ending with "…" when cut.
pub fn cut_graphemes(s: &str, graphemes: usize, bytes: usize) -> String {
    let count = s.graphemes(true).count();
    if count <= graphemes && s.len() <= bytes {
        return s.to_owned();
    }
    let mut out = String::new();
    for (i, g) in s.graphemes(true).enumerate() {
        if i + 1 >= graphemes || out.len() + g.len() + '…'.len_utf8() > bytes {
            break;
        }
        out.push_str(g);
    }
    let mut out = out.trim_end().to_owned();
    out.push('…');
    out
}

pub fn bluesky_post(
    window: &Maintenance,
    update: &Update,
    page_url: &str,
    root: bool,
) -> BlueskyPost {
    let event = Event::new(window, update, false);
    let text = BlueskyText { e: &event }
        .render()
        .unwrap_or_else(|_| event.title.clone());
    let card = root.then(|| {
        let description = match window.description.trim() {
            "" => utc_when(window),
            d => cut_chars(d, 300),
        };
        (cut_chars(&window.title, 300), description)
    });
    with_link(text.trim(), page_url, card)
}

/// A Bluesky post for a rollout event: in the linked window's thread or the rollout's own,
/// linking to the rollout's page; the root of its own thread carries a link card.
pub fn bluesky_rollout_post(
    r: &Rollout,
    update: &RolloutUpdate,
    page_url: &str,
    root: bool,
) -> BlueskyPost {
    let event = RolloutEvent::new(r, update, false, root);
    let text = BlueskyRolloutText { e: &event }
        .render()
        .unwrap_or_else(|_| event.title.clone());
    let card = root.then(|| {
        let description = match r.description.trim() {
            "" => r.version_headline(),
            d => cut_chars(d, 300),
        };
        (
            cut_chars(&format!("Rollout: {}", r.title), 300),
            description,
        )
    });
    with_link(text.trim(), page_url, card)
}

/// `body` and the link to `page_url`, cut to fit Bluesky's limits, the link kept whole.
fn with_link(body: &str, page_url: &str, card: Option<(String, String)>) -> BlueskyPost {
    let link = shown_link(page_url);
    let sep = "\n\n";
    let link_graphemes = link.graphemes(true).count() + sep.len();
    let body = cut_graphemes(
        body,
        POST_GRAPHEMES.saturating_sub(link_graphemes),
        POST_BYTES - link.len() - sep.len(),
    );
    let text = format!("{body}{sep}{link}");
    let link_end = text.len();
    let link_start = link_end - link.len();
    BlueskyPost {
        text,
        link_start,
        link_end,
        page_url: page_url.to_owned(),
        card,
    }
}

/// The post as an `app.bsky.feed.post` record.
pub fn post_record(
    post: &BlueskyPost,
    created_at: Datetime,
    langs: &[String],
    reply: Option<post::ReplyRef>,
) -> post::RecordData {
    let link = facet::MainData {
        index: facet::ByteSliceData {
            byte_start: post.link_start,
            byte_end: post.link_end,
        }
        .into(),
        features: vec![Union::Refs(facet::MainFeaturesItem::Link(Box::new(
            facet::LinkData {
                uri: post.page_url.clone(),
            }
            .into(),
        )))],
    };
    let embed = post.card.as_ref().map(|(title, description)| {
        Union::Refs(post::RecordEmbedRefs::AppBskyEmbedExternalMain(Box::new(
            external::MainData {
                external: external::ExternalData {
                    uri: post.page_url.clone(),
                    title: title.clone(),
                    description: description.clone(),
                    thumb: None,
                    associated_refs: None,
                }
                .into(),
            }
            .into(),
        )))
    });
    post::RecordData {
        created_at,
        embed,
        entities: None,
        facets: Some(vec![link.into()]),
        labels: None,
        langs: Some(
            langs
                .iter()
                .filter_map(|l| l.parse::<Language>().ok())
                .take(3)
                .collect(),
        ),
        reply,
        tags: None,
        text: post.text.clone(),
    }
}

/// An incident's affected components as posts name them: "API (partial outage), Web
/// (degraded)"; components no longer known are left out.
pub fn incident_components(i: &Incident, components: &[Component]) -> String {
    i.components
        .iter()
        .filter_map(|(id, status)| {
            let c = components.iter().find(|c| c.id == *id)?;
            Some(format!("{} ({})", c.name, status.label().to_lowercase()))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn impact_mark(i: &Incident) -> &'static str {
    if !i.is_open() {
        return "✅";
    }
    match i.impact {
        Impact::Critical | Impact::Major => "🔴",
        Impact::Minor => "🟠",
        Impact::None => "🔵",
    }
}

/// What an incident update says, plain text: the first line names the incident and what
/// happened, then the update's words, then (on an opening or when they changed) the
/// components. `escape` makes it Discord markdown (the maintainer's words escaped).
pub fn incident_text(
    i: &Incident,
    u: &IncidentUpdate,
    components: &[Component],
    escape: bool,
) -> String {
    let e = |s: &str| {
        if escape {
            escape_markdown_keep_lines(s)
        } else {
            s.to_owned()
        }
    };
    let title = if escape {
        format!("**{}**", escape_markdown(&i.title))
    } else {
        i.title.clone()
    };
    let head = match u.kind {
        IncidentUpdateKind::Published => format!(
            "{} Incident: {title} ({})",
            impact_mark(i),
            i.impact.label().to_lowercase()
        ),
        IncidentUpdateKind::Status | IncidentUpdateKind::Note => {
            format!("{} {title}: {}", impact_mark(i), u.status.label())
        }
        IncidentUpdateKind::Resolved => format!("✅ Resolved: {title}"),
        IncidentUpdateKind::Reopened => format!("🔁 Reopened: {title}"),
        IncidentUpdateKind::Postmortem => format!("📝 Postmortem: {title}"),
    };
    let mut text = head;
    let body = match u.kind {
        IncidentUpdateKind::Postmortem => cut_chars(u.body.trim(), 600),
        _ => u.body.trim().to_owned(),
    };
    if !body.is_empty() {
        text.push('\n');
        text.push_str(&e(&body));
    }
    let shows_components = u.kind == IncidentUpdateKind::Published || u.components.is_some();
    let affected = incident_components(i, components);
    if shows_components && i.is_open() && !affected.is_empty() {
        text.push_str("\nAffects: ");
        text.push_str(&if escape {
            escape_markdown(&affected)
        } else {
            affected
        });
    }
    text
}

/// The short Discord message for an incident update, within Discord's 2000 characters. It
/// mentions nobody.
pub fn discord_incident_message(
    i: &Incident,
    u: &IncidentUpdate,
    components: &[Component],
    page_url: &str,
) -> String {
    let link = format!("\n<{page_url}>");
    let room = discord_limits::CONTENT - link.chars().count();
    let text = incident_text(i, u, components, true);
    format!("{}{link}", cut_chars(text.trim(), room))
}

/// The live incident message: status, impact, the components with their statuses and the
/// latest update, edited in place as the incident moves.
pub fn discord_incident_embed(
    i: &Incident,
    latest: &IncidentUpdate,
    components: &[Component],
    page_url: &str,
    site_name: &str,
) -> CreateEmbed {
    use discord_limits as l;
    let title = cut_chars(&format!("Incident: {}", i.title), l::TITLE);
    let colour = match (i.is_open(), i.impact) {
        (false, _) => 0x1a7f37,
        (true, Impact::Critical | Impact::Major) => 0xcf222e,
        (true, Impact::Minor) => 0xbf8700,
        (true, Impact::None) => 0x0969da,
    };
    let affected = i
        .components
        .iter()
        .filter_map(|(id, status)| {
            let c = components.iter().find(|c| c.id == *id)?;
            Some(format!("{}: {}", escape_markdown(&c.name), status.label()))
        })
        .collect::<Vec<_>>()
        .join("\n");
    let latest_text = format!(
        "**{}** ({})\n{}",
        latest.kind.label(latest.status),
        format_utc(latest.created_at),
        escape_markdown_keep_lines(latest.body.trim())
    );
    let mut embed = CreateEmbed::new()
        .title(title)
        .url(page_url)
        .colour(colour)
        .description(cut_chars(&latest_text, 3000))
        .field("Status", i.status.label(), true)
        .field("Impact", i.impact.label(), true);
    if !affected.is_empty() && i.is_open() {
        embed = embed.field("Affected", cut_chars(&affected, l::FIELD_VALUE), false);
    }
    if let Ok(ts) = serenity::model::Timestamp::from_unix_timestamp(
        i.updated_at.max(latest.created_at).as_second(),
    ) {
        embed = embed.timestamp(ts);
    }
    embed.footer(CreateEmbedFooter::new(cut_chars(site_name, 100)))
}

/// A Bluesky post for an incident update: the opening is the thread's root with a link card,
/// each later update a reply.
pub fn bluesky_incident_post(
    i: &Incident,
    u: &IncidentUpdate,
    components: &[Component],
    page_url: &str,
    root: bool,
) -> BlueskyPost {
    let text = incident_text(i, u, components, false);
    let card = root.then(|| {
        (
            cut_chars(&format!("Incident: {}", i.title), 300),
            cut_chars(
                &format!(
                    "{}. {}",
                    i.impact.label(),
                    incident_components(i, components)
                ),
                300,
            ),
        )
    });
    with_link(text.trim(), page_url, card)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graphemes_are_cut_whole() {
        let family = "👨‍👩‍👧‍👦";
        let s = family.repeat(400);
        let cut = cut_graphemes(&s, 300, 3000);
        assert!(cut.graphemes(true).count() <= 300);
        assert!(cut.len() <= 3000);
        assert!(cut.ends_with('…'));
        assert!(
            cut.trim_end_matches('…')
                .graphemes(true)
                .all(|g| g == family)
        );
        assert_eq!(cut_graphemes("short", 300, 3000), "short");
    }

    #[test]
    fn markdown_is_escaped() {
        assert_eq!(escape_markdown("*a_b* <@123>"), "\\*a\\_b\\* \\<\\@123\\>");
    }
}

/// Text for HTML (mails, feed entries), escaped as askama escapes the pages.
pub fn escape_html(s: &str) -> String {
    askama::filters::escape(s, askama::filters::Html)
        .map(|e| e.to_string())
        .unwrap_or_default()
}

/// A mail's words: the subject and the body as plain paragraphs (the first one is the
/// headline), the same facts the page shows, times in UTC and in the site's zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailWords {
    pub subject: String,
    pub paragraphs: Vec<String>,
}

/// A time as `Mon 1 Dec 2026, 14:00 UTC`, and in `zone` after it when that is not UTC.
pub fn utc_and_zone(t: jiff::Timestamp, zone: &jiff::tz::TimeZone) -> String {
    let utc = format_utc(t);
    if zone.iana_name() == Some("UTC") || zone == &jiff::tz::TimeZone::UTC {
        return utc;
    }
    let local = t.to_zoned(zone.clone());
    format!("{utc} ({})", local.strftime("%a %-d %b, %H:%M %Z"))
}

/// The times Herald wrote in `text` (in UTC), each followed by the site's zone.
fn zoned_text(text: &str, zone: &jiff::tz::TimeZone) -> String {
    crate::domain::map_utc_times(text, str::to_owned, |t| utc_and_zone(t, zone))
}

fn mail_when(m: &Maintenance, zone: &jiff::tz::TimeZone) -> String {
    match m.schedule() {
        Schedule::Fixed {
            starts_at,
            ends_at: Some(end),
        } => format!(
            "{} to {}",
            utc_and_zone(starts_at, zone),
            utc_and_zone(end, zone)
        ),
        Schedule::Fixed { starts_at, .. } => utc_and_zone(starts_at, zone),
        Schedule::Tentative { .. } => utc_when(m),
    }
}

/// A window's event as a mail: the headline Bluesky would post (uncut), then the window's
/// schedule, what it affects and where it stands.
pub fn mail_window(window: &Maintenance, update: &Update, zone: &jiff::tz::TimeZone) -> MailWords {
    let event = Event::new(window, update, false);
    let headline = BlueskyText { e: &event }
        .render()
        .unwrap_or_else(|_| event.title.clone());
    let mut paragraphs = vec![zoned_text(headline.trim(), zone)];
    if update.kind == crate::domain::UpdateKind::Announced && !window.description.trim().is_empty()
    {
        paragraphs.push(window.description.trim().to_owned());
    }
    paragraphs.push(format!("When: {}", mail_when(window, zone)));
    if !event.components.is_empty() {
        paragraphs.push(format!("Affects: {}", event.components));
    }
    if !window.steps.is_empty() && update.kind != crate::domain::UpdateKind::Announced {
        paragraphs.push(format!(
            "Progress: {} of {} steps done.",
            window.steps_done(),
            window.steps.len()
        ));
    }
    let label = update.kind.label();
    MailWords {
        subject: format!("{}: {label}", window.title),
        paragraphs,
    }
}

/// A rollout's event as a mail.
pub fn mail_rollout(r: &Rollout, update: &RolloutUpdate) -> MailWords {
    let event = RolloutEvent::new(r, update, false, false);
    let headline = BlueskyRolloutText { e: &event }
        .render()
        .unwrap_or_else(|_| event.title.clone());
    let mut paragraphs = vec![headline.trim().to_owned()];
    paragraphs.push(r.version_headline());
    MailWords {
        subject: format!("Rollout: {}: {}", r.title, update.kind.label()),
        paragraphs,
    }
}

/// An incident's update as a mail.
pub fn mail_incident(
    i: &Incident,
    u: &IncidentUpdate,
    components: &[Component],
    zone: &jiff::tz::TimeZone,
) -> MailWords {
    let text = incident_text(i, u, components, false);
    let mut paragraphs: Vec<String> = text
        .split('\n')
        .filter(|l| !l.trim().is_empty())
        .map(|l| zoned_text(l, zone))
        .collect();
    paragraphs.push(format!("Posted {}", utc_and_zone(u.created_at, zone)));
    MailWords {
        subject: format!("Incident: {}: {}", i.title, u.status.label()),
        paragraphs,
    }
}
