//! The names the operator gives what it creates at Twilio. Pure.
//!
//! Contract: every key, and every subaccount while it is being created, carries
//! `[twop:<12 hex of the object UID>]` at the end of its friendly name, within Twilio's 64
//! characters, so whatever a crash leaves behind can be found by its owner and no other.

/// The name an object's Twilio resource shows: `spec.friendlyName`, or `<namespace>/<name>`.
pub fn display_name(friendly_name: Option<&str>, namespace: &str, name: &str) -> String {
    friendly_name.map_or_else(|| format!("{namespace}/{name}"), str::to_owned)
}

/// The tag naming this object in Twilio friendly names.
pub fn tag(uid: &str) -> String {
    let hex: String = uid.chars().filter(char::is_ascii_hexdigit).take(12).collect();
    format!("[twop:{hex}]")
}

/// `display` with the object's tag, cut to Twilio's 64 characters.
pub fn tagged_name(display: &str, uid: &str) -> String {
    let tag = tag(uid);
    let room = 64 - tag.chars().count() - 1;
    let cut: String = display.chars().take(room).collect();
    format!("{} {tag}", cut.trim_end())
}

/// The friendly name a subaccount is created under: from the object's UID alone, so a spec edit
/// while a create is interrupted cannot change the name it is found by.
pub fn creation_name(uid: &str) -> String {
    format!("twilio-operator {}", tag(uid))
}

/// The tag at the end of a Twilio friendly name, if it carries one.
pub fn tag_in(friendly_name: &str) -> Option<&str> {
    let start = friendly_name.rfind("[twop:")?;
    let tag = &friendly_name[start..];
    tag.ends_with(']').then_some(tag)
}

/// Whether a Twilio friendly name carries this object's tag.
pub fn is_tagged(friendly_name: Option<&str>, uid: &str) -> bool {
    friendly_name.is_some_and(|n| n.ends_with(&tag(uid)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_fit_in_64_characters() {
        let uid = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
        let long = "x".repeat(80);
        let name = tagged_name(&long, uid);
        assert_eq!(name.chars().count(), 64);
        assert!(is_tagged(Some(&name), uid));
        assert_eq!(
            tagged_name("team-a/checkout", uid),
            "team-a/checkout [twop:0f1e2d3c4b5a]"
        );
        assert!(!is_tagged(Some("team-a/checkout"), uid) && !is_tagged(None, uid));
        assert!(!is_tagged(Some(&tagged_name("x", "ffffffff-0000")), uid));
        assert_eq!(tag_in(&name), Some("[twop:0f1e2d3c4b5a]"));
        assert_eq!(tag_in("[twop:0f1e] renamed"), None);
    }
}
