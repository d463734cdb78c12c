//! Each event's metadata: who caused it, by which command, in which request.

use marquee_domain::{CommandName, UserId};
use serde_json::Value;
use uuid::Uuid;

/// Who caused a change and which request it belongs to; stored as each event's metadata.
/// Ids only, never personal data.
#[derive(Clone, Debug)]
pub struct Metadata {
    pub actor: Actor,
    /// The command that caused the events, and the id of that one execution of it: every
    /// event one command causes shares it (a cancellation and the refunds it caused, say).
    pub command: &'static str,
    pub causation_id: Uuid,
    /// The HTTP request's id (echoed in its `x-request-id` response header), or a fresh id for
    /// work the engine does on its own.
    pub correlation_id: String,
}

/// Who caused a change.
#[derive(Clone, Copy, Debug)]
pub enum Actor {
    User(UserId),
    Timer,
    System,
}

impl Metadata {
    /// Metadata for work the engine does on its own (the expiry timer, startup).
    pub fn engine(actor: Actor) -> Self {
        Self {
            actor,
            command: "",
            causation_id: Uuid::nil(),
            correlation_id: Uuid::now_v7().to_string(),
        }
    }

    /// Metadata for a change `user` asked for in the request `request_id`.
    pub fn for_user(user: UserId, request_id: String) -> Self {
        Self {
            actor: Actor::User(user),
            command: "",
            causation_id: Uuid::nil(),
            correlation_id: request_id,
        }
    }

    /// The same metadata for one execution of `command`.
    pub fn caused_by(&self, command: &impl CommandName) -> Self {
        self.named(command.name())
    }

    /// The same metadata for one execution of the command called `name`.
    pub fn named(&self, name: &'static str) -> Self {
        Self {
            command: name,
            causation_id: Uuid::now_v7(),
            ..self.clone()
        }
    }

    pub(crate) fn to_value(&self) -> Value {
        let actor = match self.actor {
            Actor::User(id) => format!("user:{id}"),
            Actor::Timer => "timer".into(),
            Actor::System => "system".into(),
        };
        serde_json::json!({
            "actor": actor,
            "correlation_id": self.correlation_id,
            "command": self.command,
            "causation_id": self.causation_id.to_string(),
        })
    }
}
