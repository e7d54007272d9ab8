//! Suggestions while the user types `/discovery-report`: star systems from
//! VH-Database, then that system's planets and moons as `planet:NAME` /
//! `moon:NAME`.
//!
//! Names match whatever the letter case and accents (see [`names`]).
//! Suggestions are a convenience, never a gate: any failure (no VH-Database
//! on this host, a locked file) answers with no choices, and the user can
//! still type any name.

use serenity::all::{
    CommandInteraction, Context, CreateAutocompleteResponse, CreateInteractionResponse, ResolvedValue,
};

use super::names;
use crate::sink::{Sink, SinkError};

/// Discord's limit on a choice's name and value.
const CHOICE_MAX_CHARS: usize = 100;

/// Answers one autocomplete interaction.
pub async fn answer(ctx: &Context, command: &CommandInteraction, sink: &Sink) {
    let Some(focused) = command.data.autocomplete() else {
        return;
    };
    let suggestions = match focused.name {
        "system" => sink.system_names().await.map(|all| {
            names::suggest(&all, focused.value)
                .into_iter()
                .map(str::to_owned)
                .collect()
        }),
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
                Some(system) => places(sink, system, focused.value).await,
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

/// The places of the system the user chose (however they wrote its name)
/// that match what they typed.
async fn places(sink: &Sink, system: &str, typed: &str) -> Result<Vec<String>, SinkError> {
    let systems = sink.system_names().await?;
    let folded = names::fold(system);
    let Some(stored) = systems
        .iter()
        .find(|s| names::maps_to(system, s))
        .or_else(|| systems.iter().find(|s| names::fold(s) == folded))
    else {
        return Ok(Vec::new());
    };
    let all = sink.places_of(stored).await?;
    Ok(names::suggest(&all, typed).into_iter().map(str::to_owned).collect())
}
