//! Answers to interactions: within Discord's 3-second deadline, and never
//! losing what the user typed.
//!
//! Discord shows "This interaction failed" when the first answer comes later
//! than 3 s, even if the report was saved, and users then submit it again. So
//! work that may wait on keeper.db runs under [`answer_in_time`]: when it is
//! not done within [`DEFER_AFTER`] the interaction is deferred ("Keeper is
//! thinking…") and the deferred answer edited once the work ends (an
//! interaction token lasts 15 minutes).
//!
//! A refusal carries the user's text back, so nothing typed is lost; when
//! that would pass Discord's 2,000-character limit, the text goes as a file.

use std::future::Future;
use std::time::Duration;

use serenity::all::{
    Context, CreateAllowedMentions, CreateAttachment, CreateInteractionResponse, CreateInteractionResponseFollowup,
    CreateInteractionResponseMessage, EditInteractionResponse, ModalInteraction,
};

/// Longer than this and the interaction is deferred: leaves Discord's 3 s
/// for the gateway's delivery and our answer's trip.
pub const DEFER_AFTER: Duration = Duration::from_millis(1000);

/// Discord's limit on a message's content, in characters.
pub const MESSAGE_MAX_CHARS: usize = 2000;

/// The name of the file that carries a user's text when it is too long to quote.
pub const TEXT_FILE_NAME: &str = "your-report.txt";

/// One answer, however it is delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub text: String,
    /// Only the user sees it (every refusal).
    pub ephemeral: bool,
    /// (file name, contents) attached to the message.
    pub file: Option<(String, String)>,
}

impl Reply {
    /// An answer everyone in the channel sees.
    pub fn public(text: impl Into<String>) -> Reply {
        Reply {
            text: text.into(),
            ephemeral: false,
            file: None,
        }
    }

    /// An answer only the user sees.
    pub fn private(text: impl Into<String>) -> Reply {
        Reply {
            text: text.into(),
            ephemeral: true,
            file: None,
        }
    }

    /// A refusal: `message`, then the user's `typed` text (label, value) to
    /// copy, quoted when it fits in one message, else attached as a file.
    pub fn refusal(message: impl Into<String>, typed: &[(String, String)]) -> Reply {
        let message = message.into();
        let typed: Vec<&(String, String)> = typed.iter().filter(|(_, v)| !v.trim().is_empty()).collect();
        if typed.is_empty() {
            return Reply::private(message);
        }
        let plain: String = typed
            .iter()
            .map(|(label, value)| format!("{label}:\n{value}\n\n"))
            .collect();
        let quoted = format!(
            "{message}\nYour text, to copy:\n```\n{}\n```",
            plain.trim_end().replace("```", "'''")
        );
        if quoted.chars().count() <= MESSAGE_MAX_CHARS {
            return Reply::private(quoted);
        }
        Reply {
            text: format!("{message}\nYour text is in the attached {TEXT_FILE_NAME}, to copy."),
            ephemeral: true,
            file: Some((TEXT_FILE_NAME.to_owned(), plain)),
        }
    }

    fn attachment(&self) -> Option<CreateAttachment> {
        self.file
            .as_ref()
            .map(|(name, text)| CreateAttachment::bytes(text.as_bytes().to_vec(), name.clone()))
    }

    /// As the interaction's first answer.
    pub fn response(&self) -> CreateInteractionResponse {
        let mut message = CreateInteractionResponseMessage::new()
            .content(&self.text)
            .ephemeral(self.ephemeral)
            // User text is echoed: it must never ping anyone.
            .allowed_mentions(CreateAllowedMentions::new());
        if let Some(file) = self.attachment() {
            message = message.add_file(file);
        }
        CreateInteractionResponse::Message(message)
    }
}

/// Runs `work` and answers `modal` with its reply within Discord's deadline:
/// directly when `work` is quick, else by deferring first and then editing
/// the deferred answer (or, for a private reply, sending it as a private
/// follow-up and removing the public "thinking" line).
pub async fn answer_in_time(ctx: &Context, modal: &ModalInteraction, work: impl Future<Output = Reply>) {
    let mut work = std::pin::pin!(work);
    let reply = match tokio::time::timeout(DEFER_AFTER, work.as_mut()).await {
        Ok(reply) => {
            if let Err(error) = modal.create_response(&ctx.http, reply.response()).await {
                tracing::warn!(interaction = %modal.id, %error, "cannot answer a form");
            }
            return;
        }
        Err(_) => {
            let defer = CreateInteractionResponse::Defer(CreateInteractionResponseMessage::new());
            if let Err(error) = modal.create_response(&ctx.http, defer).await {
                tracing::warn!(interaction = %modal.id, %error, "cannot defer the answer to a form");
            } else {
                tracing::info!(interaction = %modal.id, "form answer deferred: keeper.db is slow");
            }
            work.await
        }
    };
    let sent = if reply.ephemeral {
        let mut followup = CreateInteractionResponseFollowup::new()
            .content(&reply.text)
            .ephemeral(true)
            .allowed_mentions(CreateAllowedMentions::new());
        if let Some(file) = reply.attachment() {
            followup = followup.add_file(file);
        }
        match modal.create_followup(&ctx.http, followup).await {
            Ok(_) => modal.delete_response(&ctx.http).await,
            Err(error) => Err(error),
        }
    } else {
        let mut edit = EditInteractionResponse::new()
            .content(&reply.text)
            .allowed_mentions(CreateAllowedMentions::new());
        if let Some(file) = reply.attachment() {
            edit = edit.new_attachment(file);
        }
        modal.edit_response(&ctx.http, edit).await.map(|_| ())
    };
    if let Err(error) = sent {
        tracing::warn!(interaction = %modal.id, %error, "cannot send the deferred answer to a form");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(value: &str) -> Vec<(String, String)> {
        vec![
            ("📝 Description".to_owned(), value.to_owned()),
            ("Empty".to_owned(), " ".to_owned()),
        ]
    }

    #[test]
    fn a_refusal_quotes_the_text_or_attaches_it() {
        let short = Reply::refusal("❌ no", &typed("lore ``` here"));
        assert!(short.ephemeral);
        assert!(short.file.is_none());
        assert!(short.text.contains("📝 Description:\nlore ''' here"), "{}", short.text);
        assert!(!short.text.contains("Empty"));

        let long_text = "ä".repeat(1990);
        let long = Reply::refusal("❌ no", &typed(&long_text));
        assert!(long.text.chars().count() <= MESSAGE_MAX_CHARS);
        let (name, contents) = long.file.expect("a file");
        assert_eq!(name, TEXT_FILE_NAME);
        assert!(contents.contains(&long_text));

        assert_eq!(Reply::refusal("❌ no", &[]), Reply::private("❌ no"));
    }
}
