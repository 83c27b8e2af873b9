//! The NIP-11 relay information document. It lists only what works: the
//! NIPs this build implements and the limits actually enforced.

use serde_json::{json, Value};

use crate::config::Config;

/// NIPs implemented by the relay core; 77 is added when negentropy is on.
const CORE_NIPS: &[u16] = &[1, 9, 11, 40, 42, 45];

pub fn document(config: &Config) -> Value {
    let info = &config.info;
    let limits = &config.limits;
    let policy = &config.policy;
    let mut nips = CORE_NIPS.to_vec();
    if config.negentropy.enabled {
        nips.push(77);
    }
    let mut doc = json!({
        "name": info.name,
        "description": info.description,
        "software": "https://github.com/echorelay/echorelay",
        "version": env!("CARGO_PKG_VERSION"),
        "supported_nips": nips,
        "limitation": {
            "max_message_length": limits.max_message_size,
            "max_subscriptions": limits.max_subscriptions,
            "max_filters": limits.max_filters,
            "max_limit": limits.max_limit,
            "max_ids_per_filter": limits.max_ids_per_filter,
            "default_limit": limits.max_limit,
            "max_subid_length": limits.max_subid_length,
            "max_event_tags": policy.max_tags,
            "min_pow_difficulty": 0,
            "auth_required": config.auth.require_for_read,
            "payment_required": false,
            "restricted_writes": config.auth.require_for_write
                || !policy.pubkey_allow.is_empty()
                || !policy.kind_allow.is_empty(),
            "created_at_upper_limit": policy.max_future_seconds,
        },
    });
    // Only limits that are enforced: 0 means "none", which NIP-11 says by
    // leaving the field out.
    if policy.max_content_length > 0 {
        doc["limitation"]["max_content_length"] = json!(policy.max_content_length);
    }
    if policy.max_past_seconds > 0 {
        doc["limitation"]["created_at_lower_limit"] = json!(policy.max_past_seconds);
    }
    for (key, value) in [
        ("pubkey", &info.pubkey),
        ("contact", &info.contact),
        ("icon", &info.icon),
    ] {
        if !value.is_empty() {
            doc[key] = json!(value);
        }
    }
    doc
}
