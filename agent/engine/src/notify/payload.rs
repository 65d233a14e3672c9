//! What a webhook receives for a notification: the JSON event, or one line of text for Slack and
//! Discord.

use serde::Serialize;

use super::Notification;
use crate::config::WebhookFormat;

/// Discord refuses message content longer than this many characters.
const DISCORD_MAX_CHARS: usize = 2000;

/// The generic JSON body: the notification, tagged by `event`, with the time it was raised.
#[derive(Debug, Serialize)]
struct Envelope<'a> {
    #[serde(flatten)]
    notification: &'a Notification,
    /// Unix milliseconds when the notification was raised.
    at: u64,
}

/// The body POSTed to a webhook of this `format`.
pub(super) fn body(format: WebhookFormat, notification: &Notification, at: u64) -> serde_json::Value {
    match format {
        WebhookFormat::Json => serde_json::to_value(Envelope { notification, at })
            .unwrap_or_else(|e| serde_json::json!({ "event": notification.event(), "error": e.to_string() })),
        WebhookFormat::Slack => serde_json::json!({ "text": slack_escape(&notification.summary()) }),
        WebhookFormat::Discord => serde_json::json!({
            "content": truncate(&notification.summary(), DISCORD_MAX_CHARS),
            // Text from policy scripts must never ping @everyone or a role.
            "allowed_mentions": { "parse": [] },
        }),
    }
}

/// Slack reads `&`, `<` and `>` as markup (links, mentions); escaped they show as typed.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn truncate(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_string();
    }
    let mut s: String = text.chars().take(max_chars - 1).collect();
    s.push('…');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::IntentId;

    #[test]
    fn slack_markup_is_escaped_and_discord_is_bounded_without_mentions() {
        let n = Notification::Alert { policy: "p".into(), message: "<!channel> a & b".into() };
        let slack = body(WebhookFormat::Slack, &n, 0);
        assert_eq!(slack["text"], "treasury alert from policy `p`: &lt;!channel&gt; a &amp; b");
        let long = Notification::Alert { policy: "p".into(), message: "x".repeat(5000) };
        let discord = body(WebhookFormat::Discord, &long, 0);
        assert_eq!(discord["content"].as_str().unwrap().chars().count(), DISCORD_MAX_CHARS);
        assert_eq!(discord["allowed_mentions"]["parse"], serde_json::json!([]));
    }

    #[test]
    fn json_is_tagged_by_the_subscription_name() {
        let n =
            Notification::Failed { intent: IntentId(7), policy: "payroll".into(), reason: "revert".into() };
        let json = body(WebhookFormat::Json, &n, 42);
        assert_eq!(
            json,
            serde_json::json!({"event": "failure", "intent": 7, "policy": "payroll", "reason": "revert", "at": 42})
        );
    }
}
