//! Suggestions while the user types `/discovery-report`: star systems from
//! VH-Database, then that system's planets and moons as `planet:NAME` /
//! `moon:NAME`.
//!
//! Suggestions are a convenience, never a gate: any failure (no VH-Database
//! on this host, a locked file) answers with no choices, and the user can
//! still type any name.

use serenity::all::{
    CommandInteraction, Context, CreateAutocompleteResponse, CreateInteractionResponse, ResolvedValue,
};

use crate::sink::Sink;

/// Discord's limit on a choice's name and value.
const CHOICE_MAX_CHARS: usize = 100;

/// Answers one autocomplete interaction.
pub async fn answer(ctx: &Context, command: &CommandInteraction, sink: &Sink) {
    let Some(focused) = command.data.autocomplete() else {
        return;
    };
    let suggestions = match focused.name {
        "system" => sink.system_names(focused.value).await,
        "location" => {
            let system = command
                .data
                .options()
                .into_iter()
                .find_map(|o| match (o.name, o.value) {
                    ("system", ResolvedValue::String(s)) => Some(s),
                    _ => None,
                });
            match system {
                Some(system) => sink.places_in(system, focused.value).await,
                None => Ok(Vec::new()),
            }
        }
        _ => Ok(Vec::new()),
    };
    let suggestions = suggestions.unwrap_or_else(|error| {
        tracing::warn!(option = focused.name, %error, "no suggestions: VH-Database cannot be read");
        Vec::new()
    });
    let mut response = CreateAutocompleteResponse::new();
    for name in suggestions
        .into_iter()
        .filter(|n| n.chars().count() <= CHOICE_MAX_CHARS)
    {
        response = response.add_string_choice(name.clone(), name);
    }
    if let Err(error) = command
        .create_response(&ctx.http, CreateInteractionResponse::Autocomplete(response))
        .await
    {
        tracing::warn!(interaction = %command.id, %error, "cannot answer an autocomplete request");
    }
}
