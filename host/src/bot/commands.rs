//! `/discovery-report`: its definition, the type's modal, and the submission.
//!
//! The form is rendered from [`report::discovery_types`] (the labels, placeholders,
//! limits and styles users know), and a submission becomes the same JSON
//! record `POST /discoveries` takes, checked by [`Report::from_json`] alone:
//! the bot adds no rule of its own.

use serde_json::{Map, Value};
use serenity::all::{
    ActionRowComponent, Command, CommandInteraction, CommandOptionType, Context, CreateActionRow, CreateCommand,
    CreateCommandOption, CreateInputText, CreateInteractionResponse, CreateModal, GuildId, InputTextStyle, Member,
    ModalInteraction, ResolvedValue, User,
};

use super::attachments::{Attachments, Kept};
use super::forms::{Forms, Taken};
use super::notices::{self, Notice};
use super::placement;
use super::reply::{self, Reply};
use crate::app::App;
use crate::report::{self, DiscoveryType, FieldStyle, Report};
use crate::store::{IntakeKey, request_hash};

/// The slash command's name.
pub const COMMAND_NAME: &str = "discovery-report";

/// The command's options as the user gave them; each becomes the record key
/// of the same meaning (see [`record`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    pub discovery_type: String,
    pub system: String,
    pub location: String,
    pub coordinates: Option<String>,
    /// The attachment's URL, or the `evidence_url` option.
    pub evidence_url: Option<String>,
    /// `evidence_url` is an image attached in Discord (kept at submit time,
    /// see [`super::attachments`]), not a link the reporter typed.
    pub evidence_attached: bool,
    pub condition: Option<String>,
    pub time_period: Option<String>,
    pub significance: Option<String>,
}

/// Who reports: from the interaction itself, never from user input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reporter {
    pub user_id: String,
    pub username: String,
    pub guild_id: Option<String>,
}

impl Reporter {
    /// The display name users see: guild nickname, else global name, else username.
    fn new(user: &User, member: Option<&Member>, guild: Option<GuildId>) -> Reporter {
        let username = member.map_or_else(|| user.display_name(), |m| m.display_name());
        Reporter {
            user_id: user.id.to_string(),
            username: username.to_owned(),
            guild_id: guild.map(|g| g.to_string()),
        }
    }
}

/// The JSON record of a report: the options, the reporter and the modal's
/// values (column → text). Absent options are left out; the values are
/// passed as typed, for [`Report::from_json`] to judge.
pub fn record(options: &Options, reporter: &Reporter, inputs: &[(String, String)]) -> Value {
    let mut obj = Map::new();
    let mut put = |key: &str, value: Option<&str>| {
        if let Some(v) = value {
            obj.insert(key.to_owned(), Value::String(v.to_owned()));
        }
    };
    put("discovery_type", Some(&options.discovery_type));
    put("system_name", Some(&options.system));
    put("location", Some(&options.location));
    put("coordinates", options.coordinates.as_deref());
    put("evidence_url", options.evidence_url.as_deref());
    put("condition", options.condition.as_deref());
    put("time_period", options.time_period.as_deref());
    put("significance", options.significance.as_deref());
    put("username", Some(&reporter.username));
    put("user_id", Some(&reporter.user_id));
    put("guild_id", reporter.guild_id.as_deref());
    for (column, value) in inputs {
        obj.insert(column.clone(), Value::String(value.clone()));
    }
    Value::Object(obj)
}

/// The command as registered: the type choice list, system and location with
/// autocomplete, then the optional common fields (Discord wants required
/// options first).
pub fn definition() -> CreateCommand {
    let mut kind = CreateCommandOption::new(CommandOptionType::String, "type", "What kind of discovery").required(true);
    for t in report::discovery_types() {
        kind = kind.add_string_choice(format!("{} {}", t.emoji, t.name), t.emoji);
    }
    let text = |name: &str, description: &str, max: usize| {
        CreateCommandOption::new(CommandOptionType::String, name, description).max_length(limit(max))
    };
    let limits = report::limits();
    CreateCommand::new(COMMAND_NAME)
        .description("Report a discovery to the archive")
        .add_option(kind)
        .add_option(
            text("system", "The star system's name", limits.system_name)
                .required(true)
                .set_autocomplete(true),
        )
        .add_option(
            CreateCommandOption::new(
                CommandOptionType::String,
                "location",
                "planet:NAME, moon:NAME or space:NAME",
            )
            .required(true)
            .set_autocomplete(true),
        )
        .add_option(text("coordinates", "Portal glyphs or latitude/longitude", limits.text))
        .add_option(CreateCommandOption::new(
            CommandOptionType::Attachment,
            "evidence",
            "A screenshot of the discovery",
        ))
        .add_option(text(
            "evidence_url",
            "A link to the evidence (http:// or https://)",
            limits.evidence_url,
        ))
        .add_option(text("condition", "The discovery's condition", limits.text))
        .add_option(text("time_period", "When it dates from, if known", limits.text))
        .add_option(text("significance", "Why it matters", limits.text))
}

/// A limit as Discord's `u16`; our limits are all far below 4000.
fn limit(max: usize) -> u16 {
    u16::try_from(max).unwrap_or(u16::MAX)
}

/// Registers keeper's commands one by one, in `guild` (instant) or globally
/// (Discord takes up to an hour to show it everywhere). Creating a command
/// under a name the application already has updates that command; the
/// application's other commands (the old bot's `/quick-discovery`, …) are
/// left as they are, which replacing the whole list would not do.
pub async fn register(ctx: &Context, guild: Option<GuildId>) {
    for command in [definition(), super::moderation::definition()] {
        let result = match guild {
            Some(guild) => guild.create_command(&ctx.http, command).await,
            None => Command::create_global_command(&ctx.http, command).await,
        };
        match (result, guild) {
            (Ok(command), Some(guild)) => tracing::info!(%guild, "/{} registered in the guild", command.name),
            (Ok(command), None) => tracing::info!("/{} registered globally", command.name),
            (Err(error), _) => tracing::error!(%error, "cannot register a command; users will not see it"),
        }
    }
}

/// The options of a command interaction. An unknown option is ignored (an
/// older registration may still be live); unknown values are for
/// [`Report::from_json`] to refuse.
fn options_of(command: &CommandInteraction) -> Options {
    let mut options = Options::default();
    let mut evidence_url = None;
    for option in command.data.options() {
        let text = match option.value {
            ResolvedValue::String(s) => s.to_owned(),
            ResolvedValue::Attachment(a) => a.url.clone(),
            _ => continue,
        };
        match option.name {
            "type" => options.discovery_type = text,
            "system" => options.system = text,
            "location" => options.location = text,
            "coordinates" => options.coordinates = Some(text),
            // An attachment wins over a link: it is what the user just uploaded.
            "evidence" => {
                options.evidence_url = Some(text);
                options.evidence_attached = true;
            }
            "evidence_url" => evidence_url = Some(text),
            "condition" => options.condition = Some(text),
            "time_period" => options.time_period = Some(text),
            "significance" => options.significance = Some(text),
            _ => {}
        }
    }
    if options.evidence_url.is_none() {
        options.evidence_url = evidence_url;
    }
    options
}

/// The modal of `kind`: its five inputs, each with its column as `custom_id`.
pub fn modal(kind: &DiscoveryType, custom_id: String) -> CreateModal {
    let rows = kind
        .fields
        .iter()
        .map(|field| {
            let style = match field.style {
                FieldStyle::Short => InputTextStyle::Short,
                FieldStyle::Paragraph => InputTextStyle::Paragraph,
            };
            CreateActionRow::InputText(
                CreateInputText::new(style, field.label, field.column)
                    .placeholder(field.placeholder)
                    .max_length(limit(field.max_chars))
                    .required(field.required),
            )
        })
        .collect();
    CreateModal::new(custom_id, format!("{} {}", kind.emoji, kind.name)).components(rows)
}

/// `/discovery-report`: checks the options (so a bad location is said before
/// the user types a description), then opens the type's modal.
pub async fn open_form(ctx: &Context, command: &CommandInteraction, forms: &Forms) {
    let options = options_of(command);
    let reporter = Reporter::new(&command.user, command.member.as_deref(), command.guild_id);
    // The same validation as the submission, with a stand-in description.
    let probe = record(&options, &reporter, &[("description".to_owned(), "-".to_owned())]);
    let response = match Report::from_json(&probe) {
        Err(error) => {
            tracing::info!(user_id = %reporter.user_id, %error, "/{COMMAND_NAME} refused before the form");
            failure(format!("❌ {error}"))
        }
        Ok(report) => match report.discovery() {
            None => failure(format!("❌ discovery_type: {} is not known", report.discovery_type)),
            Some(kind) => {
                let custom_id = forms.open(command.id.get(), command.user.id, options);
                CreateInteractionResponse::Modal(modal(kind, custom_id))
            }
        },
    };
    if let Err(error) = command.create_response(&ctx.http, response).await {
        tracing::warn!(interaction = %command.id, %error, "cannot answer /{COMMAND_NAME}");
    }
}

/// A submitted modal: validate, store with its queue row, wake the worker,
/// and only then say "archived", within Discord's deadline (see [`reply`]).
///
/// The interaction id is the intake key: Discord may deliver the same
/// interaction again (a resumed gateway session replays it), and a repeat
/// must neither store the report twice nor tell the user it expired.
pub async fn submit(
    ctx: &Context,
    modal: &ModalInteraction,
    nonce: u64,
    forms: &Forms,
    app: &App,
    attachments: &Attachments,
) {
    let mut archived = None;
    let key = IntakeKey::discord(modal.id.get());
    reply::answer_in_time(ctx, modal, async {
        let inputs = inputs_of(modal);
        match forms.take(nonce, modal.user.id).await {
            Ok(Taken::Open(form)) => {
                let reporter = Reporter::new(&modal.user, modal.member.as_ref(), modal.guild_id);
                let (reply, stored) = store(app, attachments, &key, &form.options, &reporter, &inputs).await;
                archived = stored.map(|(id, placed)| (id, placed, reply.text.clone()));
                reply
            }
            Ok(taken) => match app.store.intake_answer(&key).await {
                Ok(Some(first)) => {
                    tracing::info!(
                        interaction = %modal.id,
                        discovery_id = first.discovery_id,
                        "interaction delivered again; already archived"
                    );
                    Reply::public(format!("✅ Discovery archived! #{}", first.discovery_id))
                }
                _ => {
                    tracing::info!(interaction = %modal.id, nonce, ?taken, "a form came back that is not open");
                    Reply::refusal(
                        "⌛ This form has expired or was already sent (forms last 15 minutes); nothing was saved \
                         from it. Please run /discovery-report again.",
                        &typed(None, &inputs),
                    )
                }
            },
            Err(error) => {
                tracing::error!(interaction = %modal.id, %error, "cannot read an open form from keeper.db");
                Reply::refusal(
                    "❌ The archive could not read your form (keeper.db: the operators have been told in the \
                     log). Nothing was saved; please try again later.",
                    &typed(None, &inputs),
                )
            }
        }
    })
    .await;
    // Only once the confirmation exists may news edit it.
    if let Some((discovery_id, placed, confirmation)) = archived {
        let notice = Notice {
            discovery_id,
            token: modal.token.clone(),
            channel_id: Some(modal.channel_id.get()),
            user_id: modal.user.id.get(),
            confirmation,
            placed,
        };
        if let Err(error) = notices::remember(app.store.db(), &notice).await {
            tracing::warn!(discovery_id, %error, "cannot remember whom to tell of this report's sync");
        }
    }
}

/// The modal's text inputs as (custom_id, value).
fn inputs_of(modal: &ModalInteraction) -> Vec<(String, String)> {
    modal
        .data
        .components
        .iter()
        .flat_map(|row| &row.components)
        .filter_map(|component| match component {
            ActionRowComponent::InputText(input) => {
                Some((input.custom_id.clone(), input.value.clone().unwrap_or_default()))
            }
            _ => None,
        })
        .collect()
}

/// Validates and stores one submission (once per interaction: `key`); the
/// answer to give the user and, when stored, the discovery id and whether
/// it will be on the map.
async fn store(
    app: &App,
    attachments: &Attachments,
    key: &IntakeKey,
    options: &Options,
    reporter: &Reporter,
    inputs: &[(String, String)],
) -> (Reply, Option<(i64, bool)>) {
    // A form input may only fill a column of the form's type: a crafted
    // `custom_id` such as "user_id" must not overwrite the reporter.
    let kind = report::discovery_type(&options.discovery_type);
    if let Some((column, _)) = inputs.iter().find(|(c, _)| kind.and_then(|k| k.field(c)).is_none()) {
        tracing::warn!(user_id = %reporter.user_id, column = %column, "a form came back with a field it does not have");
        let refusal = Reply::refusal(
            format!(
                "❌ the form sent a field it does not have ({column}); nothing was saved. Please run \
                 /discovery-report again."
            ),
            &typed(kind, inputs),
        );
        return (refusal, None);
    }
    let mut record = record(options, reporter, inputs);
    let mut report = match Report::from_json(&record) {
        Ok(report) => report,
        Err(error) => {
            tracing::info!(user_id = %reporter.user_id, %error, "/{COMMAND_NAME} form refused");
            return (
                Reply::refusal(format!("❌ {error}. Nothing was saved."), &typed(kind, inputs)),
                None,
            );
        }
    };
    let mut notes = Vec::new();
    if let Some(url) = options.evidence_url.as_deref().filter(|_| options.evidence_attached) {
        match attachments.keep(url, &reporter.user_id).await {
            Kept::Link(link) => {
                let mut kept = record.clone();
                kept["evidence_url"] = Value::String(link);
                match Report::from_json(&kept) {
                    Ok(with_link) => (record, report) = (kept, with_link),
                    Err(error) => {
                        tracing::error!(%error, "the kept image's link does not fit a report; keeping Discord's")
                    }
                }
            }
            Kept::DiscordLink => {}
            Kept::Failed(why) => notes.push(format!(
                "⚠️ Your image was not kept by the archive: {why}. The report links to Discord's copy, which \
                 expires in about a day."
            )),
        }
    }
    let warning = placement::check(&app.sink(), &report).await;
    match app
        .store
        .submit_once(key, &request_hash(&record), &report, app.settings.sync_max_attempts)
        .await
    {
        Ok(intake) => {
            app.wake.reports_stored(u64::from(!intake.repeated));
            let id = intake.discovery_id;
            tracing::info!(
                discovery_id = id,
                user_id = %reporter.user_id,
                guild_id = reporter.guild_id.as_deref().unwrap_or("-"),
                discovery_type = %report.discovery_type,
                on_the_map = warning.is_none(),
                "discovery archived from Discord"
            );
            let kind = report.discovery().map_or_else(String::new, |k| format!(" {k}"));
            let mut text = format!(
                "✅ Discovery archived! #{id}{kind} in {} ({}), reported by {}",
                report.system_name, report.location, report.username
            );
            let placed = warning.is_none();
            for note in warning.into_iter().chain(notes) {
                text.push('\n');
                text.push_str(&note);
            }
            (Reply::public(text), Some((id, placed)))
        }
        Err(error) => {
            tracing::error!(user_id = %reporter.user_id, %error, "cannot store a discovery from Discord");
            let refusal = Reply::refusal(
                "❌ The archive could not save your report (keeper.db: the operators have been told in the \
                 log). Nothing was saved; please try again later.",
                &typed(kind, inputs),
            );
            (refusal, None)
        }
    }
}

/// What the user typed in the form, labelled as the form showed it, in form order.
fn typed(kind: Option<&DiscoveryType>, inputs: &[(String, String)]) -> Vec<(String, String)> {
    inputs
        .iter()
        .map(|(column, value)| {
            let label = kind
                .or_else(|| report::discovery_type_of_column(column))
                .and_then(|k| k.field(column))
                .map_or_else(|| column.clone(), |f| f.label.to_owned());
            (label, value.clone())
        })
        .collect()
}

/// An answer only the user sees, pinging no one.
fn failure(text: impl Into<String>) -> CreateInteractionResponse {
    Reply::private(text).response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{DISCORD_INPUT_MAX, DISCORD_LABEL_MAX, DISCORD_PLACEHOLDER_MAX, DISCORD_TITLE_MAX};

    #[test]
    fn forms_fit_discord_limits() {
        for t in report::discovery_types() {
            assert!(format!("{} {}", t.emoji, t.name).chars().count() <= DISCORD_TITLE_MAX);
            for f in &t.fields {
                assert!(f.label.chars().count() <= DISCORD_LABEL_MAX, "{}", f.label);
                assert!(
                    f.placeholder.chars().count() <= DISCORD_PLACEHOLDER_MAX,
                    "{}",
                    f.placeholder
                );
                assert!(f.max_chars <= DISCORD_INPUT_MAX);
            }
        }
    }

    #[test]
    fn record_is_what_the_validator_takes() {
        let options = Options {
            discovery_type: "💎".into(),
            system: "Ixiezh HV".into(),
            location: "moon:Getre Beta".into(),
            evidence_url: Some("https://cdn.example/x.png".into()),
            ..Options::default()
        };
        let reporter = Reporter {
            user_id: "42".into(),
            username: "Nick".into(),
            guild_id: Some("7".into()),
        };
        let inputs = [
            ("description".to_owned(), "Shiny".to_owned()),
            ("resource_type".to_owned(), "".to_owned()),
        ];
        let report = Report::from_json(&record(&options, &reporter, &inputs)).expect("valid");
        assert_eq!(report.user_id, "42");
        assert_eq!(report.guild_id.as_deref(), Some("7"));
        assert!(report.fields.is_empty());
    }
}
