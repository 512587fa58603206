//! Every Redis key and channel name notify uses, in one place (listed in docs/OPERATIONS.md).
//!
//! Tenant ids never contain `:` or braces, so every name parses back. Names in braces are
//! Redis Cluster hash tags: keys that one script touches together share a slot.

use crate::stream::Target;

/// The pub/sub channel of one stream: `notify:{tenant}:u:{user}`, `notify:{tenant}:c:{channel}`
/// or `notify:{tenant}:b`.
pub(crate) fn stream_channel(tenant: &str, target: Target<'_>) -> String {
    match target {
        Target::User(u) => format!("notify:{tenant}:u:{u}"),
        Target::Channel(c) => format!("notify:{tenant}:c:{c}"),
        Target::Broadcast => format!("notify:{tenant}:b"),
    }
}

/// The tenant and stream a [`stream_channel`] name stands for.
pub(crate) fn parse_stream_channel(name: &str) -> Option<(&str, Target<'_>)> {
    let rest = name.strip_prefix("notify:")?;
    let (tenant, rest) = rest.split_once(':')?;
    let target = match rest.split_once(':') {
        Some(("u", user)) => Target::User(user),
        Some(("c", channel)) => Target::Channel(channel),
        None if rest == "b" => Target::Broadcast,
        _ => return None,
    };
    Some((tenant, target))
}

/// A stream's history: its position hash `{CHANNEL}:pos` (`epoch`, `offset`, `acked`) and its
/// events `{CHANNEL}:events` (a Redis stream), in the slot of the stream's channel.
pub(crate) fn history(channel: &str) -> [String; 2] {
    [format!("{{{channel}}}:pos"), format!("{{{channel}}}:events")]
}

/// The Redis Cluster hash slot of `key`: CRC16 of its hash tag (the part between the first
/// `{` and the next `}`, when not empty), or of the whole key, modulo 16384.
fn slot(key: &str) -> u16 {
    let tagged = key.split_once('{').and_then(|(_, rest)| rest.split_once('}')).map(|(tag, _)| tag);
    let hashed = tagged.filter(|t| !t.is_empty()).unwrap_or(key);
    crc16::State::<crc16::XMODEM>::calculate(hashed.as_bytes()) % SLOTS
}

const SLOTS: u16 = 16384;

/// For each hash slot, the smallest number whose hex form hashes to it (found once, in a
/// few milliseconds: 314,737 numbers cover every slot).
pub(crate) fn slot_tags() -> &'static [u32] {
    static TAGS: std::sync::OnceLock<Box<[u32]>> = std::sync::OnceLock::new();
    TAGS.get_or_init(|| {
        let mut tags = vec![u32::MAX; usize::from(SLOTS)];
        let mut missing = tags.len();
        let mut hex = String::new();
        for n in 0u32.. {
            use std::fmt::Write as _;
            hex.clear();
            write!(hex, "{n:x}").expect("writing to a String");
            let tag = &mut tags[usize::from(slot(&hex))];
            if *tag == u32::MAX {
                *tag = n;
                missing -= 1;
                if missing == 0 {
                    break;
                }
            }
        }
        tags.into()
    })
}

/// The store id of the hash slot `key` is in: `notify:store:{TAG}`, with a TAG that hashes
/// to that slot, so a script touching `key` may read it on a Redis Cluster too. It names
/// one lifetime of the slot's data (history's look epochs start with it): created once and
/// never expiring, it is new after a flush or a lost Redis.
pub(crate) fn slot_store(key: &str) -> String {
    format!("notify:store:{{{:x}}}", slot_tags()[usize::from(slot(key))])
}

/// A glob matching every [`history`] key of a tenant (tenant ids have no glob characters).
pub(crate) fn history_pattern(tenant: &str) -> String {
    format!("{{notify:{tenant}:*")
}

/// A user's push devices (a hash: id -> JSON) and the tenant's device count, in one slot
/// per tenant: `{notify:{tenant}:devices}:u:{user}` and `{notify:{tenant}:devices}:count`.
pub(crate) fn devices(tenant: &str, user: &str) -> [String; 2] {
    [format!("{{notify:{tenant}:devices}}:u:{user}"), format!("{{notify:{tenant}:devices}}:count")]
}

/// A user's push state beside their devices: preferences (a string of JSON), the pushes of
/// the last hour (a sorted set of times), the pushes sent and not yet read (a sorted set:
/// offset -> JSON).
pub(crate) fn push_state(tenant: &str, user: &str) -> [String; 3] {
    [
        format!("{{notify:{tenant}:devices}}:p:{user}"),
        format!("{{notify:{tenant}:devices}}:r:{user}"),
        format!("{{notify:{tenant}:devices}}:s:{user}"),
    ]
}

/// Every [`devices`] and [`push_state`] key of a tenant.
pub(crate) fn devices_pattern(tenant: &str) -> String {
    format!("{{notify:{tenant}:devices}}:*")
}

/// Pending push escalations of every tenant: their due times (a sorted set) and bodies (a
/// hash), in one slot.
pub(crate) const ESCALATIONS: [&str; 2] = ["{notify:push}:due", "{notify:push}:bodies"];

/// The stream publishers XADD events to: `notify:{tenant}:ingest`.
pub(crate) fn ingest_stream(tenant: &str) -> String {
    format!("notify:{tenant}:ingest")
}

/// An idempotency key's owner: `notify:{tenant}:idem:{key}` (no hash tag: a tenant's keys
/// spread over a cluster's slots).
pub(crate) fn idempotency(tenant: &str, key: &str) -> String {
    format!("notify:{tenant}:idem:{key}")
}

/// The consumer group every node reads ingest streams with.
pub(crate) const INGEST_GROUP: &str = "notify";

/// The pub/sub channel publishers PUBLISH events to: `notify:{tenant}:publish`.
pub(crate) fn publish_channel(tenant: &str) -> String {
    format!("notify:{tenant}:publish")
}

/// The tenant whose [`publish_channel`] `name` is.
pub(crate) fn parse_publish_channel(name: &str) -> Option<&str> {
    name.strip_prefix("notify:").and_then(|r| r.strip_suffix(":publish"))
}

/// Where invalid ingested events go, with the error: `notify:{tenant}:dead`.
pub(crate) fn dead_letter_stream(tenant: &str) -> String {
    format!("notify:{tenant}:dead")
}

/// The lease of the node that reads [`publish_channel`]s.
pub(crate) const PUBLISH_LEASE: &str = "notify:ingest:publish-lease";

/// Online/offline transitions of a tenant's users: `notify:{tenant}:presence`.
pub(crate) fn presence_stream(tenant: &str) -> String {
    format!("notify:{tenant}:presence")
}

/// One node's connection counts per user of a tenant.
pub(crate) fn presence_node(tenant: &str, node: &str) -> String {
    format!("notify:presence:{{{tenant}}}:node:{node}")
}

/// The users of a tenant currently reported online.
pub(crate) fn presence_online(tenant: &str) -> String {
    format!("notify:presence:{{{tenant}}}:online")
}

/// The nodes counting a tenant's presence, scored by their last heartbeat (ms).
pub(crate) fn presence_nodes(tenant: &str) -> String {
    format!("notify:presence:{{{tenant}}}:nodes")
}

/// Every presence and occupancy transition of a tenant (online, offline, occupied, vacated),
/// written by the script that decides it, for webhooks.
pub(crate) fn presence_transitions(tenant: &str) -> String {
    format!("notify:presence:{{{tenant}}}:transitions")
}

/// One node's subscription counts per channel of a tenant.
pub(crate) fn occupancy_node(tenant: &str, node: &str) -> String {
    format!("notify:occupancy:{{{tenant}}}:node:{node}")
}

/// The channels of a tenant currently reported occupied.
pub(crate) fn occupancy_occupied(tenant: &str) -> String {
    format!("notify:occupancy:{{{tenant}}}:occupied")
}

/// A Pusher presence channel's connections per node and user (`NODE\nUSER` -> count).
pub(crate) fn members_conns(tenant: &str, channel: &str) -> String {
    format!("notify:members:{{{tenant}}}:conns:{channel}")
}

/// A Pusher presence channel's members' `user_info` (user -> JSON).
pub(crate) fn members_info(tenant: &str, channel: &str) -> String {
    format!("notify:members:{{{tenant}}}:info:{channel}")
}

/// The presence channels one node has members of, for sweeping them when it dies.
pub(crate) fn members_where(tenant: &str, node: &str) -> String {
    format!("notify:members:{{{tenant}}}:where:{node}")
}

/// The nodes holding a tenant's presence channel members, scored by their last heartbeat (ms).
pub(crate) fn members_nodes(tenant: &str) -> String {
    format!("notify:members:{{{tenant}}}:nodes")
}

/// A tenant's webhook dead letters, oldest first (`<id>\n<json>` entries).
pub(crate) fn webhook_dead_letters(tenant: &str) -> String {
    format!("notify:webhooks:{{{tenant}}}:dead")
}

/// The consumer group through which the nodes hand presence and occupancy transitions to
/// webhooks.
pub(crate) const TRANSITIONS_GROUP: &str = "notify-webhooks";

/// The control-plane state's version (a counter), in the slot of `{notify:control}`.
pub(crate) fn control_version() -> String {
    "{notify:control}:version".to_owned()
}

/// The control-plane state (JSON), beside its version.
pub(crate) fn control_state() -> String {
    "{notify:control}:state".to_owned()
}

/// The plugin bytes the control-plane state names, by sha256 (a hash), beside the state.
pub(crate) fn control_plugins() -> String {
    "{notify:control}:plugins".to_owned()
}

/// Where commands to every node go (JSON: disconnect a user).
pub(crate) const COMMANDS_CHANNEL: &str = "notify:commands";

/// Nodes' answers to one request (a list, expiring).
pub(crate) fn replies(request: &str) -> String {
    format!("notify:replies:{request}")
}

/// Token revocations: field `TENANT:USER`, value `{"before":…,"until":…}` (Unix seconds).
pub(crate) const REVOCATIONS: &str = "notify:revocations";

/// The live nodes, scored by the time of their last report (ms).
pub(crate) const NODES: &str = "notify:nodes";

/// What one node reported it runs, by tenant (a hash, expiring unless renewed).
pub(crate) fn node_report(node: &str) -> String {
    format!("notify:node:{node}:plugins")
}

/// Where every change of the control-plane state is announced (its new version).
pub(crate) const CONTROL_CHANNEL: &str = "notify:control:changes";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_channels_round_trip() {
        for target in [Target::User("a:b"), Target::Channel("news.eu"), Target::Broadcast] {
            let name = stream_channel("t-1", target);
            let (tenant, back) = parse_stream_channel(&name).unwrap();
            assert_eq!(tenant, "t-1");
            assert_eq!(format!("{back:?}"), format!("{target:?}"));
        }
        assert!(parse_stream_channel("notify:t:x:y").is_none());
        assert!(parse_stream_channel("other:t:b").is_none());
        assert_eq!(parse_publish_channel(&publish_channel("acme")), Some("acme"));
        assert_eq!(parse_publish_channel("notify:acme:ingest"), None);
    }

    #[test]
    fn slots_are_computed_as_redis_computes_them() {
        // Values from `CLUSTER KEYSLOT`.
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("{user1000}.following"), slot("user1000"));
        assert_eq!(slot("foo{bar}{zap}"), slot("bar"));
        assert_eq!(slot("foo{{bar}}zap"), slot("{bar"));
        // An empty tag does not count: the whole key is hashed.
        assert_ne!(slot("foo{}{bar}"), slot("bar"));
        let tags = slot_tags();
        assert!(tags.iter().enumerate().all(|(s, &n)| usize::from(slot(&format!("{n:x}"))) == s));
    }

    #[test]
    fn keys_a_script_touches_share_a_hash_tag() {
        let channel = stream_channel("acme", Target::User("alice"));
        assert_eq!(history(&channel), ["{notify:acme:u:alice}:pos", "{notify:acme:u:alice}:events"]);
        let pos = &history(&channel)[0];
        let store = slot_store(pos);
        assert_eq!(slot(&store), slot(pos), "{store}");
        assert!(store.starts_with("notify:store:{"));
        let tag = "{acme}";
        for key in [
            presence_node("acme", "n1"),
            presence_online("acme"),
            presence_nodes("acme"),
            occupancy_node("acme", "n1"),
            occupancy_occupied("acme"),
            presence_transitions("acme"),
        ] {
            assert!(key.contains(tag), "{key}");
        }
        assert_eq!(
            [ingest_stream("acme"), dead_letter_stream("acme"), presence_stream("acme")],
            ["notify:acme:ingest", "notify:acme:dead", "notify:acme:presence"]
        );
        let devices = devices("acme", "alice");
        for key in devices.iter().chain(&push_state("acme", "alice")) {
            assert_eq!(slot(key), slot(&devices[0]), "{key}");
            assert!(key.starts_with("{notify:acme:devices}:"), "{key}: matched by {}", devices_pattern("acme"));
        }
        assert_eq!(slot(ESCALATIONS[0]), slot(ESCALATIONS[1]));
    }
}
